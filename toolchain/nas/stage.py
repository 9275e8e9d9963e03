"""The search stage: build the supernet from the teacher, train it by distillation (pruning
dominated choices after the first round), search one subnet per device budget, measure the best
candidates for real where the device is this host, and write the chosen subnets as plain models.

Output folder::

    supernet/            the trained supernet (Hugging Face directory + supernet.json)
    subnets/<budget>/    the chosen subnet of each budget, a plain model with the tokenizer
    search.json          per budget: subnet, accuracy (inherited weights), predicted and measured
                         latency/memory, the candidates; supernet training, pruning, timings
    pareto.json / .png   accuracy vs predicted latency over every scored subnet

Example::

    stage = search_stage(teacher_dir="runs/teacher", spec=get_task("sst2"), data_dir=data,
                         device="host", budgets=(), cfg=SearchConfig(supernet_steps=1000))
    run_single(stage, Path("runs/search"))
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from toolchain.config import BudgetSpec, DataConfig, SearchConfig
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.errors import ConfigError, EdgecError
from toolchain.pipeline import Stage, StageContext

log = logging.getLogger(__name__)


def select_budgets(profile, wanted) -> list[BudgetSpec]:
    """The profile's budgets named in ``wanted`` (names or BudgetSpecs); all when empty."""
    if not wanted:
        if not profile.budgets:
            raise ConfigError(f"{profile.name} has no budgets; name one with --budget")
        return list(profile.budgets)
    known = {b.name: b for b in profile.budgets}
    out = []
    for w in wanted:
        if isinstance(w, BudgetSpec):
            out.append(w)
        elif w in known:
            out.append(known[w])
        else:
            raise ConfigError(
                f"{profile.name} has no budget {w!r}; its budgets: {', '.join(known) or 'none'}",
                key="budgets",
            )
    return out


def search_stage(
    *,
    teacher_dir: str,
    spec: TaskSpec,
    data_dir,
    device: str,
    budgets=(),
    cfg: SearchConfig,
    data_cfg: DataConfig | None = None,
    predictors_dir: str | None = None,
    torch_device: str | None = None,
    target: str | None = None,
    token_file: str | None = None,
    name: str = "search",
    supernet_cache: str | Path | None = None,
) -> Stage:
    """A pipeline :class:`~toolchain.pipeline.Stage` running the whole search.

    ``supernet_cache``: a folder where trained supernets are kept, keyed by everything their
    training depends on (the teacher's files, the task and data, the training settings and the
    seed; not the device: its pruning compares MACs), so a later search that would train the same
    supernet, for any device, loads it instead (``edgec build`` keeps them beside the cached
    teachers)."""
    from toolchain.models.teacher import teacher_inputs
    from toolchain.profile.devices import resolve_device

    profile = resolve_device(device).profile
    chosen = select_budgets(profile, budgets)
    config = {
        "teacher": teacher_dir,
        "task": spec.name,
        "task_spec": spec,
        "device": profile.name,
        "budgets": chosen,
        "search": cfg,
        "data": data_cfg or DataConfig(),
        "measured_by": target or "this host where it is the device",
    }
    inputs = teacher_inputs(teacher_dir, spec, data_dir)
    predictor_file = Path(predictors_dir or ".") / f"{profile.name}.json"
    if predictors_dir and predictor_file.is_file():
        inputs = (*inputs, predictor_file)

    agent = None
    if target:
        from toolchain.profile.agent import read_token

        if not token_file:
            raise ConfigError("--target needs --token-file F (the agent's token)")
        agent = {"url": target, "token": read_token(token_file)}

    def run(ctx: StageContext) -> dict:
        return run_search(
            ctx,
            teacher_dir=teacher_dir,
            spec=spec,
            data_dir=data_dir,
            profile=profile,
            budgets=chosen,
            cfg=cfg,
            data_cfg=data_cfg or DataConfig(),
            predictors_dir=predictors_dir,
            torch_device=torch_device,
            agent=agent,
            supernet_cache=supernet_cache,
        )

    return Stage(name, run, config=config, inputs=inputs)


def run_search(
    ctx: StageContext,
    *,
    teacher_dir,
    spec,
    data_dir,
    profile,
    budgets,
    cfg: SearchConfig,
    data_cfg,
    predictors_dir,
    torch_device,
    agent: dict | None = None,
    supernet_cache: str | Path | None = None,
) -> dict:
    from toolchain.data.clean import clean
    from toolchain.distill.importance import importance
    from toolchain.models.finetune import head_for, pick_device
    from toolchain.models.loading import load_model
    from toolchain.nas.search import evolve, pareto_front, plot_pareto, prune_space, shrink
    from toolchain.nas.supernet import SUPERNET_FILE, SuperNet
    from toolchain.nas.train import SubnetScorer, frozen_teacher, train_supernet
    from toolchain.profile.predict import predictor_for

    started = time.perf_counter()
    device = pick_device(torch_device)
    teacher = load_model(teacher_dir, head=head_for(spec))
    positions = getattr(teacher.config, "max_position_embeddings", None)
    for b in budgets:
        if positions and b.seq_len > positions:
            raise ConfigError(
                f"budget {b.name!r} is measured at sequence length {b.seq_len}, beyond the "
                f"teacher's {positions} positions: give a budget with seq_len <= {positions}"
            )
    try:
        predict = predictor_for(profile, predictors_dir, cfg.precision)
    except ValueError as e:
        raise ConfigError(
            f"no latency predictor for {profile.name} ({e}): run `edgec profile --device "
            f"{profile.name} --calibrate 48` on it, or complete the profile's facts"
        ) from None
    train, _ = clean(load_split(spec, "train", data_dir), data_cfg)
    validation = load_split(spec, "validation", data_dir)
    val = random.Random(ctx.seed).sample(validation, min(cfg.eval_samples, len(validation)))
    ckpt = ctx.checkpoint_dir

    primary = budgets[0]
    vocab = teacher.vocab_size

    def predicted(arch, budget=primary) -> dict:
        return predict(_predictor_shape(arch, budget, vocab))

    steps = cfg.supernet_steps
    first = int(steps * cfg.prune_after)
    cached = _cached_supernet(supernet_cache, teacher_dir, data_dir, spec, data_cfg, cfg, ctx.seed)
    if cached is not None and (cached / SUPERNET_FILE).is_file():
        supernet = SuperNet.load(cached)  # trained before, with its pruned space
        meta = json.loads((cached / SUPERNET_FILE).read_text())
        trained, pruning, train_s = meta["trained"], meta.get("pruning"), 0.0
        trained["cached"] = str(cached)
        scorer = SubnetScorer(supernet, spec, val, max_len=cfg.max_seq_len, device=device)
        log.info("supernet: the one trained before (%s)", cached)
    else:
        sample = random.Random(ctx.seed).sample(train, min(512, len(train)))
        scores = importance(teacher, spec, sample, max_len=cfg.max_seq_len, device=device)
        supernet = SuperNet.from_teacher(teacher, scores)
        scorer = SubnetScorer(supernet, spec, val, max_len=cfg.max_seq_len, device=device)

        # -- train, pruning dominated choices after the first round ------------------------
        def prune(net) -> dict:
            # cost in MACs, not the device's latency: wider is dearer on every device, and a
            # device-free supernet serves builds for every device (see _cached_supernet)
            space, report = prune_space(
                net.space,
                scorer,
                lambda a: a.macs(cfg.max_seq_len),
                margin=cfg.prune_margin,
                seed=ctx.seed,
            )
            scorer.cache.clear()  # the weights move on: first-round scores go stale
            log.info("search space pruned after step %d: %s", first, space.describe())
            before, net.space = net.space.describe(), space
            return {"before": before, "after": space.describe(), "choices": report}

        t0 = time.perf_counter()
        trained = train_supernet(
            supernet,
            frozen_teacher(supernet),
            spec,
            train,
            cfg,
            steps=steps,
            seed=ctx.seed,
            checkpoint=ckpt / "supernet.pt",
            device=device,
            after_step={first: prune} if 0 < first < steps else None,
        )
        pruning = trained.pop("events", {}).get(str(first))
        train_s = round(time.perf_counter() - t0, 1)
        if cached is not None:  # written whole, then renamed: never half a supernet
            tmp = cached.with_name(cached.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            supernet.save(tmp, extra={"trained": trained, "pruning": pruning})
            shutil.rmtree(cached, ignore_errors=True)
            tmp.rename(cached)
    supernet.save(ctx.out_dir / "supernet", extra={"steps": trained["steps"]})

    # -- search per budget -----------------------------------------------------------------
    per_budget = {}
    for budget in budgets:
        t1 = time.perf_counter()

        def feasible(arch, budget=budget) -> bool:
            p = predicted(arch, budget)
            memory_ok = p.get("memory_mb") is None or p["memory_mb"] <= budget.memory_mb
            return p["latency_ms"] <= budget.latency_ms and memory_ok

        try:
            ranked = evolve(
                supernet.space,
                scorer,
                feasible,
                cfg,
                seed=ctx.seed,
                state_path=ckpt / f"evolve-{budget.name}.json",
                desc=f"search {budget.name}",
            )
        except EdgecError as e:  # this budget cannot be met; the others are still searched
            smallest = supernet.space.smallest()
            per_budget[budget.name] = {
                "error": str(e),
                "closest": {
                    "subnet": str(smallest),
                    "predicted": predicted(smallest, budget),
                    "accuracy_inherited": scorer(smallest),
                },
            }
            log.warning("%s: %s", budget.name, e)
            continue
        near, descent = shrink(
            supernet.space,
            ranked,
            scorer,
            feasible,
            lambda a, budget=budget: predicted(a, budget)["latency_ms"],
            tolerance=cfg.accuracy_tolerance,
            evaluations=cfg.shrink_evaluations,
        )
        candidates = [  # the fastest of those within the tolerance of the best accuracy
            {**arch.as_dict(), "accuracy": acc, "predicted": predicted(arch, budget)}
            for arch, acc in near[: max(1, cfg.measure_top_k)]
        ]
        measured = _measure(candidates, supernet, spec, profile, budget, cfg, agent)
        best = _choose(candidates, measured, cfg.accuracy_tolerance)
        arch = _arch(best)
        student = supernet.extract(arch)
        student.tokenizer = teacher.tokenizer
        subnet_dir = ctx.out_dir / "subnets" / budget.name
        student.save(subnet_dir)
        per_budget[budget.name] = {
            "budget": {
                "latency_ms": budget.latency_ms,
                "percentile": budget.percentile,
                "memory_mb": budget.memory_mb,
                "batch": budget.batch,
                "seq_len": budget.seq_len,
            },
            "subnet": best["arch"],
            "shape": str(arch.shape),
            "params": student.num_parameters(),
            "accuracy_inherited": best["accuracy"],
            "predicted": best["predicted"],
            "measured": best.get("measured"),
            "measured_note": measured["note"],
            "candidates": candidates,
            "best_accuracy_inherited": ranked[0][1],
            "within_tolerance": len(near),
            "descent": descent,
            "scored": len(ranked) + descent["evaluated"],
            "search_s": round(time.perf_counter() - t1, 1),
            "model": str(Path("subnets") / budget.name),
        }
        log.info(
            "%s: %s (accuracy %.4f with inherited weights, predicted %.2f ms)",
            budget.name,
            best["arch"],
            best["accuracy"],
            best["predicted"]["latency_ms"],
        )

    # -- Pareto front over every scored subnet ---------------------------------------------
    points = [
        {**a.as_dict(), "accuracy": acc, "latency_ms": predicted(a)["latency_ms"]}
        for a, acc in scorer.cache.items()
    ]
    front = pareto_front(points)
    chosen_points = [
        {
            "latency_ms": predicted(_arch(r))["latency_ms"],
            "accuracy": r["accuracy_inherited"],
            "label": f"{name}: {r['subnet']}",
        }
        for name, r in per_budget.items()
        if "error" not in r
    ]
    (ctx.out_dir / "pareto.json").write_text(
        json.dumps(
            {
                "x": f"predicted latency (ms) at batch {primary.batch} x seq {primary.seq_len} "
                f"on {profile.name}",
                "y": f"{spec.main_metric} with inherited weights on {len(val)} validation examples",
                "front": front,
                "points": points,
            },
            indent=2,
        )
        + "\n"
    )
    png = plot_pareto(
        points,
        front,
        ctx.out_dir / "pareto.png",
        chosen=chosen_points,
        budgets=[(b.name, b.latency_ms) for b in budgets if b.seq_len == primary.seq_len],
        title=f"{spec.name} on {profile.name}: {len(points)} subnets scored",
    )
    metrics = {
        "task": spec.name,
        "device": profile.name,
        "teacher": str(teacher_dir),
        "space": supernet.space.describe(),
        "space_size": supernet.space.size(),
        "supernet": {**trained, "train_s": train_s},
        "pruning": pruning,
        "budgets": per_budget,
        "pareto_png": png,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (ctx.out_dir / "search.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _cached_supernet(cache, teacher_dir, data_dir, spec, data_cfg, cfg, seed):
    """The folder of this search's trained supernet in ``cache`` (None without a cache): keyed by
    the teacher's and the data's files, the task and data settings, the training settings and
    the seed. Not by the device: pruning compares MACs, so one supernet serves every device."""
    if cache is None:
        return None
    import hashlib

    from toolchain.models.teacher import teacher_inputs
    from toolchain.pipeline import _jsonable, hash_path

    train_keys = (
        "supernet_steps",
        "sandwich",
        "learning_rate",
        "batch_size",
        "max_seq_len",
        "hidden_weight",
        "prune_after",
        "prune_margin",
        "eval_samples",
        "temperature",
    )
    ident = {
        "inputs": [hash_path(f) for f in teacher_inputs(teacher_dir, spec, data_dir)],
        "task": spec,
        "data": data_cfg,
        "train": {k: getattr(cfg, k, None) for k in train_keys},
        "seed": seed,
        "prune_cost": "macs",
    }
    text = json.dumps(_jsonable(ident), sort_keys=True, default=str)
    return Path(cache) / f"supernet-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _predictor_shape(arch, budget: BudgetSpec, vocab: int):
    from toolchain.profile.predict import Shape

    return Shape(
        layers=len(arch.layers),
        hidden=arch.hidden,
        heads=arch.heads,
        ffn=arch.ffn,
        seq=budget.seq_len,
        batch=budget.batch,
        vocab=vocab,
    )


def _arch(record: dict):
    from toolchain.nas.space import Arch

    return Arch.parse(record["arch"] if "arch" in record else record["subnet"])


_MEASURED_FORMAT = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-dynamic"}


def _candidate_onnx(student, folder: Path, precision: str) -> tuple[Path, str]:
    """The candidate as the ONNX its precision implies: fp32, fp16, or ONNX Runtime's dynamic
    INT8 for int8. int4/int2 need the quantize stage's packed checkpoint: fp32 stands in."""
    from toolchain.export.lowbit import to_dynamic_int8, to_fp16
    from toolchain.export.onnx import export_float

    fmt = _MEASURED_FORMAT.get(precision, "fp32")
    float_onnx = export_float(student, folder / ("model.onnx" if fmt == "fp32" else "float.onnx"))
    if fmt == "fp16":
        to_fp16(float_onnx, folder / "model.onnx")
    elif fmt == "int8-dynamic":
        to_dynamic_int8(float_onnx, folder / "model.onnx")
    return folder / "model.onnx", fmt


def _measure(candidates, supernet, spec, profile, budget: BudgetSpec, cfg, agent) -> dict:
    """Measure the top candidates for real: on this host when the device is this host, through
    the device's `edgec agent` when one is given (as bundles), else say why not. Adds
    ``measured`` to each candidate."""
    from toolchain.profile.devices import resolve_device
    from toolchain.profile.local import budget_verdicts, profile_local

    if cfg.measure_top_k == 0:
        return {"note": "not measured (measure_top_k is 0)"}
    host = resolve_device("host").profile
    if agent is None and profile.name != host.name:
        return {
            "note": f"not measured: {profile.name} is not this machine ({host.name}) and no "
            "agent was given (--target URL --token-file F); the figures are predictions"
        }
    shape = (budget.batch, budget.seq_len)
    where = f"through the agent at {agent['url']}" if agent else f"on this host ({profile.name})"
    with tempfile.TemporaryDirectory(prefix="edgec-search-") as tmp:
        for i, c in enumerate(candidates):
            student = supernet.extract(_arch(c))
            student.tokenizer = supernet.adapter.tokenizer
            folder = Path(tmp) / f"candidate{i}"
            folder.mkdir()
            onnx, fmt = _candidate_onnx(student, folder, cfg.precision)
            if agent:
                report = _remote(student, folder, spec, profile, shape, agent)
            else:
                report = profile_local(onnx, device=profile.name, shapes=[shape])
            r = next(x for x in report["results"] if (x["batch"], x["seq"]) == shape)
            verdict = budget_verdicts([budget], [r])[0]
            c["measured"] = {
                "p50_ms": r["p50_ms"],
                "p90_ms": r["p90_ms"],
                "p99_ms": r["p99_ms"],
                "peak_rss_mb": r["peak_rss_mb"],
                "format": fmt,
                "verdict": verdict["verdict"],
                "label": report["label"],
            }
    note = f"top {len(candidates)} measured {where}"
    if cfg.precision not in _MEASURED_FORMAT:
        note += f" as fp32 stand-ins ({cfg.precision} needs the quantize stage's checkpoint)"
    return {"note": note}


def _remote(student, folder: Path, spec, profile, shape, agent) -> dict:
    """One candidate measured by the device's agent: bundled (hashes), uploaded, measured."""
    from toolchain.bundle.build import build_bundle
    from toolchain.profile.agent import profile_remote

    student.tokenizer.save_pretrained(folder)
    bundle = folder.parent / f"{folder.name}.edgec"
    build_bundle(folder, bundle, device=profile.name, spec=spec, tarball=False)
    proto = profile.protocol
    request = {
        "shapes": [list(shape)],
        "runtime": "onnxruntime",
        "warmup": proto.warmup,
        "iterations": proto.iterations,
        "repeats": proto.repeats,
    }
    return profile_remote(bundle, agent["url"], token=agent["token"], request=request)


def _choose(candidates: list[dict], measured: dict, tolerance: float = 0.0) -> dict:
    """Among the candidates that fit (measured to meet the budget where measured, else predicted
    to), those within ``tolerance`` of the best accuracy, the fastest (measured p50 where
    measured, else predicted). If every measured candidate missed, the one with the lowest
    measured latency (its record says it missed)."""
    meas = [c for c in candidates if "measured" in c]
    pool = [c for c in meas if c["measured"]["verdict"] == "met"] if meas else candidates
    if meas and not pool:
        return min(meas, key=lambda c: c["measured"]["p90_ms"])
    best = max(c["accuracy"] for c in pool)
    near = [c for c in pool if c["accuracy"] >= best - tolerance]

    def latency(c):
        return c["measured"]["p50_ms"] if "measured" in c else c["predicted"]["latency_ms"]

    return min(near, key=lambda c: (latency(c), -c["accuracy"]))


__all__ = ["run_search", "search_stage", "select_budgets"]
