"""Data-parallel training: one process against N torchrun processes with the same global batch.
Writes ``benchmarks/results/scale.json`` and ``scale.md``.

    python benchmarks/bench_scale.py --data-dir ../shared/data \\
        --teacher sst2=runs/loyalty/teacher-sst2 --teacher cola=runs/loyalty/teacher-cola5

Per task, through the CLI as a user runs it (``edgec distill/quantize ... --nproc N``):

- distillation: a 3-layer ETD student from the teacher, uniform hidden-state mapping;
- KDLSQ: that student (the one-process run's) quantized to W4A8 under distillation from the
  teacher;

each on 1 process, on ``--nproc`` processes (gloo on this CPU, the same global batch), and on 1
process with another seed. The models keep their dropout, so N processes draw other dropout
masks than one, and their runs cannot agree to rounding (the tests check that with dropout off);
the other seed's run measures what such a change alone does, the yardstick for "within noise".
On a 2-core machine N processes share the cores: the wall times show the overhead, not a
speed-up.

Equivalence, per stage and task: the largest difference of the training loss (the mean over the
steps between evaluations, over the ranks' shares) and of the validation metric along the run,
and the dev metric's difference in points, for N processes and for the other seed.

``--gpu``: the same on one GPU with NCCL (``--nproc 1`` under torchrun), a smoke test of the
NCCL path where a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_distill import environment  # noqa: E402
from bench_loyalty import trivial  # noqa: E402

STUDENT = "L3:H384:A12:F1536"


def run_edgec(args: list[str], log: Path) -> float:
    """``edgec ARGS`` in a subprocess (its output to ``log``); its wall time in seconds."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "toolchain", *args], stdout=f, stderr=f,
                              cwd=REPO, env={**os.environ})  # fmt: skip
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"edgec {' '.join(args[:2])} failed ({log}):\n{tail}")
    return round(time.perf_counter() - t0, 1)


def stage_args(stage: str, task: str, teacher: Path, data_dir: str, student: Path, a) -> list:
    common = ["--teacher", str(teacher), "--task", task, "--data-dir", data_dir,
              "--batch-size", str(a.batch_size), "--max-seq-len", str(a.max_seq_len),
              "--eval-every", str(a.eval_every)]  # fmt: skip
    if stage == "distill":
        return ["distill", *common, "--student-shape", STUDENT, "--init", "etd-impt",
                "--mapping", "uniform", "--steps", str(a.steps)]  # fmt: skip
    return ["quantize", str(student), *common, "--method", "kdlsq", "--w-bits", "4",
            "--a-bits", "8", "--steps", str(a.steps)]  # fmt: skip


def row(stage, task, variant, nproc, backend, out: Path, wall_s: float, metric: str) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    training = m.get("training", m)
    dev = m["dev"]
    scores = dev.get("quantized") or dev.get("student") or {}
    return {
        "stage": stage,
        "task": task,
        "variant": variant,
        "nproc": nproc,
        "backend": backend,
        "steps": training["steps"],
        "wall_s": wall_s,
        "train_s": training.get("wall_s"),
        "dev": round(scores[metric], 4),
        "metric": metric,
        "dev_accuracy": round(scores.get("accuracy", float("nan")), 4),
        "label_loyalty": round(dev.get("label_loyalty", float("nan")), 4),
        "curve": [
            {"step": h["step"], "loss": round(sum(h["losses"].values()), 5), "val": h[metric]}
            for h in training["history"]
        ],
    }


def differences(base: dict, other: dict) -> dict:
    """The largest gaps along the run (loss, validation) and the dev gap in points."""
    pairs = list(zip(base["curve"], other["curve"], strict=False))
    loss = [abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-9) for a, b in pairs]
    val = [abs(a["val"] - b["val"]) for a, b in pairs]
    return {
        "max_rel_loss_diff": round(max(loss), 4) if loss else None,
        "max_val_diff": round(max(val), 4) if val else None,
        "dev_diff_points": round(100 * abs(base["dev"] - other["dev"]), 2),
        "dev_accuracy_diff_points": round(
            100 * abs(base["dev_accuracy"] - other["dev_accuracy"]), 2
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--teacher", action="append", required=True, metavar="TASK=DIR")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--run-dir", default=str(REPO / "runs" / "scale"))
    ap.add_argument("--gpu", action="store_true", help="1 GPU, NCCL, as a smoke test")
    a = ap.parse_args()
    from toolchain.data.tasks import get_task

    data_dir = str(Path(a.data_dir).resolve())
    run_dir = Path(a.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    rows, equivalence, baselines = [], {}, {}
    variants = [
        ("1 process", 1, 0),
        (f"{a.nproc} processes", a.nproc, 0),
        ("1 process, seed 1", 1, 1),
    ]
    if a.gpu:
        variants = [("1 GPU, nccl", 1, 0)]
    for item in a.teacher:
        task, teacher = item.split("=", 1)
        teacher = Path(teacher).resolve()
        metric = get_task(task).main_metric
        baselines[task] = {"metric": metric, "trivial": trivial(task, data_dir),
                           "teacher": json.loads((teacher / "metrics.json").read_text())["dev"]
                           .get(metric)}  # fmt: skip
        (run_dir / task).mkdir(parents=True, exist_ok=True)
        student = run_dir / task / "distill-1p-s0"
        for stage in ("distill", "kdlsq"):
            base = None
            for name, nproc, seed in variants:
                tag = f"{stage}-{nproc}p-s{seed}" + ("-gpu" if a.gpu else "")
                out = run_dir / task / tag
                args = stage_args(stage, task, teacher, data_dir, student, a)
                args += ["--seed", str(seed), "-o", str(out)]
                if nproc > 1 or a.gpu:
                    args += ["--nproc", str(nproc)]
                if a.gpu:
                    args += ["--train-device", "cuda"]
                print(f"{task} {stage} {name} ...", flush=True)
                wall = run_edgec(args, run_dir / task / f"{tag}.log")
                backend = "nccl" if a.gpu else ("gloo" if nproc > 1 else "none")
                r = row(stage, task, name, nproc, backend, out, wall, metric)
                rows.append(r)
                print(f"  {r['dev']} {metric}, {wall} s", flush=True)
                if base is None:
                    base = r
                else:
                    equivalence[f"{task}/{stage}/{name}"] = differences(base, r)
    write(rows, equivalence, baselines, a)


def write(rows, equivalence, baselines, a) -> None:
    res = REPO / "benchmarks" / "results"
    name = "scale-gpu" if a.gpu else "scale"
    payload = {
        "environment": environment(),
        "command": " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]),
        "settings": {
            "steps": a.steps,
            "batch_size": a.batch_size,
            "eval_every": a.eval_every,
            "max_seq_len": a.max_seq_len,
            "student": STUDENT,
        },  # fmt: skip
        "baselines": baselines,
        "rows": rows,
        "equivalence": equivalence,
    }
    (res / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    env = payload["environment"]
    lines = [
        f"# Data-parallel training: 1 process vs {a.nproc} (torchrun)",
        "",
        f"Measured on {env['cpu']} ({env['cores']} cores), torch {env['torch']}"
        + (f", GPU {env['gpu']}" if env.get("gpu") else "")
        + f". Global batch {a.batch_size}, {a.steps} steps, evaluation every {a.eval_every}, "
        f"sequence {a.max_seq_len}. Command: `{payload['command']}`",
        "",
        "| task | stage | run | nproc | backend | steps | wall s | training s | dev | dev accuracy "
        "| label loyalty | trivial | teacher |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = baselines[r["task"]]
        lines.append(
            f"| {r['task']} | {r['stage']} | {r['variant']} | {r['nproc']} | {r['backend']} | "
            f"{r['steps']} | {r['wall_s']} | {r['train_s']} | {r['dev']:.4f} {r['metric']} | "
            f"{r['dev_accuracy']:.4f} | {r['label_loyalty']:.4f} | {b['trivial']:.4f} | "
            f"{b['teacher']:.4f} |"
        )
    lines += [
        "",
        "Equivalence with the 1-process run (the other seed's gaps are the noise yardstick):",
        "",
        "| task/stage/run | max relative loss gap | max validation gap | dev gap (points) | "
        "dev accuracy gap (points) |",
        "|---|---|---|---|---|",
    ]
    for key, e in equivalence.items():
        lines.append(f"| {key} | {e['max_rel_loss_diff']} | {e['max_val_diff']} | "
                     f"{e['dev_diff_points']} | {e['dev_accuracy_diff_points']} |")  # fmt: skip
    lines += [
        "",
        "Wall time includes each command's start (imports, tokenising the training split) and, "
        "for N processes, torchrun's and every rank's start; the cores are shared, so N processes "
        "here show the overhead, not a speed-up.",
    ]
    (res / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
