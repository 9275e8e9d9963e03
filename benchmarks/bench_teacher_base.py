"""A base-size teacher, all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 110M parameters, from its
PyPI parts: ``--model mpnet-base``), beside the default all-MiniLM-L6-v2, for the devices whose
budgets the default teacher fits entirely: fine-tuned on SST-2 with the quick preset's teacher
settings (8,000 examples, seq 64, one epoch) and a base-model learning rate; dev accuracy; the
teacher through optimum + ONNX Runtime INT8 measured on this host (both teachers round-robin in
one run); and on every device profile the predicted p90 (upper end of the interval) of each
teacher's shape at INT8, against the device's budgets. Writes
``benchmarks/results/teacher_base.json`` and ``teacher_base.md``.

    python benchmarks/bench_teacher_base.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_distill import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEACHERS = {  # name -> (model, shape for the predictor, learning rate)
    "all-MiniLM-L6-v2": ("default", (6, 384, 12, 1536), 1e-4),
    "all-mpnet-base-v2": ("mpnet-base", (12, 768, 12, 3072), 3e-5),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_teacher_base"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from toolchain import api
    from toolchain.config import TeacherConfig
    from toolchain.data.tasks import get_task
    from toolchain.devices.predict import Shape
    from toolchain.devices.profiles import list_profiles
    from toolchain.kinds.sequence import DevScorer, baseline
    from toolchain.target import DeviceTarget

    root = Path(args.run_dir)
    rows = {}
    for name, (model, shape, lr) in TEACHERS.items():
        cfg = TeacherConfig(max_train_samples=8000, epochs=1.0, max_seq_len=64, eval_every=125,
                            learning_rate=lr, time_budget_s=600)  # fmt: skip
        started = time.perf_counter()
        res = api.teacher(model, root / name, task="sst2", data_dir=args.data_dir, cfg=cfg)
        metrics = res.metrics
        onnx_dir = root / f"{name}-ort-int8"
        onnx = onnx_dir / "model.onnx"
        if not onnx.is_file():
            onnx_dir.mkdir(parents=True, exist_ok=True)
            baseline(res.path, onnx_dir)
        scorer = DevScorer(get_task("sst2"), res.path, args.data_dir)
        rows[name] = {
            "model": model,
            "shape": "L{}:H{}:A{}:F{}".format(*shape),
            "fine_tune_wall_s": metrics.get("wall_s"),
            "wall_s_this_run": round(time.perf_counter() - started, 1),
            "dev_accuracy": (metrics.get("dev") or {}).get("accuracy"),
            "gate": (metrics.get("gate") or {}).get("validation"),
            "ort_int8_dev_accuracy": scorer(onnx).get("accuracy"),
            "ort_int8_mb": round(onnx.stat().st_size / 2**20, 1),
            "onnx": str(onnx),
        }
    p50s: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):  # round-robin on this host, one run
        for name, row in rows.items():
            report = api.profile(Path(row["onnx"]), device="host", shapes=[(1, 128)],
                                 warmup=20, iterations=100, repeats=1)  # fmt: skip
            p50s[name].append(report["results"][0]["p50_ms"])
    for name, row in rows.items():
        row["host_p50_ms"] = min(p50s[name])
    devices = []
    for profile in list_profiles():
        if profile.name == "x86-64-host":
            continue
        target = DeviceTarget.resolve(profile.name)
        entry = {"device": profile.name, "budgets": {b.name: b.latency_ms for b in profile.budgets}}
        for name, (_, shape, _) in TEACHERS.items():
            p = target.latency_for(Shape(*shape, seq=128, batch=1), "int8")
            entry[name] = {
                "p90_ms": p["latency_ms"],
                "p90_hi_ms": p.get("latency_hi_ms"),
                "memory_hi_mb": p.get("memory_hi_mb"),
                "fits_every_budget": all(
                    p.get("latency_hi_ms", p["latency_ms"]) <= b.latency_ms for b in profile.budgets
                ),
                "label": p["label"],
            }
        devices.append(entry)
    report = {
        "teachers": rows,
        "devices": devices,
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
    }
    out = Path(args.out)
    (out / "teacher_base.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [
        "# A base-size teacher beside the default one (SST-2, quick teacher settings)",
        "",
        f"Command: `{report['command']}`; {report['environment']['cpu']}, "
        f"{report['environment']['cores']} cores, {report['date']}.",
        "",
        "| teacher | shape | dev accuracy | ORT INT8 dev | ORT INT8 MB | p50 here (ms) | "
        "fine-tune s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['shape']} | {r['dev_accuracy']:.4f} | {r['ort_int8_dev_accuracy']:.4f}"
            f" | {r['ort_int8_mb']} | {r['host_p50_ms']:.2f} | {r['fine_tune_wall_s']} |"
        )
    names = list(TEACHERS)
    lines += [
        "",
        "Predicted p90 at INT8, batch 1, seq 128 (upper end of the interval), against each "
        "device's budgets:",
        "",
        "| device | budgets (ms) | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for d in devices:
        cells = [
            f"{d[n]['p90_hi_ms'] or d[n]['p90_ms']:.2f}"
            + (" (fits every budget)" if d[n]["fits_every_budget"] else "")
            for n in names
        ]
        budgets = ", ".join(f"{k} {v:g}" for k, v in d["budgets"].items())
        lines.append(f"| {d['device']} | {budgets} | " + " | ".join(cells) + " |")
    (out / "teacher_base.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
