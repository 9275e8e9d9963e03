"""The task-agnostic supernet against a supernet per task, on SST-2, CoLA and RTE (this host).

    python benchmarks/bench_agnostic.py --data-dir ../shared/data \\
        --teacher sst2=runs/loyalty/teacher-sst2 --teacher cola=runs/loyalty/teacher-cola5 \\
        --teacher rte=runs/agnostic/teacher-rte --predictors runs/ner-host/calibrate

Both routes run the real search stage (:func:`toolchain.nas.stage.search_stage`) with the same
budget per task and the same search settings; they differ only in where the supernet comes from:

- task: the task's fine-tuned teacher made a supernet and trained ``--task-steps`` on the task's
  data, once per task;
- agnostic: one supernet trained ``--agnostic-steps`` block-wise on unlabelled text from the
  pretrained model (WikiText-2 valid, MR/SUBJ, CoNLL-2003 sentences), once for all three tasks,
  then per task given the task head and fine-tuned ``--proxy-steps``.

Each route's chosen subnet is distilled from the task teacher with the same settings, its dev
score taken, and every final model exported to ONNX and measured here round-robin in the same
rounds (batch 1, seq 64), so both routes see the same machine. The budget: half the teacher's
predicted latency (the fitted host predictor given), at p50.

Costs: ``task_cost_s`` is what a task adds (search stage: supernet training or adaptation, and
the search; then the final distillation); the agnostic route adds ``supernet_train_s`` once.
Writes ``benchmarks/results/agnostic.json`` and ``agnostic.md``. Every step is a pipeline stage
in ``--run-dir`` (git-ignored): an interrupted run resumes at the first unfinished one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

TASKS = ("sst2", "cola", "rte")
GOAL_POINTS = 1.0  # each task's bundle within this many points of its task-specific counterpart


def _args():
    return _parser().parse_args()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--teacher", action="append", required=True, metavar="TASK=DIR",
                   help="a fine-tuned teacher per task (of the pretrained --model)")  # fmt: skip
    p.add_argument("--model", default="default", help="the pretrained model of the teachers")
    p.add_argument("--predictors", required=True, help="folder with x86-64-host.json")
    p.add_argument("--run-dir", default=str(REPO / "runs" / "bench_agnostic"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--name", default="agnostic", help="the results' file stem (NAME.json, .md)")
    p.add_argument("--task-steps", type=int, default=100, help="a task's supernet (quick: 100)")
    p.add_argument("--agnostic-steps", type=int, default=150)
    p.add_argument("--proxy-steps", type=int, default=30)
    p.add_argument("--distill-steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--budget-fraction", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--timing-steps", type=int, default=10, help="steps per timing round")
    p.add_argument("--timing-rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p


def main() -> int:
    args = _args()
    from dataclasses import replace

    from bench_distill import environment
    from bench_nas import export_onnx, measure_round_robin

    from toolchain.config import BudgetSpec, DataConfig, DistillConfig, SearchConfig
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.devices.predict import FittedPredictor
    from toolchain.distill.stage import distill_stage
    from toolchain.nas.agnostic import agnostic_stage
    from toolchain.nas.space import Arch
    from toolchain.nas.stage import search_stage
    from toolchain.pipeline import RunDir
    from toolchain.target import DeviceTarget

    teachers = dict(t.split("=", 1) for t in args.teacher)
    missing = [t for t in TASKS if t not in teachers]
    if missing:
        raise SystemExit(f"give --teacher {missing[0]}=DIR for every task of {', '.join(TASKS)}")
    fitted = FittedPredictor.load(Path(args.predictors) / "x86-64-host.json")
    started = time.perf_counter()
    run = RunDir(args.run_dir)
    target = DeviceTarget.resolve("host", predictors_dir=args.predictors)
    base = SearchConfig(
        supernet_steps=args.task_steps, sandwich=3, learning_rate=2e-4,
        batch_size=args.batch_size, max_seq_len=64, population=12, generations=3,
        eval_samples=256, measure_top_k=0, accuracy_tolerance=0.0, finalists=1,
        precision=fitted.precision, agnostic_steps=args.agnostic_steps,
        proxy_steps=args.proxy_steps,
    )  # fmt: skip
    agn_cfg = replace(base, supernet="agnostic")
    (res,) = run.run([agnostic_stage(teacher=args.model, data_dir=args.data_dir, cfg=agn_cfg)],
                     seed=args.seed)  # fmt: skip
    agnostic = res.record["metrics"]
    agnostic_dir = Path(args.run_dir) / "agnostic-supernet" / "supernet"
    dcfg = DistillConfig(
        steps=args.distill_steps, learning_rate=2e-4, max_seq_len=64, batch_size=args.batch_size,
        eval_every=max(1, args.distill_steps // 3), eval_samples=500,
    )  # fmt: skip

    rows, finals = [], {}
    for task in TASKS:
        spec, tdir = get_task(task), str(Path(teachers[task]).resolve())
        probe = BudgetSpec(name="half", latency_ms=1e9, memory_mb=4096, percentile=50, batch=1,
                           seq_len=64)  # fmt: skip
        whole = Arch.parse("L[0,1,2,3,4,5]:H384:A12:F1536")  # the MiniLM-L6 teacher
        full = target.latency_for(target.shape_of(whole, probe, 30522), fitted.precision)
        budget = replace(
            probe, latency_ms=round(full["latency_ms"] * args.budget_fraction, 3),
            description=f"{args.budget_fraction} x the teacher's predicted p50",
        )  # fmt: skip
        for route, cfg in (("task", base), ("agnostic", agn_cfg)):
            # the stages of another proxy length sit beside the default's in the same run folder
            # (the task route and the agnostic supernet are shared)
            stem = f"{task}-{route}" + (f"-p{args.proxy_steps}" if route == "agnostic"
                                        and args.proxy_steps != 30 else "")  # fmt: skip
            search = search_stage(
                teacher_dir=tdir, spec=spec, data_dir=args.data_dir, target=target,
                budgets=(budget,), cfg=cfg, data_cfg=DataConfig(), name=f"search-{stem}",
                agnostic_dir=agnostic_dir if route == "agnostic" else None,
            )  # fmt: skip
            (sres,) = run.run([search], seed=args.seed)
            found = sres.record["metrics"]["budgets"]["half"]
            model = Path(args.run_dir) / search.name / found["model"]
            (dres,) = run.run([distill_stage(
                teacher_dir=tdir, spec=spec, data_dir=args.data_dir, cfg=dcfg,
                data_cfg=DataConfig(), name=f"distill-{stem}", init_from=str(model),
            )], seed=args.seed)  # fmt: skip
            m = dres.record["metrics"]
            name = f"{task}-{route}"
            finals[name] = export_onnx(Path(args.run_dir) / f"distill-{stem}",
                                       Path(args.run_dir) / f"{stem}.onnx")  # fmt: skip
            dev = m["dev"]
            rows.append({
                "task": task, "route": route, "subnet": found["subnet"],
                "metric": spec.main_metric,
                "dev": dev["student"][spec.main_metric],
                "teacher_dev": dev["teacher"][spec.main_metric],
                "label_loyalty": dev.get("label_loyalty"),
                "inherited": found["accuracy_inherited"],
                "predicted_ms": found["predicted"]["latency_ms"], "budget_ms": budget.latency_ms,
                "search_s": sres.record["metrics"]["wall_s"],
                "supernet_s": sres.record["metrics"]["supernet"]["train_s"],
                "distill_s": dres.record["wall_s"],
                "task_cost_s": round(sres.record["metrics"]["wall_s"] + dres.record["wall_s"], 1),
                "trivial": _trivial(spec, load_split(spec, "dev", args.data_dir)),
            })  # fmt: skip
    lat = measure_round_robin(finals, args.rounds)
    for r in rows:
        r["p50_ms"] = lat[f"{r['task']}-{r['route']}"]["p50_ms"]
    per_step = step_times(args, teachers["sst2"], agnostic_dir, agn_cfg)
    steady = {  # the supernet phase of three tasks at the round-robin per-step times
        "task": round(3 * args.task_steps * per_step["task"], 1),
        "agnostic": round(
            args.agnostic_steps * per_step["agnostic"] + 3 * args.proxy_steps * per_step["proxy"],
            1,
        ),
    }
    totals = {
        "task": round(sum(r["task_cost_s"] for r in rows if r["route"] == "task"), 1),
        "agnostic": round(
            agnostic["wall_s"] + sum(r["task_cost_s"] for r in rows if r["route"] == "agnostic"),
            1,
        ),
    }
    gaps = {}
    for task in TASKS:
        t, a = (next(r for r in rows if r["task"] == task and r["route"] == k)
                for k in ("task", "agnostic"))  # fmt: skip
        # a comparison means something only where the task route's bundle is above the trivial
        # baseline (both at it: equal and empty)
        informative = t["dev"] > t["trivial"] + 0.005
        gaps[task] = {
            "dev_points": round(100 * (a["dev"] - t["dev"]), 2),
            "p50_ratio": round(a["p50_ms"] / t["p50_ms"], 3),
            "within_goal": 100 * (t["dev"] - a["dev"]) <= GOAL_POINTS,
            "informative": informative,
        }
    report = {
        "supernet_train_s": agnostic["wall_s"],
        "agnostic": {
            k: agnostic[k]
            for k in ("steps", "sentences", "text", "space", "loss_history")
            if k in agnostic
        },  # fmt: skip
        "rows": rows,
        "totals_s": totals,
        "step_s": per_step,
        "supernet_phase_steady_s": steady,
        "gaps": gaps,
        "goals": {
            "cheaper_for_three_tasks": totals["agnostic"] < totals["task"],
            "supernet_phase_cheaper_steady": steady["agnostic"] < steady["task"],
            "every_task_within_1_point": all(g["within_goal"] for g in gaps.values()),
            "informative_tasks": [k for k, g in gaps.items() if g["informative"]],
        },
        "settings": vars(args),
        "predictor": {
            "file": str(Path(args.predictors) / "x86-64-host.json"),
            "precision": fitted.precision,
        },  # fmt: skip
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{args.name}.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out / f"{args.name}.json")
    (out / f"{args.name}.md").write_text(_markdown(report))
    print((out / f"{args.name}.md").read_text())
    return 0


def step_times(args, sst2_teacher: str, agnostic_dir: Path, cfg) -> dict:
    """Seconds per training step of each supernet phase, measured round-robin in this process
    (``--timing-rounds`` rounds of ``--timing-steps`` steps each, the fastest round kept), so
    that the phases compare on the same machine state: the agnostic block-wise step, the task
    supernet's step (SST-2) and the proxy step (SST-2, the adapted agnostic supernet). Each
    round starts from fresh weights; the time of encoding the training split is left out (the
    step loops are timed, not the set-up)."""
    import random
    from dataclasses import replace

    from toolchain.config import DataConfig
    from toolchain.data.clean import clean
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.data.text import unlabelled_text
    from toolchain.distill.importance import importance, label_free_importance
    from toolchain.models.loading import load_model
    from toolchain.nas.agnostic import adapt_to_task, train_agnostic
    from toolchain.nas.supernet import SuperNet, order_by_importance
    from toolchain.nas.train import frozen_teacher, train_supernet

    spec = get_task("sst2")
    train, _ = clean(load_split(spec, "train", args.data_dir), DataConfig())
    train = random.Random(0).sample(train, 4000)  # enough batches; encoding kept short
    teacher = load_model(sst2_teacher, head="sequence-classification")
    base = load_model(args.model, head="base")
    texts = unlabelled_text(cfg.agnostic_text, args.data_dir)[:4000]
    t_scores = importance(teacher, spec, train[:256], max_len=cfg.max_seq_len)
    b_scores = label_free_importance(base, texts[:256], max_len=cfg.max_seq_len)
    n, times = args.timing_steps, {"agnostic": [], "task": [], "proxy": []}
    one = replace(cfg, prune_after=0.0, checkpoint_every=10**6)
    for _ in range(args.timing_rounds):
        net = SuperNet(order_by_importance(base, b_scores))
        times["agnostic"].append(train_agnostic(net, texts, one, steps=n)["wall_s"] / n)
        net = SuperNet(order_by_importance(teacher, t_scores))
        r = train_supernet(net, frozen_teacher(net), spec, train, one, steps=n)
        times["task"].append(r["wall_s"] / n)
        net, frozen = adapt_to_task(agnostic_dir, teacher, spec)
        r = train_supernet(net, frozen, spec, train, one, steps=n)
        times["proxy"].append(r["wall_s"] / n)
    return {k: round(min(v), 3) for k, v in times.items()}


def _changed(settings: dict) -> dict:
    """The settings given on the command line that differ from the defaults."""
    keys = ("task_steps", "agnostic_steps", "proxy_steps", "distill_steps", "batch_size",
            "budget_fraction", "name")  # fmt: skip
    defaults = vars(_parser().parse_args(["--teacher", "x=y", "--predictors", "p"]))
    return {k: settings[k] for k in keys if settings.get(k) != defaults.get(k)}


def _trivial(spec, dev) -> float:
    """The main metric of always answering the most common dev label (MCC: 0)."""
    from collections import Counter

    if spec.main_metric == "mcc":
        return 0.0
    counts = Counter(ex.label for ex in dev)
    return round(counts.most_common(1)[0][1] / len(dev), 4)


def _markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        "# Task-agnostic supernet vs a supernet per task (SST-2, CoLA, RTE; this host)",
        "",
        f"Measured {r['date']} on {r['environment']['cpu']} ({r['environment']['cores']} cores). "
        "Command: `python benchmarks/bench_agnostic.py --data-dir ../shared/data --teacher "
        "sst2=runs/loyalty/teacher-sst2 --teacher cola=runs/loyalty/teacher-cola5 --teacher "
        "rte=runs/agnostic/teacher-rte --predictors runs/ner-host/calibrate"
        + "".join(f" --{k.replace('_', '-')} {v}" for k, v in _changed(s).items())
        + "`.",
        "",
        f"- task route: a supernet per task from its fine-tuned teacher, {s['task_steps']} steps "
        "on the task's data.",
        f"- agnostic route: one supernet, {s['agnostic_steps']} block-wise steps on "
        f"{r['agnostic'].get('sentences')} unlabelled sentences "
        f"({', '.join(r['agnostic'].get('text', []))}) "
        f"in {r['supernet_train_s']} s, then per task {s['proxy_steps']} steps of task "
        "fine-tuning (NAS-BERT's performance approximation).",
        f"- both: batch {s['batch_size']}, seq 64, sandwich 3, the same search (population 12, "
        "3 generations, 256 validation examples) under one budget per task (p50 at batch 1 x seq "
        f"64 <= {s['budget_fraction']} x the teacher's prediction by the fitted host predictor, "
        f"{r['predictor']['precision']}); the chosen subnet distilled {s['distill_steps']} steps "
        "from the task teacher. p50: the final models as fp32 ONNX, measured here round-robin "
        f"({s['rounds']} rounds, batch 1, seq 64); the predicted column is the predictor's "
        f"{r['predictor']['precision']} graph, so the two differ by the precision too.",
        "",
        "| task | route | subnet | dev | teacher | trivial | inherited (before distillation) "
        "| p50 ms (measured) | predicted ms | search stage s | distill s | task cost s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['task']} | {x['route']} | {x['subnet']} | {x['dev']:.4f} {x['metric']} | "
            f"{x['teacher_dev']:.4f} | {x['trivial']:.4f} | {x['inherited']:.4f} | "
            f"{x['p50_ms']:.2f} | {x['predicted_ms']:.2f} | {x['search_s']} | {x['distill_s']} | "
            f"{x['task_cost_s']} |"
        )
    t = r["totals_s"]
    lines += [
        "",
        f"Total for three tasks: task route {t['task']} s; agnostic route {t['agnostic']} s "
        f"({r['supernet_train_s']} s of it the agnostic supernet, paid once).",
        "",
        "| task | dev, agnostic - task (points) | p50, agnostic / task | within 1 point | task "
        "route above the trivial baseline |",
        "|---|---|---|---|---|",
    ]
    for task, g in r["gaps"].items():
        lines.append(f"| {task} | {g['dev_points']:+.2f} | {g['p50_ratio']} | {g['within_goal']} "
                     f"| {g['informative']} |")  # fmt: skip
    st, ss = r["step_s"], r["supernet_phase_steady_s"]
    lines += [
        "",
        f"Seconds per step, measured round-robin in one process ({s['timing_rounds']} rounds of "
        f"{s['timing_steps']} steps, the fastest kept): agnostic block-wise {st['agnostic']}, "
        f"task supernet {st['task']}, task proxy {st['proxy']}. At those rates the supernet "
        f"phase of three tasks costs {ss['task']} s on the task route and {ss['agnostic']} s "
        "on the agnostic route (the wall times above also carry whatever else shared the two "
        "cores when each stage ran).",
    ]
    g = r["goals"]
    lines += [
        "",
        f"Goals: cheaper for three tasks (wall totals): **{g['cheaper_for_three_tasks']}** "
        f"(supernet phase at the round-robin rates: **{g['supernet_phase_cheaper_steady']}**); "
        "every task within "
        f"1 point of its task-specific counterpart: **{g['every_task_within_1_point']}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
