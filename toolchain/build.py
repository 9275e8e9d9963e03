"""`edgec build`: the whole pipeline for a device, one verified bundle per budget.

    teacher (cached) -> [calibrate] -> search -> per budget: distill -> quantize -> export ->
    bundle (+ latency: measured here, measured by the device's agent, or predicted) -> baseline
    (the teacher through optimum + ONNX Runtime INT8, cached with the teacher) -> report

KDLSQ trains the quantized student against its own float model (the distilled student): layer
for layer the same shape, so every hidden state and attention map has its exact counterpart. With
the fine-tuned teacher as KDLSQ's teacher instead, a 3-layer subnet's W8A8 model lost 1.7 points
of SST-2 dev accuracy to its float model in 100 steps; against itself it lost none.

Every step is a stage of the run directory (``OUT/<stage>/`` with its ``stage.json``): a re-run
skips what is done and resumes the first stage that is not, and a training stage resumes from its
own checkpoints, so Ctrl-C or a kill loses at most the work since the last checkpoint. A budget
whose stages fail (e.g. no subnet fits it) is reported with the closest achievable figure while
the other budgets still build.

Presets size the work: ``quick`` (the default; data subsets and step counts for a first run on
2 CPU cores) and ``full`` (paper-scale settings, meant for a GPU). A preset only fills what the
recipe file does not set; command-line options win over both.

Example::

    summary = build(recipe, Path("runs/sst2-orin"), preset="quick")
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from toolchain.config import BudgetSpec, Recipe
from toolchain.errors import ConfigError, EdgecError
from toolchain.pipeline import RunDir, Stage

log = logging.getLogger(__name__)

# Why the quick preset's numbers (SST-2, MiniLM-L6, 2 CPU cores; see benchmarks/results/build.md):
# - the supernet trains briefly, and its inherited-weight scores under-rate small subnets: a
#   3-layer subnet scored 4.5 points under the largest and, distilled 1,000 steps, finished 0.6
#   points under the teacher; so a subnet within 6 points (inherited) of the best counts as good,
#   and the final distillation gets the steps (1,000 steps: 0.829; 200 steps: 0.795);
# - KDLSQ against the float student (see the module docstring) needs few steps at W8A8;
# - W8A8: the device's format (INT8 Q/DQ) stores narrower weights in INT8 anyway, so 4-bit codes
#   would cost accuracy and save neither bytes nor time there.
PRESETS: dict[str, dict] = {
    "quick": {
        "teacher_finetune.max_train_samples": 8000,
        "teacher_finetune.epochs": 1.0,
        "teacher_finetune.max_seq_len": 64,
        "teacher_finetune.eval_every": 100,
        "search.supernet_steps": 100,
        "search.sandwich": 3,
        "search.learning_rate": 2e-4,
        "search.max_seq_len": 64,
        "search.population": 12,
        "search.generations": 3,
        "search.eval_samples": 256,
        "search.measure_top_k": 2,
        "search.accuracy_tolerance": 0.06,
        "distill.steps": 800,
        "distill.learning_rate": 2e-4,
        "distill.max_seq_len": 64,
        "distill.eval_every": 250,
        "distill.eval_samples": 500,
        "quantize.weight_bits": 8,
        "quantize.steps": 50,
        "quantize.max_seq_len": 64,
        "quantize.eval_every": 50,
        "quantize.eval_samples": 500,
        "export.parity_samples": 128,
    },
    "full": {
        "teacher_finetune.epochs": 3.0,
        "search.supernet_steps": 20000,
        "search.population": 64,
        "search.generations": 20,
        "search.eval_samples": 2000,
        "search.measure_top_k": 5,
        "distill.steps": 20000,
        "quantize.weight_bits": 8,
        "quantize.steps": 5000,
    },
}


def preset_overrides(preset: str, recipe_file: str | None) -> dict:
    """The preset's settings for the keys the recipe file does not set itself."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    given: set[str] = set()
    if recipe_file:
        import yaml

        def walk(node, prefix=""):
            for k, v in (node or {}).items():
                key = f"{prefix}{k}"
                given.add(key)
                if isinstance(v, dict):
                    walk(v, key + ".")

        try:
            walk(yaml.safe_load(Path(recipe_file).read_text()) or {})
        except (OSError, yaml.YAMLError, AttributeError):
            pass  # load_recipe reports the file's problem with its line and key
    return {k: v for k, v in PRESETS[preset].items() if k not in given}


def precision_of(recipe: Recipe) -> str:
    """The precision the search predicts latency at: that of the model the device runs. With
    8-bit activations that is INT8 whatever the weight width (the export is INT8 Q/DQ: 2-4-bit
    codes stored in INT8, INT8 GEMMs); weight-only quantization runs at its weight width."""
    q = recipe.quantize
    if q.method == "none":
        return "fp32"
    if q.act_bits == 8:
        return "int8"
    return {2: "int2", 3: "int4", 4: "int4"}.get(q.weight_bits, "int8")


def export_format(recipe: Recipe, host: bool) -> str:
    """``auto`` (every candidate timed here) on this host; for another device, where nothing
    can be timed, the format its accelerator takes: explicit INT8 Q/DQ with the learned scales
    (TensorRT's input) for 8-bit activations, MatMulNBits for weight-only quantization, else
    fp32."""
    fmt = recipe.export.format
    if fmt != "auto" or host:
        return fmt
    q = recipe.quantize
    if q.method == "none":
        return "fp32"
    return "int8-qdq" if q.act_bits == 8 else "nbits"


class Build:
    """One build: the run directory, the resolved recipe and the stages it runs."""

    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        *,
        spec,
        agent: dict | None = None,
        predictors_dir: str | None = None,
        torch_device: str | None = None,
        force: tuple[str, ...] = (),
        teacher_cache: str | Path | None = None,
    ):
        from toolchain.profile.devices import resolve_device

        self.recipe, self.out, self.spec = recipe, Path(out), spec
        self.profile = resolve_device(recipe.device).profile
        self.host = self.profile.name == resolve_device("host").profile.name
        self.budgets: list[BudgetSpec] = list(recipe.budgets)
        self.agent, self.torch_device, self.force = agent, torch_device, set(force)
        self.predictors_dir = predictors_dir
        self.data_dir = recipe.data_dir
        self.stage_s: dict[str, float] = {}
        self.teacher_cache = teacher_cache
        self.teacher_metrics: dict = {}
        self.teacher_dir = ""
        self._subnets: dict[str, str] = {}
        self.run = RunDir(self.out)

    # -- running stages -----------------------------------------------------------------------
    def _run(self, stage: Stage, run: RunDir | None = None, label: str | None = None) -> dict:
        t0 = time.perf_counter()
        force = [stage.name] if stage.name in self.force else []
        (res,) = (run or self.run).run([stage], seed=self.recipe.seed, force=force)
        took = time.perf_counter() - t0
        label = label or stage.name
        cached = res.status == "skipped"  # the time this build spent: ~0 for a cached stage
        if not (cached and label in self.stage_s):  # a stage shared by budgets: its first visit
            self.stage_s[label] = round(took if cached else res.record.get("wall_s", took), 1)
        state = "cached" if cached else f"done in {took:.0f} s"
        print(f"edgec build: {label}: {state}", flush=True)
        return res.record["metrics"] or {}

    def stage_dir(self, name: str) -> Path:
        return self.run.stage_dir(name)

    def execute(self) -> dict:
        from toolchain.distill.stage import distill_stage
        from toolchain.models.teacher import teacher_stage
        from toolchain.nas.stage import search_stage

        r = self.recipe
        started = time.perf_counter()
        print(
            f"edgec build: {self.spec.name} for {self.profile.name}, budgets "
            f"{', '.join(b.name for b in self.budgets)} -> {self.out}",
            flush=True,
        )
        teacher_dir = self._teacher(teacher_stage)
        predictors = self._predictors()
        search = self._run(
            search_stage(
                teacher_dir=teacher_dir,
                spec=self.spec,
                data_dir=self.data_dir,
                device=self.profile.name,
                budgets=tuple(self.budgets),
                cfg=replace(r.search, precision=precision_of(r)),
                data_cfg=r.data,
                predictors_dir=predictors,
                torch_device=self.torch_device,
                target=self.agent["url"] if self.agent else None,
                token_file=self.agent["token_file"] if self.agent else None,
                # trained supernets are kept beside the cached teachers: a later build that would
                # train the same one (same teacher, data, settings, device predictions) loads it
                supernet_cache=self.teacher_cache and Path(self.teacher_cache) / "supernets",
            )
        )
        bundles = []
        for budget in self.budgets:
            found = search["budgets"][budget.name]
            if "error" in found:
                bundles.append(self._unmet(budget, found))
                continue
            try:
                bundles.append(self._budget(budget, found, teacher_dir, distill_stage))
            except EdgecError as e:  # this budget fails; the others still build
                log.error("budget %s failed: %s", budget.name, e)
                bundles.append({"budget": budget.name, "built": False, "error": str(e)})
        baseline = self._baseline(teacher_dir)
        summary = {
            "task": self.spec.name,
            "device": self.profile.name,
            "teacher": {
                "source": r.teacher,
                "dir": teacher_dir,
                "dev": self.teacher_metrics.get("dev") or {},
            },
            "baseline_ort_int8_teacher": baseline,
            "search": {
                "space": search.get("space"),
                "supernet_steps": search.get("supernet", {}).get("steps"),
                "supernet_from_cache": search.get("supernet", {}).get("cached"),
            },
            "bundles": bundles,
            "stage_s": self.stage_s,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        _write_json(self.out / "build.json", summary)
        from toolchain.report import write_report

        write_report(self.out)
        return summary

    def _metrics(self, name: str) -> dict:
        rec = self.run.record(name)
        return (rec or {}).get("metrics") or {}

    # -- the parts ------------------------------------------------------------------------------
    def _teacher(self, teacher_stage) -> str:
        """Fine-tune the teacher, or find it done: in the shared teacher cache when there is one
        (a build for another device or budget reuses it), else in the run directory."""
        import hashlib

        from toolchain.pipeline import _jsonable

        r = self.recipe
        stage = teacher_stage(
            model=r.teacher,
            spec=self.spec,
            data_dir=self.data_dir,
            cfg=r.teacher_finetune,
            data_cfg=r.data,
            device=self.torch_device,
        )
        if self.teacher_cache is None:
            self.teacher_metrics = self._run(stage)
            self.teacher_dir = str(self.stage_dir("teacher"))
            return self.teacher_dir
        ident = json.dumps(_jsonable([stage.config, r.seed]), sort_keys=True, default=str)
        name = f"{self.spec.name}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
        cache = RunDir(self.teacher_cache)
        if "teacher" in self.force:
            self.force.add(name)
        self.teacher_metrics = self._run(replace(stage, name=name), run=cache, label="teacher")
        self.teacher_dir = str(cache.stage_dir(name))
        self._cached_teacher = (cache, name)
        return self.teacher_dir

    def _predictors(self) -> str | None:
        """The predictors folder: the user's (a fitted predictor of the device stored there), else
        for this host a calibration stage of the build, else None (the roofline)."""
        from toolchain.profile.predict import predictor_for

        if (
            self.predictors_dir
            and (Path(self.predictors_dir) / f"{self.profile.name}.json").is_file()
        ):
            return self.predictors_dir
        if not self.host:
            return self.predictors_dir  # the device's roofline, labelled so
        try:
            predictor_for(self.profile, None)
            return None
        except ValueError:
            pass

        def calibrate(ctx) -> dict:
            from toolchain.profile.calibrate import design, measure_shapes
            from toolchain.profile.predict import FittedPredictor

            rows = measure_shapes(design(24, seed=0), workdir=ctx.checkpoint_dir, rounds=2)
            fitted = FittedPredictor.fit(rows, device=self.profile.name, runtime="onnxruntime")
            fitted.save(ctx.out_dir / f"{self.profile.name}.json")
            return {"shapes": len(rows)}

        self._run(Stage("calibrate", calibrate, config={"shapes": 24, "rounds": 2}))
        return str(self.stage_dir("calibrate"))

    def _budget(self, budget: BudgetSpec, found: dict, teacher_dir: str, distill_stage) -> dict:
        from toolchain.export.stage import export_stage
        from toolchain.quantize.stage import quantize_stage

        r = self.recipe
        key = _key(found["subnet"])  # budgets that chose the same subnet share its stages
        # the first budget's copy of the subnet: the same stage config, so the stages are shared
        subnet = self._subnets.setdefault(key, str(self.stage_dir("search") / found["model"]))
        self._run(
            distill_stage(
                teacher_dir=teacher_dir,
                spec=self.spec,
                data_dir=self.data_dir,
                cfg=r.distill,
                data_cfg=r.data,
                device=self.torch_device,
                name=f"distill-{key}",
                init_from=subnet,
            )
        )
        model = str(self.stage_dir(f"distill-{key}"))
        if r.quantize.method != "none":
            self._run(
                quantize_stage(  # KDLSQ's teacher: the float student of the same shape
                    model_dir=model,
                    teacher_dir=model,
                    spec=self.spec,
                    data_dir=self.data_dir,
                    cfg=r.quantize,
                    data_cfg=r.data,
                    device=self.torch_device,
                    name=f"quantize-{key}",
                )
            )
            model = str(self.stage_dir(f"quantize-{key}"))
        fmt = export_format(r, self.host)
        export = self._run(
            export_stage(
                model_dir=model,
                fmt=fmt,
                spec=self.spec,
                data_dir=self.data_dir,
                cfg=r.export,
                name=f"export-{key}",
            )
        )
        bundled = self._run(self._bundle_stage(budget, found))
        return self._summary(budget, found, export, bundled)

    def _bundle_stage(self, budget: BudgetSpec, found: dict) -> Stage:
        """Bundle the export and give it its latency: measured here (this host), measured by the
        device's agent, or predicted for the device, each labelled so."""
        from toolchain.bundle.build import build_bundle, set_latency
        from toolchain.profile.predict import predictor_for

        b = budget.name
        name = f"{self.spec.name}-{self.profile.name}-{b}.edgec"
        export_dir = self.stage_dir(f"export-{_key(found['subnet'])}")
        in_profile = b in {x.name for x in self.profile.budgets}

        def run(ctx) -> dict:
            folder = ctx.out_dir / name
            manifest = build_bundle(
                export_dir,
                folder,
                device=self.profile.name,
                spec=self.spec,
                data_dir=self.data_dir,
                budget=b if in_profile else budget,
            )
            if self.agent:
                from toolchain.profile.agent import profile_remote

                proto = self.profile.protocol
                reply = profile_remote(
                    folder,
                    self.agent["url"],
                    token=self.agent["token"],
                    request={
                        "shapes": [[budget.batch, budget.seq_len]],
                        "runtime": "onnxruntime",
                        "warmup": proto.warmup,
                        "iterations": proto.iterations,
                        "repeats": proto.repeats,
                    },
                )
                res = reply["results"][0]
                manifest = set_latency(
                    folder,
                    {
                        **_pick(res),
                        "batch": budget.batch,
                        "seq_len": budget.seq_len,
                        "label": reply["label"],
                    },
                )
            elif not self.host:
                predict = predictor_for(
                    self.profile, self.predictors_dir, precision_of(self.recipe)
                )
                p = predict(_shape(found, budget))
                manifest = set_latency(
                    folder,
                    {
                        "status": "predicted",
                        "p50_ms": p["latency_ms"],
                        "peak_rss_mb": p.get("memory_mb"),
                        "label": f"predicted for {self.profile.name}, not measured: "
                        f"{p['latency_ms']:.2f} ms at batch {budget.batch}, sequence "
                        f"{budget.seq_len} ({p['label']})",
                    },
                )
            return {"manifest": manifest, "dev": self.dev_of(folder / "model.onnx")}

        return Stage(
            f"bundle-{b}",
            run,
            config={"device": self.profile.name, "budget": budget, "agent": bool(self.agent)},
            inputs=(export_dir,),
        )

    def _summary(self, budget: BudgetSpec, found: dict, export: dict, bundled: dict) -> dict:
        from toolchain.bundle.manifest import verify

        b = budget.name
        folder = self.stage_dir(f"bundle-{b}") / f"{self.spec.name}-{self.profile.name}-{b}.edgec"
        verify(folder)  # every file re-hashed before the build calls the bundle done
        lat = bundled["manifest"].get("latency") or {}
        dev = bundled.get("dev") or {}
        p_key = f"p{budget.percentile:g}_ms"
        latency = lat.get(p_key, lat.get("p90_ms", lat.get("p50_ms")))
        memory = lat.get("peak_rss_mb")
        met = None
        if latency is not None:
            met = latency <= budget.latency_ms and (memory is None or memory <= budget.memory_mb)
        return {
            "budget": b,
            "budget_ms": budget.latency_ms,
            "budget_percentile": budget.percentile,
            "budget_mb": budget.memory_mb,
            "built": True,
            "bundle": str(folder.relative_to(self.out)),
            "subnet": found["subnet"],
            "shape": found["shape"],
            "params": found.get("params"),
            "format": export.get("format"),
            "bits": _bits(self._metrics(f"quantize-{_key(found['subnet'])}")),
            "bytes": (folder / "model.onnx").stat().st_size,
            "dev_accuracy": dev.get(self.spec.main_metric),
            "label_loyalty": dev.get("label_loyalty"),
            "prob_loyalty": dev.get("prob_loyalty"),
            "p50_ms": lat.get("p50_ms"),
            "p90_ms": lat.get("p90_ms"),
            "latency_ms": latency,
            "peak_memory_mb": memory,
            "latency_label": lat.get("label"),
            "measured": lat.get("status") != "predicted" and latency is not None,
            "met": met,
        }

    def dev_of(self, onnx: Path) -> dict:
        """The shipped ONNX model on the dev split: the task metric, and its label and
        probability loyalty to the teacher. Budgets that share a subnet ship the same file: it
        is scored once (keyed by its bytes)."""
        if "dev" not in self.spec.files:
            return {}
        from toolchain.pipeline import hash_path

        digest = hash_path(Path(onnx))
        cache = self.__dict__.setdefault("_dev_scores", {})
        if digest not in cache:
            cache[digest] = self._score_dev(onnx)
        return dict(cache[digest])

    def _score_dev(self, onnx: Path) -> dict:
        from toolchain.data.readers import load_split
        from toolchain.evaluate.evaluate import _first_token_logits, pad_id_of, predict, score
        from toolchain.evaluate.loyalty import loyalty
        from toolchain.models.finetune import head_for
        from toolchain.models.loading import load_model
        from toolchain.quantize.ort_baseline import ort_logits

        if not hasattr(self, "_teacher_dev"):
            from toolchain.data.encode import encode

            teacher = load_model(self.teacher_dir, head=head_for(self.spec))
            dev = load_split(self.spec, "dev", self.data_dir)
            encoded = encode(self.spec, dev, teacher.tokenizer, 128)
            pad = pad_id_of(teacher.tokenizer)
            pred = predict(teacher.model, self.spec, encoded, pad_id=pad, desc="teacher dev")
            self._teacher_dev = (
                dev,
                encoded,
                pad,
                _first_token_logits(self.spec, encoded, pred["logits"]),
            )
        dev, encoded, pad, teacher_logits = self._teacher_dev
        logits = ort_logits(onnx, encoded, pad_id=pad)
        out = score(self.spec, dev, encoded, {"logits": logits})
        if self.spec.kind == "classification":
            out.update(loyalty(teacher_logits, _first_token_logits(self.spec, encoded, logits)))
        return {**out, "n": len(dev)}

    def _unmet(self, budget: BudgetSpec, found: dict) -> dict:
        closest = found.get("closest") or {}
        return {
            "budget": budget.name,
            "budget_ms": budget.latency_ms,
            "budget_mb": budget.memory_mb,
            "built": False,
            "met": False,
            "error": found["error"],
            "closest": closest,
        }

    def _baseline(self, teacher_dir: str) -> dict:
        """The teacher as a user of optimum would ship it: optimum's ONNX export, then ONNX
        Runtime's dynamic INT8; dev accuracy, and p50/p90 measured on this host (labelled so:
        for another device it is compared only with bundles measured here too)."""

        def run(ctx) -> dict:
            from toolchain.export.lowbit import to_dynamic_int8

            folder = ctx.out_dir
            _optimum_export(teacher_dir, folder / "optimum")
            to_dynamic_int8(folder / "optimum" / "model.onnx", folder / "model.onnx")
            for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
                if (folder / "optimum" / name).is_file():
                    (folder / name).write_bytes((folder / "optimum" / name).read_bytes())
            from toolchain.profile.devices import resolve_device

            host = resolve_device("host").profile
            lat = _onnx_latency(folder / "model.onnx", host.protocol)
            return {
                "dev": self.dev_of(folder / "model.onnx"),
                "latency": lat,
                "label": f"measured on {host.name} (this host)",
                "bytes": (folder / "model.onnx").stat().st_size,
            }

        # it depends on the teacher alone: kept beside a cached teacher, so a build reuses it
        cache, name = getattr(self, "_cached_teacher", (None, "baseline"))
        if cache is not None:
            name = f"{name}-ort-int8"
            if "baseline" in self.force:
                self.force.add(name)
        try:
            res = self._run(
                Stage(
                    name,
                    run,
                    config={"what": "optimum + ORT int8", "dev": self.spec.files.get("dev")},
                    inputs=(Path(teacher_dir),),
                ),
                run=cache,
                label="baseline",
            )
            return {**res, "dir": str((cache or self.run).stage_dir(name))}
        except EdgecError as e:
            log.error("baseline failed: %s", e)
            return {"error": str(e)}


def _optimum_export(model_dir: str, out: Path) -> None:
    import logging as _logging

    from optimum.exporters.onnx import main_export

    _logging.getLogger("optimum").setLevel(_logging.ERROR)
    main_export(str(model_dir), output=str(out), task="text-classification", opset=17)


def _onnx_latency(onnx: Path, protocol) -> dict:
    """p50/p90/p99 and peak RSS of an ONNX file at the protocol's shape, in a fresh process."""
    from toolchain.profile.local import run_worker

    reply = run_worker(
        {
            "target": str(onnx),
            "runtime": "onnxruntime",
            "shapes": [[protocol.batch, protocol.seq_len]],
            "threads": protocol.threads,
            "warmup": protocol.warmup,
            "iterations": protocol.iterations,
            "repeats": protocol.repeats,
        }
    )
    return _pick(reply["results"][0])


def _key(subnet: str) -> str:
    """A stage-name form of a subnet: ``L[1,3,5]:H384:A12:F1536`` -> ``L1.3.5-H384-A12-F1536``."""
    import re

    layers, rest = re.fullmatch(r"L\[([\d,]+)\]:(.*)", subnet).groups()
    return "L" + layers.replace(",", ".") + "-" + rest.replace(":", "-")


def _pick(res: dict) -> dict:
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_rss_mb")
    return {"status": "measured", **{k: res[k] for k in keys if k in res}}


def _shape(found: dict, budget: BudgetSpec):
    from toolchain.models.adapters import Shape as ModelShape
    from toolchain.profile.predict import Shape

    m = ModelShape.parse(found["shape"])
    return Shape(m.layers, m.hidden, m.heads, m.ffn, seq=budget.seq_len, batch=budget.batch)


def _bits(quant: dict) -> str:
    if not quant:
        return "fp32"
    a, w = quant.get("a_bits"), quant.get("w_bits")
    if w is None:  # mixed precision
        widths = sorted(set((quant.get("widths") or {}).values()))
        w = "/".join(str(x) for x in widths) or "mixed"
    return f"W{w}A{a if a else 'float'}"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
