"""`edgec bundle`: write a deployable bundle, or verify one.

    edgec bundle runs/student-w4a8-onnx --device host --task sst2 -o sst2-host.edgec
    edgec bundle runs/student-w4a8 --device jetson --task sst2 -o sst2-orin.edgec
    edgec bundle verify sst2-host.edgec          # or sst2-host.edgec.tar.gz

MODEL_OR_ONNX is an `edgec export` folder, or a model directory (exported first: auto on this
host, Q/DQ INT8 or MatMulNBits for another device). The bundle holds manifest.json (every file's
size and sha256, labels, target and budget, accuracy and loyalty from the stage that made the
model, ONNX parity, latency marked measured-on-this-host or not measured, provenance), model.onnx,
the tokenizer and a model card; NAME.edgec.tar.gz is the same, packed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.bundle.manifest import verify
from toolchain.cli.teacher import add_task_arguments, task_from_args
from toolchain.errors import ConfigError

HELP = "write or verify a deployable bundle (manifest, hashes, model card)"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="MODEL_OR_ONNX",
        help="an `edgec export` folder or a model directory; or `verify BUNDLE`",
    )
    parser.add_argument("bundle", nargs="?", metavar="BUNDLE", help="with verify: the bundle")
    parser.add_argument("--device", help="target device profile (name or alias)")
    parser.add_argument("--budget", help="the device budget this bundle is for (default: first)")
    parser.add_argument("--format", help="export format when MODEL_OR_ONNX is a model directory")
    add_task_arguments(parser)
    parser.add_argument("-o", "--output", metavar="NAME.edgec", help="the bundle folder to write")
    parser.add_argument("--no-tar", action="store_true", help="do not also write NAME.edgec.tar.gz")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run(args: argparse.Namespace) -> int:
    if args.source == "verify":
        if not args.bundle:
            raise ConfigError("usage: edgec bundle verify NAME.edgec (or NAME.edgec.tar.gz)")
        manifest = verify(args.bundle)
        if args.json:
            print(json.dumps(manifest, indent=2))
        else:
            print(f"{args.bundle}: OK ({len(manifest['files'])} files match their sha256)")
        return 0
    if not args.device or not args.output:
        raise ConfigError("edgec bundle MODEL_OR_ONNX needs --device D and -o NAME.edgec")

    manifest = api.bundle(
        args.source,
        Path(args.output),
        task=task_from_args(args),
        device=args.device,
        budget=args.budget,
        fmt=args.format,
        data_dir=args.data_dir,
        tarball=not args.no_tar,
    )
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    lat = manifest["latency"]
    print(f"{args.output}: {len(manifest['files'])} files, {manifest['model']['format']}")
    print(f"  target: {manifest['target']['device']} ({manifest['target']['budget']['name']})")
    if lat["status"] == "measured":
        print(f"  latency ({lat['label']}): p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms")
    else:
        print(f"  latency: {lat['label']}")
    return 0
