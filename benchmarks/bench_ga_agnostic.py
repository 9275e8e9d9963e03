"""The task-agnostic GA layer mapping on the real model and data: searched once (unlabelled text,
SST-2 and CoLA as the representative tasks), then reused to distil SST-2 and CoLA students, each
against the uniform mapping with the same steps.

    python benchmarks/bench_ga_agnostic.py --data-dir ../shared/data \\
        --teacher sst2=runs/loyalty/teacher-sst2 --teacher cola=runs/loyalty/teacher-cola5

Writes ``benchmarks/results/ga_agnostic.json`` and ``ga_agnostic.md``. Every step is a pipeline
stage (or, for the mapping, a resumable file) in ``--run-dir``.
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


# the search and distillation settings' defaults (the command line in the results names the others)
# (sized for 2 cores shared with other work: about 30 minutes)
DEFAULTS = {"student_shape": "L3:H384:A12:F1536", "population": 4, "generations": 2,
            "proxy_steps": 30, "task_steps": 30, "distill_steps": 150}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--teacher", action="append", required=True, metavar="TASK=DIR")
    p.add_argument("--run-dir", default=str(REPO / "runs" / "bench_ga_agnostic"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--student-shape", default=DEFAULTS["student_shape"])
    p.add_argument("--population", type=int, default=DEFAULTS["population"])
    p.add_argument("--generations", type=int, default=DEFAULTS["generations"])
    p.add_argument("--proxy-steps", type=int, default=DEFAULTS["proxy_steps"])
    p.add_argument("--task-steps", type=int, default=DEFAULTS["task_steps"])
    p.add_argument("--distill-steps", type=int, default=DEFAULTS["distill_steps"])
    args = p.parse_args()

    from bench_agnostic import _trivial
    from bench_distill import environment

    from toolchain import api
    from toolchain.config import DataConfig, DistillConfig, GAConfig
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.distill.stage import distill_stage
    from toolchain.pipeline import RunDir

    teachers = dict(t.split("=", 1) for t in args.teacher)
    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mapping_file = run_dir / "mapping.json"
    ga = GAConfig(population=args.population, generations=args.generations,
                  proxy_steps=args.proxy_steps, proxy_sentences=2000, tasks=tuple(teachers),
                  task_steps=args.task_steps, task_train_samples=2000,
                  task_val_samples=500)  # fmt: skip
    if mapping_file.is_file():
        report = json.loads(mapping_file.read_text())
    else:
        report = api.search_mapping(mapping_file, student_shape=args.student_shape, cfg=ga,
                                    data_dir=args.data_dir)  # fmt: skip
    run = RunDir(run_dir)
    rows = []
    for task, tdir in teachers.items():
        spec = get_task(task)
        for mapping in ("ga", "uniform"):
            cfg = DistillConfig(
                student_shape=args.student_shape, init="truncation", mapping=mapping,
                steps=args.distill_steps, learning_rate=2e-4, max_seq_len=64, batch_size=16,
                eval_every=args.distill_steps // 2, eval_samples=500,
                ga=GAConfig(mapping_file=str(mapping_file)) if mapping == "ga" else GAConfig(),
            )  # fmt: skip
            stage = distill_stage(teacher_dir=str(Path(tdir).resolve()), spec=spec,
                                  data_dir=args.data_dir, cfg=cfg, data_cfg=DataConfig(),
                                  name=f"{task}-{mapping}")  # fmt: skip
            (res,) = run.run([stage])
            m = res.record["metrics"]
            rows.append({
                "task": task, "mapping": mapping, "layers": m["mapping"],
                "metric": spec.main_metric, "dev": m["dev"]["student"][spec.main_metric],
                "teacher": m["dev"]["teacher"][spec.main_metric],
                "label_loyalty": m["dev"].get("label_loyalty"), "wall_s": res.record["wall_s"],
                "trivial": _trivial(spec, load_split(spec, "dev", args.data_dir)),
            })  # fmt: skip
    result = {
        "mapping": report["mapping"],
        "fitness": report["fitness"],
        "search_s": report["search_s"],
        "evaluations": report["evaluations"],
        "tasks": report["tasks"],
        "rows": rows,
        "settings": vars(args),
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    (out / "ga_agnostic.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    lines = [
        "# Task-agnostic GA layer mapping (MiniLM-L6 -> L3 students; this host)",
        "",
        f"Measured {result['date']} on {result['environment']['cpu']}. Command: `python "
        "benchmarks/bench_ga_agnostic.py --data-dir ../shared/data --teacher "
        "sst2=runs/loyalty/teacher-sst2 --teacher cola=runs/loyalty/teacher-cola5"
        + "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                  if k in DEFAULTS and v != DEFAULTS[k]) + "`.",
        "",
        f"Search: {report['evaluations']} mappings of {args.student_shape} onto the 6 teacher "
        f"layers in {report['search_s']} s (population {args.population}, {args.generations} "
        f"generations); each: {args.proxy_steps} steps of hidden-state distillation from the "
        f"pretrained model on 2,000 unlabelled sentences, then {args.task_steps} fine-tuning "
        f"steps on each of {', '.join(report['tasks'])} (2,000 examples, scored on 500 "
        f"validation examples). Best: **{report['mapping']}**.",
        "",
        "| mapping | fitness (mean of the tasks' validation metrics) |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in sorted(report["fitness"].items(),
                                                  key=lambda kv: -kv[1])],  # fmt: skip
        "",
        f"Reused without a search: each task's student (truncation init) distilled "
        f"{args.distill_steps} steps from its fine-tuned teacher with the searched mapping and "
        "with the uniform one.",
        "",
        "| task | mapping | teacher layers | dev | teacher | trivial | label loyalty | wall s |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r['task']} | {r['mapping']} | {r['layers']} | {r['dev']:.4f} {r['metric']} | "
          f"{r['teacher']:.4f} | {r['trivial']:.4f} | {r['label_loyalty']:.4f} | "
          f"{r['wall_s']} |" for r in rows],
        "",
    ]  # fmt: skip
    (out / "ga_agnostic.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
