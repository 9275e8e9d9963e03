"""`edgec profile`: measure latency and memory of a model against a device profile.

    edgec profile sst2-host.edgec --device host
    edgec profile runs/student-onnx/model.onnx --device host --batch 1,8,32 --seq 32,128 --json
    edgec profile runs/student --device host --runtime pytorch
    edgec profile --import-trtexec trtexec-b1s128.log --device jetson-orin-nano-8gb
    edgec profile b.edgec --device jetson --target https://A:9600 --token-file F --ca-cert A.crt

TARGET is a bundle, an ONNX file, an export folder or (with --runtime pytorch) a model directory.
The target runs in a fresh process under the device profile's protocol (warm-up, timed runs,
repeats; --warmup/--iterations/--repeats override it): p50/p90/p99, mean, throughput, the spread
of p50 over repeats, and the process's peak RSS; every budget of the profile is marked met or
missed. Figures are labelled with the machine that measured them: only this host can be measured
here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.options import add_agent_arguments
from toolchain.devices.predict import LATENCY_TERMS, FittedPredictor
from toolchain.export.timing import SHIPPED_FORMAT
from toolchain.profile.calibrate import design, measure_shapes
from toolchain.profile.runners import RUNTIMES, ProfileError

HELP = "measure latency and memory of a model against a device profile"
IMPLEMENTED = True


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", nargs="?", metavar="TARGET", help="bundle, ONNX file, export folder, model"
    )
    parser.add_argument("--device", required=True, help="device profile (this host: `host`)")
    parser.add_argument("--runtime", default="onnxruntime", choices=RUNTIMES)
    parser.add_argument("--batch", type=_ints, help="batch sizes to sweep, e.g. 1,8,32")
    parser.add_argument("--seq", type=_ints, help="sequence lengths to sweep, e.g. 32,128")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the profile's)")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument(
        "--predict",
        metavar="L3:H384:A12:F1536",
        help="predict instead of measuring: a fitted predictor of the device if one is stored "
        "(--predictors DIR), else the calibrated model of its profile; p90 with its interval, "
        "peak memory, and a label that says which",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=tuple(SHIPPED_FORMAT),
        help="with --predict: the precision predicted; with --calibrate: the precision measured "
        "(each shape timed as the graph that precision ships in: int8 as INT8 Q/DQ, int4/int2 as "
        "MatMulNBits)",
    )
    parser.add_argument(
        "--predictors",
        metavar="DIR",
        help="fitted predictors, DEVICE.json each (default: $EDGEC_HOME/predictors or "
        "~/.cache/edgec/predictors)",
    )
    parser.add_argument(
        "--calibrate",
        type=int,
        metavar="N",
        help="measure N designed shapes on this host and store its fitted predictor",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        metavar="R",
        help="with --calibrate: measure every shape R times round-robin and keep its least "
        "disturbed round (default 5)",
    )
    parser.add_argument(
        "--import-trtexec",
        action="append",
        metavar="LOG",
        help="read trtexec's output (its whole log, one per shape; repeatable) as figures "
        "measured on --device, judged against its budgets; --batch/--seq give the shape where "
        "the log names none",
    )
    add_agent_arguments(
        parser,
        dest="agent_url",
        metavar="https://HOST:9600",
        target_help="measure on the device through its `edgec agent` (TARGET must be a bundle); "
        "repeatable: a pool, another agent measures when one fails",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    if args.import_trtexec:
        return _import_trtexec(args)
    if args.calibrate:
        return _calibrate(args)
    if args.predict:
        return _predict(args)
    if not args.target:
        raise ProfileError("give a TARGET to measure, or --predict SHAPE")
    shapes = None
    if args.batch or args.seq:
        shapes = [(b, s) for b in (args.batch or [1]) for s in (args.seq or [128])]
    device = api.target(
        args.device, agent_url=args.agent_url, token_file=args.token_file, ca_cert=args.ca_cert,
        pool=args.pool,
    )  # fmt: skip
    report = api.profile(
        args.target,
        device=device,
        runtime=args.runtime,
        shapes=shapes,
        threads=args.threads,
        warmup=args.warmup,
        iterations=args.iterations,
        repeats=args.repeats,
    )
    target = Path(args.target)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{target}: {report['label']}, {report['environment']['runtime']}")
    gpu = any("device_memory_mb" in r for r in report["results"])
    print(
        "  batch  seq    p50 ms    p90 ms    p99 ms   items/s  spread%  peak RSS MB"
        + ("  device MB" if gpu else "")
    )
    for r in report["results"]:
        spread = r.get("p50_spread_pct")
        print(
            f"  {r['batch']:>5} {r['seq']:>4} {r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} "
            f"{r['p99_ms']:>9.3f} {r['throughput_per_s']:>9.1f} "
            f"{'-' if spread is None else f'{spread:.1f}':>8} {r['peak_rss_mb']:>12.1f}"
            + (f" {r.get('device_memory_mb', float('nan')):>10.1f}" if gpu else "")
        )
    for b in report["budgets"]:
        if b["verdict"] == "not measured":
            print(f"  budget {b['budget']}: not measured")
            continue
        print(f"  budget {b['budget']}: {budget_line(b)}")
    return 0


def _import_trtexec(args) -> int:
    from toolchain.profile.trtexec import import_trtexec

    shape = None
    if args.batch or args.seq:
        if len(args.batch or [1]) != 1 or len(args.seq or [128]) != 1:
            raise ProfileError("with --import-trtexec, --batch and --seq take one value each")
        shape = ((args.batch or [1])[0], (args.seq or [128])[0])
    profile = api.target(args.device).profile
    report = import_trtexec(args.import_trtexec, profile, shape=shape)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(report["label"])
    print("  batch  seq    p50 ms    p90 ms    p99 ms   items/s  GPU compute p50 ms  device MB")
    for r in report["results"]:
        gpu = (r.get("gpu_compute") or {}).get("p50_ms")
        print(
            f"  {r['batch']:>5} {r['seq']:>4} {r['p50_ms']:>9.3f} "
            f"{_num(r.get('p90_ms'), '9.3f')} {_num(r.get('p99_ms'), '9.3f')} "
            f"{_num(r.get('throughput_per_s'), '9.1f')} {_num(gpu, '19.3f')} "
            f"{_num(r.get('device_memory_mb'), '10.0f')}"
        )
        if r.get("p90_note"):
            print(f"  note: {r['p90_note']}")
    for b in report["budgets"]:
        if "peak_memory_mb" in b:
            print(f"  budget {b['budget']}: {budget_line(b)}")
        elif b["verdict"] == "not measured":
            print(f"  budget {b['budget']}: not measured (no log at its shape)")
        else:
            op = "<=" if b["latency_ms"] <= b["latency_budget_ms"] else ">"
            print(
                f"  budget {b['budget']}: {b['verdict']}: p{b['percentile']:g} "
                f"{b['latency_ms']:.2f} ms {op} {b['latency_budget_ms']:g} ms"
            )
    return 0


def _num(value, spec: str) -> str:
    return format(value, spec) if value is not None else format("-", f">{spec.split('.')[0]}")


def budget_line(b: dict) -> str:
    """'met: p90 0.58 ms <= 3 ms, peak RSS 120 MB <= 800 MB', each side with the comparison that
    holds (> where it fails)."""
    lat, lat_cap = b["latency_ms"], b["latency_budget_ms"]
    mem, mem_cap = b["peak_memory_mb"], b["memory_budget_mb"]
    return (
        f"{b['verdict']}: p{b['percentile']:g} {lat:.2f} ms {'<=' if lat <= lat_cap else '>'} "
        f"{lat_cap:g} ms, {b['memory_kind']} {mem:.0f} MB {'<=' if mem <= mem_cap else '>'} "
        f"{mem_cap:g} MB"
    )


def _predict(args) -> int:
    device = api.target(args.device, predictors=args.predictors or api.DEFAULT)
    proto = device.protocol
    shapes = [(b, s) for b in args.batch or [proto.batch] for s in args.seq or [proto.seq_len]]
    rows = api.predict(args.predict, device=device, precision=args.precision, shapes=shapes)
    if args.json:
        payload = {"device": device.name, "shape": args.predict, "rows": rows}
        print(json.dumps(payload, indent=2))
        return 0
    for r in rows:
        print(
            f"{args.predict} {args.precision} batch {r['batch']} seq {r['seq']} on {device.name}: "
            f"p{r['percentile']:g} {r['latency_ms']:.3f} ms ({r['latency_lo_ms']:.3f}-"
            f"{r['latency_hi_ms']:.3f}), peak memory {r['memory_mb']:.0f} MB (up to "
            f"{r['memory_hi_mb']:.0f}) [{r['label']}]"
        )
        if "assumed" in r:
            print(f"  assumed: {r['assumed']}")
    return 0


def _calibrate(args) -> int:
    import tempfile

    device = api.target(args.device, predictors=args.predictors or api.DEFAULT)
    profile = device.profile
    if not device.is_host:
        raise ProfileError(
            f"--calibrate measures this machine, not {profile.name}: run it on the device"
        )
    if args.calibrate < len(LATENCY_TERMS) + 2:
        raise ProfileError(f"--calibrate needs at least {len(LATENCY_TERMS) + 2} shapes")
    if args.rounds < 1:
        raise ProfileError(f"--rounds must be at least 1, got {args.rounds}")
    with tempfile.TemporaryDirectory(prefix="edgec-calibrate-") as tmp:
        rows = measure_shapes(
            design(args.calibrate, seed=0),
            runtime=args.runtime,
            workdir=Path(tmp),
            threads=args.threads,
            rounds=args.rounds,
            precision=args.precision,
        )
    predictor = FittedPredictor.fit(
        rows, device=profile.name, runtime=args.runtime, precision=args.precision
    )
    path = predictor.save(device.predictors_dir / f"{profile.name}.json")
    print(
        f"{path}: fitted on {len(rows)} shapes measured on {profile.name} at {args.precision} "
        f"({SHIPPED_FORMAT[args.precision]} graphs)"
    )
    return 0
