"""The search stage: the trained supernet (:mod:`toolchain.nas.trained`), one subnet per device
budget (:mod:`toolchain.nas.budget`), the chosen subnets written as plain models, and the Pareto
output. How latency is predicted and measured comes from the device target it is given (any
object with ``profile``, ``shape_of``, ``latency_for``, ``predictor``, ``measure_candidates`` and
``candidate_note``, i.e. a :class:`toolchain.target.DeviceTarget`), so this package imports
nothing above itself.

Output folder::

    supernet/            the trained supernet (Hugging Face directory + supernet.json)
    subnets/<key>/       every budget's finalists (pooled), plain models with the tokenizer
    subnets/<budget>     a link to the budget's most accurate subnet (inherited weights)
    search.json          per budget: the provisional subnet (the most accurate with inherited
                         weights), the finalists that fit it with predicted and measured
                         latency/memory, the candidates; supernet training, pruning, timings
    pareto.json / .png   accuracy vs predicted latency over every scored subnet

Example::

    target = DeviceTarget.resolve("host", predictors_dir=default_predictors_dir())
    stage = search_stage(teacher_dir="runs/teacher", spec=get_task("sst2"), data_dir=data,
                         target=target, budgets=(), cfg=SearchConfig(supernet_steps=1000))
    run_single(stage, Path("runs/search"))
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from toolchain import distributed as dist
from toolchain.config import BudgetSpec, DataConfig, SearchConfig
from toolchain.data.clean import clean
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.devices.budgets import resolve_budgets
from toolchain.errors import ConfigError
from toolchain.models.teacher import teacher_inputs
from toolchain.nas.budget import Searched, fits, search_budget
from toolchain.nas.results import BudgetChoice, BudgetUnmet, SearchResult, subnet_key
from toolchain.nas.search import pareto_front, plot_pareto
from toolchain.nas.space import Arch
from toolchain.nas.trained import TrainedSupernet, cache_folder, prepare_supernet
from toolchain.pipeline import Stage, StageContext


def search_stage(
    *,
    teacher_dir: str,
    spec: TaskSpec,
    data_dir,
    target,
    budgets=(),
    cfg: SearchConfig,
    data_cfg: DataConfig | None = None,
    torch_device: str | None = None,
    name: str = "search",
    supernet_cache: str | Path | None = None,
    agnostic_dir: str | Path | None = None,
) -> Stage:
    """A pipeline :class:`~toolchain.pipeline.Stage` running the whole search for ``target``.

    ``supernet_cache``: a folder where trained supernets are kept (see
    :mod:`toolchain.nas.trained`), so a later search that would train the same supernet, for any
    device, loads it instead (``edgec build`` keeps them beside the cached teachers).
    ``agnostic_dir``: a task-agnostic supernet (:mod:`toolchain.nas.agnostic`, needed when
    ``cfg.supernet`` is ``"agnostic"``): the search adapts it to the task instead of training a
    supernet from the task teacher."""
    if (cfg.supernet == "agnostic") != (agnostic_dir is not None):
        raise ConfigError(
            "search.supernet: agnostic needs the task-agnostic supernet's folder (and only it "
            "takes one): `edgec build --supernet agnostic` trains or finds it",
            key="search.supernet",
        )
    chosen = list(resolve_budgets(target.profile, budgets))
    data_cfg = data_cfg or DataConfig()
    cfg = cfg.for_route()
    config = {
        "teacher": teacher_dir,
        "task": spec.name,
        "task_spec": spec,
        "device": target.profile.name,
        "budgets": chosen,
        "search": cfg,
        "data": data_cfg,
        **({"agnostic_supernet": str(agnostic_dir)} if agnostic_dir is not None else {}),
        "measured_by": target.agent.url if target.agent else "this host where it is the device",
    }
    teacher_files = teacher_inputs(teacher_dir, spec, data_dir)
    if agnostic_dir is not None:
        teacher_files = (*teacher_files, Path(agnostic_dir))
    inputs = teacher_files
    if target.has_fitted_predictor():
        inputs = (*inputs, target.predictors_dir / f"{target.profile.name}.json")

    def run(ctx: StageContext) -> dict:
        cache = cache_folder(
            supernet_cache,
            inputs=teacher_files,
            spec=spec,
            data_cfg=data_cfg,
            cfg=cfg,
            seed=ctx.seed,
        )
        result = run_search(
            ctx, teacher_dir=teacher_dir, spec=spec, data_dir=data_dir, target=target,
            budgets=chosen, cfg=cfg, data_cfg=data_cfg, torch_device=torch_device,
            supernet_cache=cache, agnostic=agnostic_dir and Path(agnostic_dir),
        )  # fmt: skip
        return result.to_metrics() if result is not None else None

    return Stage(name, run, config=config, inputs=inputs, distributed=True)


def run_search(
    ctx: StageContext,
    *,
    teacher_dir,
    spec: TaskSpec,
    data_dir,
    target,
    budgets: list[BudgetSpec],
    cfg: SearchConfig,
    data_cfg: DataConfig,
    torch_device,
    supernet_cache: Path | None = None,
    agnostic: Path | None = None,
) -> SearchResult | None:
    """Train (or load) the supernet, search every budget, write the subnets and the Pareto
    output into ``ctx.out_dir``. Under torchrun every rank trains the supernet and rank 0 alone
    searches (None on the other ranks)."""
    from toolchain.models.finetune import head_for, pick_device
    from toolchain.models.loading import load_model

    started = time.perf_counter()
    device = pick_device(torch_device)
    teacher = load_model(teacher_dir, head=head_for(spec))
    _check_positions(teacher, budgets)
    target.predictor(cfg.precision)  # no predictor for the device: say so before training
    train, val = _search_data(spec, data_dir, data_cfg, cfg, ctx.seed)
    net = prepare_supernet(
        teacher, spec, train, val, cfg, seed=ctx.seed, device=device,
        checkpoint=ctx.checkpoint_dir / "supernet.pt", cache_dir=supernet_cache,
        agnostic=agnostic,
    )  # fmt: skip
    if not dist.is_main():  # the training is shared; rank 0 alone searches and measures
        return None
    net.supernet.save(ctx.out_dir / "supernet", extra={"steps": net.trained["steps"]})
    vocab = teacher.vocab_size

    def predict(arch: Arch, budget: BudgetSpec) -> dict:
        return target.latency_for(target.shape_of(arch, budget, vocab), cfg.precision)

    measure = _measurer(net, spec, target, cfg)
    found = {b.name: _one_budget(ctx, net, target, b, cfg, predict, measure) for b in budgets}
    per_budget = _with_finalists(ctx.out_dir, net, teacher, budgets, found, predict, measure, cfg)
    png = _write_pareto(ctx.out_dir, net, per_budget, predict, budgets, spec, target, len(val))
    result = SearchResult(
        task=spec.name,
        device=target.profile.name,
        teacher=str(teacher_dir),
        space=net.supernet.space.describe(),
        space_size=net.supernet.space.size(),
        supernet={**net.trained, "train_s": net.train_s},
        pruning=net.pruning,
        budgets=per_budget,
        pareto_png=png,
        wall_s=round(time.perf_counter() - started, 1),
        vocab=vocab,
    )
    (ctx.out_dir / "search.json").write_text(json.dumps(result.to_metrics(), indent=2) + "\n")
    return result


def _check_positions(teacher, budgets) -> None:
    positions = getattr(teacher.config, "max_position_embeddings", None)
    for b in budgets:
        if positions and b.seq_len > positions:
            raise ConfigError(
                f"budget {b.name!r} is measured at sequence length {b.seq_len}, beyond the "
                f"teacher's {positions} positions: give a budget with seq_len <= {positions}"
            )


def _search_data(spec, data_dir, data_cfg, cfg, seed) -> tuple[list, list]:
    """The cleaned training split, and the validation subset that scores subnets."""
    train, _ = clean(load_split(spec, "train", data_dir), data_cfg)
    validation = load_split(spec, "validation", data_dir)
    val = random.Random(seed).sample(validation, min(cfg.eval_samples, len(validation)))
    return train, val


def _measurer(net: TrainedSupernet, spec, target, cfg):
    """``measure(archs, budget)``: the device's figures of each subnet at the budget's batch and
    sequence (None where the device cannot be measured), each shape measured once and its
    verdict given for the budget asking. The subnets not measured yet go to the target together
    (a pool of agents measures them at once); each is extracted when its turn comes."""
    supernet, seen = net.supernet, {}

    def extract(arch: Arch):
        student = supernet.extract(arch)
        student.tokenizer = supernet.adapter.tokenizer
        return student

    def measure(archs: list[Arch], b: BudgetSpec) -> list[dict | None]:
        keys = [(str(a), b.batch, b.seq_len) for a in archs]
        todo = {k: a for k, a in zip(keys, archs, strict=True) if k not in seen}
        if todo:
            figures = target.measure_candidates(list(todo.values()), extract, spec, b,
                                                cfg.precision)  # fmt: skip
            seen.update(zip(todo, figures, strict=True))
        # the verdict for the budget asking
        return [
            None if seen[k] is None else {**seen[k], "verdict": _verdict(seen[k], b)} for k in keys
        ]

    return measure


def _verdict(figures: dict, b: BudgetSpec) -> str:
    return "met" if fits(None, figures, b) else "missed"


def _one_budget(ctx, net: TrainedSupernet, target, budget, cfg, predict, measure):
    """Search one budget: its shortlist (:class:`Searched`), or :class:`BudgetUnmet`."""
    return search_budget(
        net.supernet.space, net.scorer, predict, measure, budget, cfg, seed=ctx.seed,
        state_path=ctx.checkpoint_dir / f"evolve-{budget.name}.json",
        note=lambda n: target.candidate_note(n, cfg.precision),
    )  # fmt: skip


def _with_finalists(out: Path, net, teacher, budgets, found, predict, measure, cfg) -> dict:
    """Every budget's result with its finalists: the shortlists of all budgets pooled, each
    pooled subnet judged against each budget (measured figures where the shortlist measured
    it, else the prediction) and kept where it fits; each pooled subnet written once as a
    plain model under ``subnets/<key>``."""
    shortlisted: dict[str, dict] = {}  # arch -> its inherited score and figures per shape
    for b in budgets:
        result = found[b.name]
        if isinstance(result, BudgetUnmet):
            continue
        for c in result.candidates:
            if fits(c["predicted"], c.get("measured"), b):
                entry = shortlisted.setdefault(c["arch"], {"accuracy": c["accuracy"], "m": {}})
                if c.get("measured"):
                    entry["m"][(b.batch, b.seq_len)] = c["measured"]
    models: dict[str, tuple[str, int]] = {}
    for name in shortlisted:
        arch = Arch.parse(name)
        student = net.supernet.extract(arch)
        student.tokenizer = teacher.tokenizer
        folder = Path("subnets") / subnet_key(name)
        student.save(out / folder)
        models[name] = (str(folder), student.num_parameters())
    per_budget = {}
    for b in budgets:
        result = found[b.name]
        if isinstance(result, BudgetUnmet):
            per_budget[b.name] = result
            continue
        finalists, shape = [], (b.batch, b.seq_len)
        # the finalists not measured at this shape yet, measured together (a pool: at once)
        missing = [n for n, e in shortlisted.items() if e["m"].get(shape) is None]
        missing = missing if cfg.measure_top_k else []
        fresh = dict(zip(missing, measure([Arch.parse(n) for n in missing], b), strict=True))
        for name, entry in shortlisted.items():
            arch = Arch.parse(name)
            predicted = predict(arch, b)
            measured = entry["m"].get(shape) or fresh.get(name)
            if fits(predicted, measured, b):
                finalists.append({
                    "arch": name, "shape": str(arch.shape), "params": models[name][1],
                    "accuracy_inherited": entry["accuracy"], "predicted": predicted,
                    "measured": measured, "model": models[name][0],
                })  # fmt: skip
        finalists.sort(key=lambda f: -f["accuracy_inherited"])
        per_budget[b.name] = _choice(result, b, models, finalists)
        if per_budget[b.name].model:  # subnets/<budget>: the budget's most accurate subnet
            (out / "subnets" / b.name).symlink_to(Path(per_budget[b.name].model).name)
    return per_budget


def _choice(found: Searched, budget: BudgetSpec, models: dict, finalists: list) -> BudgetChoice:
    best = found.best
    # every shortlisted subnet fits somewhere; one measured over every budget has no model
    folder, params = models.get(best["arch"], ("", 0))
    return BudgetChoice(
        budget={
            "latency_ms": budget.latency_ms,
            "percentile": budget.percentile,
            "memory_mb": budget.memory_mb,
            "batch": budget.batch,
            "seq_len": budget.seq_len,
        },
        subnet=best["arch"],
        shape=str(found.arch.shape),
        params=params,
        accuracy_inherited=best["accuracy"],
        predicted=best["predicted"],
        measured=best.get("measured"),
        measured_note=found.measured_note,
        candidates=found.candidates,
        best_accuracy_inherited=found.ranked[0][1],
        within_tolerance=found.near,
        descent=found.descent,
        scored=len(found.ranked) + found.descent["evaluated"],
        search_s=found.search_s,
        model=folder,
        finalists=finalists,
    )


def _write_pareto(out: Path, net, per_budget, predict, budgets, spec, target, n_val) -> bool:
    """pareto.json and pareto.png: every scored subnet, accuracy vs predicted latency at the
    first budget's shape, the chosen subnets marked."""
    primary = budgets[0]
    points = [
        {**a.as_dict(), "accuracy": acc, "latency_ms": predict(a, primary)["latency_ms"]}
        for a, acc in net.scorer.cache.items()
    ]
    front = pareto_front(points)
    chosen = [
        {
            "latency_ms": predict(Arch.parse(r.subnet), primary)["latency_ms"],
            "accuracy": r.accuracy_inherited,
            "label": f"{name}: {r.subnet} (most accurate; the build chooses after distilling)",
        }
        for name, r in per_budget.items()
        if r.met
    ]
    axes = {
        "x": f"predicted latency (ms) at batch {primary.batch} x seq {primary.seq_len} "
        f"on {target.profile.name}",
        "y": f"{spec.main_metric} with inherited weights on {n_val} validation examples",
    }
    payload = {**axes, "front": front, "points": points}
    (out / "pareto.json").write_text(json.dumps(payload, indent=2) + "\n")
    return plot_pareto(
        points,
        front,
        out / "pareto.png",
        chosen=chosen,
        budgets=[(b.name, b.latency_ms) for b in budgets if b.seq_len == primary.seq_len],
        title=f"{spec.name} on {target.profile.name}: {len(points)} subnets scored",
        xlabel=axes["x"],
        ylabel=axes["y"],
    )


__all__ = ["run_search", "search_stage"]
