"""`edgec build` with the quick preset, end to end on SST-2 for jetson-orin-nano-8gb: this host
builds and measures; the Jetson figures are predictions (its roofline), labelled so. Writes
``benchmarks/results/build.json`` and ``build.md``.

    python benchmarks/bench_build.py --data-dir ../shared/data --fresh

Three builds share one teacher cache: the first from nothing (``--fresh`` empties the run
directory), the second into a new folder once the teacher is cached, as a user's next build would
run, and a third for another device (``--other-device``); every wall time is measured. The later
builds also reuse the trained supernet kept beside the teacher (its pruning compares MACs, not a
device's latency, so it serves every device); their stage times show what each part took.

Every bundle and the teacher as optimum + ONNX Runtime INT8 would ship it are then measured on
this host at batch 1, seq 128, all round-robin in the same rounds (the least disturbed of
``--rounds``), so the speed-ups compare figures taken on one machine in one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench_distill import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _round_robin(api, onnx_files: dict[str, Path], rounds: int) -> dict[str, dict]:
    """p50 (batch 1, seq 128) of each model on this host through ``api.profile`` (a fresh
    process each): the least disturbed of ``rounds`` round-robin rounds."""
    p50s: dict[str, list[float]] = {k: [] for k in onnx_files}
    for _ in range(rounds):
        for key, path in onnx_files.items():
            report = api.profile(
                path, device="host", shapes=[(1, 128)], warmup=20, iterations=100, repeats=1
            )
            row = next(r for r in report["results"] if (r["batch"], r["seq"]) == (1, 128))
            p50s[key].append(row["p50_ms"])
    return {k: {"p50_ms": min(v), "round_p50_ms": v} for k, v in p50s.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="shared/data (default: $EDGEC_DATA_DIR)")
    parser.add_argument("--device", default="jetson-orin-nano-8gb")
    parser.add_argument("--other-device", default="jetson-orin-nx-16gb")
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_build"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--fresh", action="store_true", help="delete the run directory first (time from nothing)"
    )
    args = parser.parse_args()
    from toolchain import api  # the public API only: what a user's script would call

    root = Path(args.run_dir)
    if args.fresh and root.exists():
        shutil.rmtree(root)
    overrides = {"device": args.device, "task": "sst2", "data_dir": args.data_dir}
    recipe = api.build_recipe(None, preset="quick", overrides=overrides)
    run_dir, again, cache = root / "first", root / "teacher-cached", root / "teachers"
    # predictors=None: the Jetson latencies come from the profiles' rooflines, labelled so
    started = time.perf_counter()
    summary = api.build(recipe, run_dir, predictors=None, teacher_cache=cache)
    wall = time.perf_counter() - started
    if again.exists():
        shutil.rmtree(again)
    started = time.perf_counter()
    second = api.build(recipe, again, predictors=None, teacher_cache=cache)
    wall_cached = time.perf_counter() - started
    same = [b.get("subnet") for b in second["bundles"]] == [
        b.get("subnet") for b in summary["bundles"]
    ]
    other_recipe = api.build_recipe(
        None, preset="quick", overrides={**overrides, "device": args.other_device}
    )
    other_dir = root / "other-device"
    if other_dir.exists():
        shutil.rmtree(other_dir)
    started = time.perf_counter()
    other = api.build(other_recipe, other_dir, predictors=None, teacher_cache=cache)
    wall_other = time.perf_counter() - started

    built = [b for b in summary["bundles"] if b.get("built")]
    onnx = {b["budget"]: run_dir / b["bundle"] / "model.onnx" for b in built}
    onnx["ort-int8-teacher"] = Path(summary["baseline_ort_int8_teacher"]["dir"]) / "model.onnx"
    lat = _round_robin(api, onnx, args.rounds)
    base = summary["baseline_ort_int8_teacher"]
    base_p50 = lat["ort-int8-teacher"]["p50_ms"]
    teacher_acc = summary["teacher"]["dev"].get("accuracy")
    bundles = []
    for b in summary["bundles"]:
        row = {
            "budget": b["budget"],
            "budget_ms": b["budget_ms"],
            "built": b.get("built", False),
            "met": b.get("met"),
        }
        if b.get("built"):
            host = lat[b["budget"]]["p50_ms"]
            row.update(
                {
                    "subnet": b["subnet"],
                    "bits": b["bits"],
                    "format": b["format"],
                    "p90_ms": b["p90_ms"] if b["measured"] else None,
                    "predicted_ms": None if b["measured"] else b["latency_ms"],
                    "latency_label": b["latency_label"],
                    "dev_accuracy": b["dev_accuracy"],
                    "label_loyalty": b["label_loyalty"],
                    "bytes": b["bytes"],
                    "host_p50_ms": host,
                    "speedup_vs_ort_int8_teacher": round(base_p50 / host, 2),
                }
            )
        else:
            row["error"] = b.get("error")
        bundles.append(row)
    ok = [
        r
        for r in bundles
        if r["built"] and teacher_acc is not None and r["dev_accuracy"] >= teacher_acc - 0.02
    ]
    best = max(ok, key=lambda r: r["speedup_vs_ort_int8_teacher"], default=None)
    report = {
        "wall_s": round(wall, 1),
        "wall_s_with_teacher_cached": round(wall_cached, 1),
        "stage_s": summary["stage_s"],
        "stage_s_with_teacher_cached": second["stage_s"],
        "teacher_cached_build_chose_the_same_subnets": same,
        "supernet_from_cache": {
            "second": second["search"].get("supernet_from_cache"),
            "other_device": other["search"].get("supernet_from_cache"),
        },
        "other_device": {
            "device": other["device"],
            "wall_s": round(wall_other, 1),
            "stage_s": other["stage_s"],
            "bundles": [
                {k: b.get(k) for k in ("budget", "budget_ms", "met", "subnet", "dev_accuracy")}
                for b in other["bundles"]
            ],
        },
        "teacher_dev_accuracy": teacher_acc,
        "ort_int8_teacher_p50_ms": base_p50,
        "ort_int8_teacher_dev_accuracy": (base.get("dev") or {}).get("accuracy"),
        "bundles": bundles,
        "goals": {
            "every_budget_met": all(r["met"] for r in bundles),
            "met_by": "predicted for the device"
            if built and not built[0]["measured"]
            else "measured",
            "best_within_2_points": best,
            "best_3x_faster_within_2_points": bool(
                best and best["speedup_vs_ort_int8_teacher"] >= 3
            ),
            "first_build_30_min": wall <= 30 * 60,
            "teacher_cached_build_5_min": wall_cached <= 5 * 60,
            "other_device_build_5_min": wall_other <= 5 * 60,
        },
        "device": summary["device"],
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
    }
    out = Path(args.out)
    reused = other["search"].get("supernet_from_cache")
    (out / "build.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = [
        f"# `edgec build` quick preset: SST-2 for {summary['device']}",
        "",
        f"Measured {report['date']} on {report['environment']['cpu']} "
        f"({report['environment']['cores']} cores): {wall / 60:.1f} min wall from nothing, "
        f"{wall_cached / 60:.1f} min for a second build once the teacher and the supernet were "
        f"cached{'' if same else ' (it chose other subnets: see build.json)'}, "
        f"{wall_other / 60:.1f} min for a build for {other['device']} from the same caches "
        f"(supernet {'reused' if reused else 'trained again'}). "
        f"Teacher dev accuracy {teacher_acc:.4f}; the teacher through optimum + ONNX Runtime "
        f"dynamic INT8: p50 {base_p50:.2f} ms here, dev "
        f"{report['ort_int8_teacher_dev_accuracy']:.4f}.",
        "",
        f"| budget ({summary['device']}, p90) | subnet | bits / format | MB | dev acc | device "
        "latency | budget met | p50 here | x ORT-int8 teacher here |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in bundles:
        if not r["built"]:
            lines.append(f"| {r['budget']} ({r['budget_ms']:g} ms) | not built: {r['error']} |")
            continue
        dev_lat = (
            f"{r['predicted_ms']:.2f} ms predicted"
            if r["predicted_ms"] is not None
            else f"{r['p90_ms']:.2f} ms"
        )
        lines.append(
            f"| {r['budget']} ({r['budget_ms']:g} ms) | {r['subnet']} | {r['bits']} / "
            f"{r['format']} | {r['bytes'] / 2**20:.2f} | {r['dev_accuracy']:.4f} | {dev_lat} | "
            f"{'yes' if r['met'] else 'NO'} | {r['host_p50_ms']:.2f} ms | "
            f"{r['speedup_vs_ort_int8_teacher']:.2f}x |"
        )
    lines += [
        "",
        "Stage wall times (s), first build: "
        + ", ".join(f"{k} {v}" for k, v in summary["stage_s"].items()),
        "",
        "Stage wall times (s), teacher cached: "
        + ", ".join(f"{k} {v}" for k, v in second["stage_s"].items()),
        "",
        f"Stage wall times (s), {other['device']}: "
        + ", ".join(f"{k} {v}" for k, v in other["stage_s"].items()),
        "",
        f"{other['device']} bundles: "
        + "; ".join(
            f"{b['budget']} {b.get('subnet')} dev {b.get('dev_accuracy') or 0:.4f}"
            for b in other["bundles"]
        ),
    ]
    (out / "build.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
