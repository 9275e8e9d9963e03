"""Fine-tune the default teacher (all-MiniLM-L6-v2) on SST-2, plus short runs on RTE and CoNLL-2003,
and write ``benchmarks/results/teacher.json`` and ``teacher.md``.

    python benchmarks/bench_teacher.py --data-dir ../shared/data

Each task runs as the pipeline's teacher stage in ``runs/bench_teacher/`` (git-ignored), so a
re-run reuses finished models and reports the wall time recorded when they were trained.
SST-2 is scored on the official GLUE dev set (872 sentences); the goal is dev accuracy >= 0.89.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (task, settings): SST-2 is the full run; RTE and CoNLL-2003 are short runs reported as they come.
RUNS = {
    "sst2": {
        "epochs": 2.0,
        "learning_rate": 1e-4,
        "batch_size": 32,
        "max_seq_len": 128,
        "eval_every": 400,
        "early_stopping_patience": 3,
    },
    "rte": {
        "epochs": 5.0,
        "learning_rate": 5e-5,
        "batch_size": 16,
        "max_seq_len": 256,
        "eval_every": 70,
        "early_stopping_patience": 3,
    },
    "conll2003": {
        "epochs": 1.0,
        "learning_rate": 1e-4,
        "batch_size": 32,
        "max_seq_len": 128,
        "eval_every": 200,
        "early_stopping_patience": 3,
    },
}


def environment() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def run_task(task: str, settings: dict, data_dir: Path, run_dir: Path, seed: int) -> dict:
    from toolchain.config import DataConfig, TeacherConfig
    from toolchain.data.tasks import get_task
    from toolchain.models.teacher import teacher_stage
    from toolchain.pipeline import RunDir

    spec = get_task(task)
    cfg = replace(TeacherConfig(), **settings)
    stage = teacher_stage(
        model="default", spec=spec, data_dir=data_dir, cfg=cfg, data_cfg=DataConfig(), name=task
    )
    with RunDir(run_dir) as run:
        (result,) = run.run([stage], seed=seed)
    rec = result.record
    m = rec["metrics"]
    test = {}
    if task == "conll2003":  # its "dev" is valid.txt; papers report the test file too
        test = score_split(result.path, spec, "test", data_dir)
    return {
        "task": task,
        "metric": spec.main_metric,
        "dev": m.get("dev", {}),
        "test": test,
        "validation": m["best_validation"],
        "train_examples": m["train_examples"],
        "cleaning_removed": m["cleaning"]["total"] - m["cleaning"]["kept"],
        "steps": m["steps"],
        "best_step": m["best_step"],
        "wall_s": rec["wall_s"],
        "device": m["device"],
        "settings": settings,
        "cached": result.status == "skipped",
        "model_dir": str(result.path),
    }


def score_split(model_dir: Path, spec, split: str, data_dir: Path) -> dict:
    from toolchain.data.readers import load_split
    from toolchain.evaluate.evaluate import evaluate
    from toolchain.models.finetune import head_for
    from toolchain.models.loading import load_model

    adapter = load_model(str(model_dir), head=head_for(spec))
    return evaluate(adapter, spec, load_split(spec, split, data_dir), desc=f"{spec.name} {split}")


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Teacher fine-tuning (all-MiniLM-L6-v2)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {env['cpu']}, {env['cores']} cores, GPU: {env['gpu'] or 'none'}, "
        f"torch {env['torch']}",
        "",
        "| task | metric | dev | validation | train examples | steps (best) | wall s | device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        dev = r["dev"].get(r["metric"])
        val = r["validation"].get(r["metric"])
        lines.append(
            f"| {r['task']} | {r['metric']} | {dev:.4f} | {val:.4f} | {r['train_examples']} | "
            f"{r['steps']} ({r['best_step']}) | {r['wall_s']:.0f} | {r['device']} |"
        )
    for r in report["rows"]:
        if r["test"]:
            lines.append(
                f"\n{r['task']} test split: {r['metric']} {r['test'][r['metric']]:.4f} "
                f"(n={r['test']['n']}); its dev column is the validation file."
            )
    lines += [
        "",
        f"SST-2 goal: dev accuracy >= 0.89 -> {'met' if report['goal_met'] else 'MISSED'}"
        f" ({report['dev_accuracy']:.4f} on the 872-sentence GLUE dev set).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("EDGEC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--tasks", default="sst2,rte,conll2003")
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_teacher"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from toolchain.log import setup_logging

    setup_logging()
    env = environment()
    print(f"# {env}", flush=True)
    rows = []
    for task in args.tasks.split(","):
        t0 = time.perf_counter()
        row = run_task(task, RUNS[task], Path(args.data_dir), Path(args.run_dir), args.seed)
        rows.append(row)
        print(f"{task}: dev {row['dev']} ({time.perf_counter() - t0:.0f} s this run)", flush=True)
    sst2 = next(r for r in rows if r["task"] == "sst2")
    report = {
        "task": "sst2",
        "dev_accuracy": sst2["dev"]["accuracy"],
        "train_examples": sst2["train_examples"],
        "steps": sst2["steps"],
        "wall_s": sst2["wall_s"],
        "device": sst2["device"],
        "goal_met": sst2["dev"]["accuracy"] >= 0.89,
        "rows": rows,
        "environment": env,
        "command": "python benchmarks/bench_teacher.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "teacher.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
