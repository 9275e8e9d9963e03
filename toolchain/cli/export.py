"""`edgec export`: a model directory (float, or a packed checkpoint of `edgec quantize`) to one
ONNX model, checked against PyTorch on real dev inputs.

    edgec export runs/student-w4a8 --task sst2 --format nbits -o runs/student-w4a8-onnx
    edgec export runs/student-w4a8 --task sst2 --format auto -o runs/student-w4a8-onnx

Formats: fp32; fp16; int8-dynamic (ONNX Runtime's dynamic INT8); int8-qdq (explicit Q/DQ with the
learned LSQ scales, TensorRT's rules); nbits (com.microsoft::MatMulNBits built from the packed
codes, nothing re-quantized); auto (every candidate that applies, timed on this host; the fastest
that passes parity wins, never slower than float). DIR gets model.onnx, the tokenizer,
export.json (parity, sizes, candidate latencies) and stage.json. A failed parity check writes
nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.teacher import add_task_arguments, task_from_args
from toolchain.config import ExportConfig
from toolchain.export import FORMATS

HELP = "export to ONNX (fp32, fp16, INT8 dynamic or Q/DQ, MatMulNBits, auto) with parity checks"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model directory (float or packed)")
    add_task_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="default: auto")
    parser.add_argument(
        "--accuracy-level",
        type=int,
        choices=(0, 1, 2, 3, 4),
        help="MatMulNBits: 4 = int8 activations inside the kernel (default), 0 = float",
    )
    parser.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build engine.plan (only where tensorrt imports: Jetson, NVIDIA GPU hosts)",
    )
    parser.add_argument(
        "--plugin-lib",
        action="append",
        default=[],
        metavar="LIB.so",
        help="TensorRT plugin library loaded before the engine build (repeatable): edgec's "
        "libedgec_trt_plugin.so runs the MatMulNBits nodes of --format nbits (INT2)",
    )
    parser.add_argument("--parity-samples", type=int, help="dev examples compared (default 256)")
    parser.add_argument("--opset", type=int, help="ONNX opset, 14-26 (default 17)")
    parser.add_argument(
        "--atol",
        type=float,
        help="max |logit difference| allowed against PyTorch (default: each format's own, "
        "1e-3 for fp32 up to 1.0 for int8-dynamic)",
    )
    parser.add_argument(
        "--device",
        help="target profile; --format auto measures on this host, so only a host profile",
    )
    parser.add_argument("--force", action="store_true", help="re-run even if the output is current")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    spec = task_from_args(args)
    cfg = ExportConfig()
    if args.accuracy_level is not None:
        cfg = replace(cfg, accuracy_level=args.accuracy_level)
    if args.parity_samples:
        cfg = replace(cfg, parity_samples=args.parity_samples)
    if args.opset is not None:
        cfg = replace(cfg, opset=args.opset)
    if args.atol is not None:
        cfg = replace(cfg, atol=args.atol)
    out = Path(args.output).resolve()
    result = api.export(
        args.model,
        out,
        task=spec,
        fmt=args.format,
        cfg=cfg,
        data_dir=args.data_dir,
        device=args.device,
        tensorrt=args.tensorrt,
        plugin_libs=tuple(args.plugin_lib),
        force=args.force,
    )
    m = result.metrics
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    state = "up to date (cached)" if result.cached else "exported"
    p = m["parity"]
    print(
        f"{out}: {state} as {m['format']} ({m['bytes'] / 2**20:.2f} MiB); parity with PyTorch: "
        f"max |logit diff| {p['max_abs_diff']:.2g}, label agreement {p['label_agreement']:.4f} "
        f"on {p['n']} dev examples"
    )
    trt = m.get("tensorrt")
    if trt:
        print(f"  TensorRT: engine.plan {'built' if trt['built'] else 'NOT built: ' + trt['why']}")
        if trt.get("onnx"):
            print(f"  TensorRT-bound copy {trt['onnx']}: {'; '.join(trt['notes'])}")
    if m["requested"] == "auto":
        for f, e in m["candidates"].items():
            lat = e.get("latency_ms_b1_s128")
            what = f"{lat:.2f} ms at batch 1, seq 128" if lat is not None else e.get("rejected")
            print(f"  {f}: {what}")
    return 0
