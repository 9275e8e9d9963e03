"""Latency and memory predictors on this host: measure a designed set of encoder shapes in ONNX
Runtime (each in a fresh process), fit on the calibration set, and score on held-out shapes;
also the p50 spread over 5 repeats of one shape. Writes ``benchmarks/results/profile.json`` and
``profile.md``.

    python benchmarks/bench_profile.py --calibration 48 --holdout 24
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench_distill import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _measured(path: Path):
    """(calibration rows, held-out rows, spread stats) measured by the previous run."""
    from toolchain.devices.predict import Shape

    old = json.loads(path.read_text())
    keys = ("layers", "hidden", "heads", "ffn", "seq", "batch", "vocab")

    def rows(items):
        return [
            {
                "shape": Shape(**{k: r[k] for k in keys}),
                "latency_ms": r["latency_ms"],
                "memory_mb": r["memory_mb"],
                "stats": {"round_p50_ms": r.get("round_p50_ms")},
            }
            for r in items
        ]

    spread = {"p50_spread_pct": old["p50_spread_pct"], "repeat_p50_ms": old["spread_repeat_p50_ms"]}
    return rows(old["calibration"]), rows(old["holdout"]), spread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=48)
    parser.add_argument("--holdout", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5, help="least disturbed of R rounds")
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_profile"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument(
        "--refit-only",
        action="store_true",
        help="refit the predictor on the shapes measured last time (profile.json) and rescore",
    )
    args = parser.parse_args()
    from toolchain.devices.predict import LATENCY_TERMS, FittedPredictor, Shape, mape, roofline
    from toolchain.devices.profiles import get_profile
    from toolchain.profile.calibrate import design, measure_shapes

    started = time.perf_counter()
    shapes = design(args.calibration + args.holdout, seed=0)
    work = Path(args.run_dir)
    if args.refit_only:
        calib, held, spread = _measured(Path(args.out) / "profile.json")
    else:
        # one round-robin over every shape, so drift of the machine hits both sets alike
        rows = measure_shapes(shapes, workdir=work, warmup=10, iterations=40, rounds=args.rounds)
        calib, held = rows[: args.calibration], rows[args.calibration :]
    predictor = FittedPredictor.fit(calib, device="x86-64-host", runtime="onnxruntime")
    predictor.save(work / "x86-64-host.json")
    pred = [predictor.predict(r["shape"]) for r in held]
    lat_mape = mape([p["latency_ms"] for p in pred], [r["latency_ms"] for r in held])
    mem_mape = mape([p["memory_mb"] for p in pred], [r["memory_mb"] for r in held])
    spread_shape = Shape(layers=3, hidden=384, heads=6, ffn=1536, seq=128, batch=1, vocab=30522)
    if not args.refit_only:
        spread = measure_shapes([spread_shape], workdir=work, iterations=100, repeats=5, rounds=1)
        spread = spread[0]["stats"]
    host = get_profile("host")
    try:
        roof = roofline(host, spread_shape, "fp32")
    except ValueError as e:  # the host profile reads no GHz or bandwidth it cannot measure
        roof = {"unavailable": str(e)}
    report = {
        "measured_in_this_run": not args.refit_only,  # else refit on the last run's shapes
        "latency_terms": list(LATENCY_TERMS),
        "latency_mape": round(lat_mape, 3),
        "memory_mape": round(mem_mape, 3),
        "n_calibration": len(calib),
        "n_holdout": len(held),
        "p50_spread_pct": spread.get("p50_spread_pct"),
        "spread_shape": asdict(spread_shape),
        "spread_repeat_p50_ms": spread.get("repeat_p50_ms"),
        "roofline_for_spread_shape": roof,
        "predictor": asdict(predictor),
        "holdout": [
            {
                **asdict(r["shape"]),
                "latency_ms": r["latency_ms"],
                "memory_mb": r["memory_mb"],
                "round_p50_ms": r.get("stats", {}).get("round_p50_ms"),
                "predicted_latency_ms": p["latency_ms"],
                "predicted_memory_mb": p["memory_mb"],
            }
            for r, p in zip(held, pred, strict=True)
        ],
        "calibration": [
            {
                **asdict(r["shape"]),
                "latency_ms": r["latency_ms"],
                "memory_mb": r["memory_mb"],
                "round_p50_ms": r.get("stats", {}).get("round_p50_ms"),
            }
            for r in calib
        ],
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    (out / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Latency and memory predictors (this host, ONNX Runtime fp32)",
        "",
        f"Measured {report['date']} on {report['environment']['cpu']} "
        f"({report['environment']['cores']} cores); every shape in a fresh process.",
        "",
        "| calibration shapes | held-out shapes | latency MAPE | memory MAPE "
        "| p50 spread (5 repeats) |",
        "|---|---|---|---|---|",
        f"| {len(calib)} | {len(held)} | {lat_mape:.2f}% | {mem_mape:.2f}% | "
        f"{report['p50_spread_pct']}% |",
        "",
        "| held-out shape (L/H/F/V, batch x seq) | measured ms | predicted ms | measured MB "
        "| predicted MB |",
        "|---|---|---|---|---|",
    ]
    for h in report["holdout"]:
        lines.append(
            f"| {h['layers']}/{h['hidden']}/{h['ffn']}/{h['vocab']}, {h['batch']}x{h['seq']} | "
            f"{h['latency_ms']:.3f} | {h['predicted_latency_ms']:.3f} | {h['memory_mb']:.1f} | "
            f"{h['predicted_memory_mb']:.1f} |"
        )
    (out / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:9]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
