"""`edgec build` on several tasks, presets and devices, through the public API, judged as a user
would judge it: every bundle beside the task's trivial baseline and the teacher in the task's own
metric, each budget's verdict (measured here, or predicted for the device by the upper end of the
prediction's interval), and the speed-up over the teacher as optimum + ONNX Runtime INT8 would
ship it, measured round-robin on this host in one run. Writes ``benchmarks/results/build.json``
and ``build.md``.

    python benchmarks/bench_build.py --data-dir ../shared/data \\
        --runs sst2:quick,cola:quick,rte:quick --devices host,jetson-orin-nano-8gb
    python benchmarks/bench_build.py --data-dir ../shared/data --runs sst2:standard

Runs already in ``build.json`` for other (task, preset, device) are kept, so the slow standard
build can run on its own. All builds share one teacher cache (a device after the first reuses the
teacher and the supernet). A build whose teacher is not clearly above the trivial baseline stops
there: its row records the message, and the task's other devices are not tried (the teacher would
be trained again only to stop again).

``predictor_check``: the device latency model calibrated on one Jetson's published MLPerf anchor
and predicting another's (:func:`toolchain.devices.latency.cross_device_check`).
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

TEACHER_PROPER_SST2 = 0.8956  # benchmarks/results/teacher.md: all-MiniLM-L6-v2, 2 epochs


def _round_robin(api, onnx_files: dict[str, Path], rounds: int) -> dict[str, float]:
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
    return {k: min(v) for k, v in p50s.items()}


def _build(api, task: str, preset: str, device: str, args) -> tuple[dict, dict | None, Path]:
    """One build; (its benchmark row, its summary or None when it stopped, its folder)."""
    from toolchain.errors import EdgecError

    root = Path(args.run_dir)
    folder = root / f"{task}-{preset}-{device}"
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    recipe = api.build_recipe(
        None, preset=preset, overrides={"device": device, "task": task, "data_dir": args.data_dir}
    )
    row = {"task": task, "preset": preset, "device": device}
    started = time.perf_counter()
    try:
        summary = api.build(recipe, folder, predictors=None, teacher_cache=root / "teachers")
    except EdgecError as e:
        row.update(wall_s=round(time.perf_counter() - started, 1), error=str(e), bundles=[])
        return row, None, folder
    metric = summary["metric"]
    row.update(
        wall_s=round(time.perf_counter() - started, 1),
        stages_wall_s=_stages_wall_s(folder, summary),
        metric=metric,
        teacher_dev=(summary["teacher"]["dev"] or {}).get(metric),
        trivial_dev=(summary.get("trivial") or {}).get(metric),
        trivial=(summary.get("trivial") or {}).get("description"),
        teacher_gate=(summary.get("quality") or {}).get("teacher_gate"),
        stage_s=summary["stage_s"],
        bundles=[
            {
                "budget": b["budget"],
                "budget_ms": b.get("budget_ms"),
                "budget_mb": b.get("budget_mb"),
                "subnet": b.get("subnet"),
                "bits": b.get("bits"),
                "dev": b.get("dev"),
                "vs_teacher": b.get("vs_teacher"),
                "clearly_above_trivial": (b.get("vs_trivial") or {}).get("clearly_above"),
                "p90_ms": b.get("latency_ms"),
                "p90_hi_ms": b.get("p90_hi_ms"),
                "latency_from": b.get("latency_label"),
                "met": b.get("met"),
                "verdict": b.get("verdict"),
                "shared_with": (b.get("selection") or {}).get("shared_with"),
                "bundle": b.get("bundle"),
            }
            for b in summary["bundles"]
        ],
    )
    return row, summary, folder


def _stages_wall_s(folder: Path, summary: dict) -> float:
    """What this build took from nothing: every stage record's own wall time (a stage's record
    keeps the time it took when it ran, so a cached re-run still tells), the teacher's and the
    baseline's (kept in the shared cache) included."""
    records = list(folder.glob("*/stage.json"))
    teacher_dir = Path(summary["teacher"]["dir"])
    records.append(teacher_dir / "stage.json")
    base = (summary.get("baseline_ort_int8_teacher") or {}).get("dir")
    if base and Path(base) != folder:
        records.append(Path(base) / "stage.json")
    total = 0.0
    for rec in dict.fromkeys(records):
        if rec.is_file():
            total += json.loads(rec.read_text()).get("wall_s") or 0.0
    return round(total, 1)


def _speedups(api, row: dict, summary: dict, folder: Path, rounds: int) -> None:
    """Each built bundle's model and the ORT-INT8 teacher, round-robin on this host: the
    speed-up is a ratio of figures taken here, in one run (for a device that is not this host,
    only an indication of the relative cost, labelled so)."""
    base = summary.get("baseline_ort_int8_teacher") or {}
    if "dir" not in base:
        return
    files = {"teacher": Path(base["dir"]) / "model.onnx"}
    for b in row["bundles"]:
        if b.get("bundle"):
            files[b["budget"]] = folder / b["bundle"] / "model.onnx"
    p50 = _round_robin(api, files, rounds)
    row["ort_int8_teacher_p50_ms"] = p50["teacher"]
    row["ort_int8_teacher_dev"] = (base.get("dev") or {}).get(row["metric"])
    for b in row["bundles"]:
        if b["budget"] in p50:
            b["host_p50_ms"] = p50[b["budget"]]
            b["speedup_vs_ort_int8_teacher"] = round(p50["teacher"] / p50[b["budget"]], 2)
            b["speedup_measured_on"] = "this host (round-robin)"


def _goals(runs: list[dict], check: list[dict]) -> dict:
    goals: dict = {}
    std = [r for r in runs if (r["task"], r["preset"], r["device"]) == ("sst2", "standard", "host")]
    if std and std[0].get("bundles"):
        ok = [
            b
            for b in std[0]["bundles"]
            if b.get("dev") is not None and b["dev"] >= TEACHER_PROPER_SST2 - 0.01
        ]
        best = max(ok, key=lambda b: b.get("speedup_vs_ort_int8_teacher") or 0, default=None)
        goals["sst2_standard_3x_within_1_point_of_0.8956"] = bool(
            best and (best.get("speedup_vs_ort_int8_teacher") or 0) >= 3
        )
        goals["sst2_standard_best"] = best
    quick = [r for r in runs if r["preset"] == "quick"]
    goals["every_quick_bundle_clearly_above_trivial_and_within_floor"] = {
        f"{r['task']}/{r['device']}": (
            bool(r["bundles"])
            and all(
                b.get("clearly_above_trivial") and (b.get("vs_teacher") or -1) >= -0.02
                for b in r["bundles"]
            )
            if "error" not in r
            else f"stopped: {r['error'][:120]}"
        )
        for r in quick
    }
    monotone = {}
    for r in runs:
        if r["device"] == "host" or not r.get("bundles"):
            continue
        ordered = sorted((b for b in r["bundles"] if b.get("dev") is not None),
                         key=lambda b: b["budget_ms"])  # fmt: skip
        devs = [b["dev"] for b in ordered]
        monotone[f"{r['task']}/{r['preset']}/{r['device']}"] = devs == sorted(devs)
    goals["jetson_accuracy_never_decreases_as_budgets_loosen"] = monotone
    limits = {"quick": 30 * 60, "standard": 90 * 60}  # the presets' stated time budgets
    goals["build_within_its_preset_time_budget_from_nothing"] = {
        f"{r['task']}/{r['preset']}/{r['device']}": (
            r.get("stages_wall_s") is not None and r["stages_wall_s"] <= limits[r["preset"]]
        )
        for r in runs
        if r["preset"] in limits and "error" not in r
    }
    errors = [abs(c["error"]) for c in check]
    goals["cross_device_error_within_15pct"] = bool(errors) and max(errors) <= 0.15
    goals["cross_device_max_abs_error"] = max(errors) if errors else None
    return goals


def _markdown(report: dict) -> str:
    lines = [
        "# `edgec build` across tasks, presets and devices",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['environment']['cpu']}, {report['environment']['cores']} cores; "
        f"date {report['date']}. Host figures are measured here; device figures are "
        "predictions (p90 and the upper end of the interval that decides 'met'). A build's time "
        "is the sum of its stages' own wall times as they ran (the teacher and the baseline, "
        "shared by a task's devices, included; a later device's search loads the supernet the "
        "first trained).",
        "",
    ]
    for r in report["runs"]:
        took = r.get("stages_wall_s") or r["wall_s"]
        head = f"## {r['task']} ({r['preset']}) for {r['device']}: {took / 60:.1f} min"
        lines += [head, ""]
        if "error" in r:
            lines += [f"Stopped: {r['error']}", ""]
            continue
        lines.append(
            f"Metric {r['metric']}: teacher {r['teacher_dev']:.4f}, trivial baseline "
            f"{r['trivial_dev']:.4f} ({r['trivial']}); teacher via optimum + ORT INT8 "
            f"{r.get('ort_int8_teacher_dev') or 0:.4f} dev, p50 "
            f"{r.get('ort_int8_teacher_p50_ms') or 0:.2f} ms here."
        )
        lines += [
            "",
            f"| budget | subnet | bits | dev {r['metric']} | vs teacher | p90 ms (upper) | "
            "verdict | p50 here | x ORT-int8 teacher here |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for b in r["bundles"]:
            p90 = "-" if b.get("p90_ms") is None else f"{b['p90_ms']:.2f}"
            if b.get("p90_hi_ms") is not None:
                p90 += f" ({b['p90_hi_ms']:.2f})"
            host = "-" if b.get("host_p50_ms") is None else f"{b['host_p50_ms']:.2f}"
            speed = b.get("speedup_vs_ort_int8_teacher")
            lines.append(
                f"| {b['budget']} ({b['budget_ms']:g} ms) | {b.get('subnet') or '-'} | "
                f"{b.get('bits') or '-'} | {b['dev'] if b['dev'] is None else round(b['dev'], 4)}"
                f" | {b.get('vs_teacher')} | {p90} | {b.get('verdict')} | {host} | "
                f"{'-' if speed is None else f'{speed:.2f}x'} |"
            )
        lines.append("")
    lines += ["## Device latency model: calibrated on one Jetson, predicting another", ""]
    lines += [
        "| calibrated on | predicted | predicted ms | published ms | error |",
        "|---|---|---|---|---|",
    ]
    for c in report["predictor_check"]:
        lines.append(
            f"| {c['calibrated_on']} | {c['predicted']} | {c['predicted_ms']:.2f} | "
            f"{c['published_ms']:.2f} | {c['error']:+.1%} |"
        )
    lines += ["", "## Goals", "", "```", json.dumps(report["goals"], indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="shared/data (default: $EDGEC_DATA_DIR)")
    parser.add_argument(
        "--runs", default="sst2:quick,cola:quick,rte:quick", help="task:preset,... to build"
    )
    parser.add_argument("--devices", default="host,jetson-orin-nano-8gb")
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_build"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="delete each build's folder first")
    args = parser.parse_args()
    from toolchain import api  # the public API only: what a user's script would call

    out = Path(args.out)
    previous = out / "build.json"
    old = json.loads(previous.read_text()).get("runs", []) if previous.is_file() else []
    runs: list[dict] = []
    text = ""
    for item in args.runs.split(","):
        task, preset = item.split(":")
        stopped = None
        for device in args.devices.split(","):
            if stopped is not None:  # the teacher gate stopped this task: same teacher, same end
                note = "not run: the teacher gate stopped the first device"
                runs.append({**stopped, "device": device, "wall_s": 0.0, "note": note})
                continue
            print(f"bench_build: {task} {preset} {device}", flush=True)
            row, summary, folder = _build(api, task, preset, device, args)
            if summary is not None:
                _speedups(api, row, summary, folder, args.rounds)
            elif "not clearly better than a trivial model" in row.get("error", ""):
                stopped = row
            runs.append(row)
            print(json.dumps(row, indent=1, default=str)[:3000], flush=True)
            text = _write(out, old, runs)  # after every build: an interrupted run loses none
    print(text)
    return 0


def _write(out: Path, old: list[dict], runs: list[dict]) -> str:
    """build.json and build.md from the runs of earlier invocations (those not re-run) and
    this one's; returns the Markdown."""
    from toolchain.devices.latency import cross_device_check

    done = {(r["task"], r["preset"], r["device"]) for r in runs}
    kept = [r for r in old if (r.get("task"), r.get("preset"), r.get("device")) not in done]
    check = cross_device_check()
    report = {
        "runs": kept + runs,
        "predictor_check": check,
        "goals": _goals(kept + runs, check),
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
    }
    tmp = out / "build.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out / "build.json")
    text = _markdown(report)
    (out / "build.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
