"""`edgec bundle`: write a deployable bundle, verify one, or sign one.

    edgec bundle runs/student-w4a8-onnx --device host --task sst2 -o sst2-host.edgec
    edgec bundle runs/student-w4a8 --device jetson --task sst2 -o sst2-orin.edgec
    edgec bundle verify sst2-host.edgec          # or sst2-host.edgec.tar.gz; prints the digest
    edgec bundle sign sst2-host.edgec --key release.key          # (edgec keygen release.key)
    edgec bundle verify sst2-host.edgec --trust release.key.pub  # must be signed by that key

MODEL_OR_ONNX is an `edgec export` folder, or a model directory (exported first: auto on this
host, Q/DQ INT8 or MatMulNBits for another device). The bundle holds manifest.json (every file's
size and sha256, labels, target and budget, accuracy and loyalty from the stage that made the
model, ONNX parity, latency marked measured-on-this-host or not measured, provenance), model.onnx,
the tokenizer and a model card; NAME.edgec.tar.gz is the same, packed. Its digest (the sha256 of
the canonical manifest) covers every file. Hashes catch corruption; only a signature by a key you
trust catches tampering: `sign` adds signature.json (Ed25519, over the digest) and changes no
other file (a NAME.edgec.tar.gz beside the folder is re-packed with it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain.bundle.manifest import verify_bundle
from toolchain.bundle.sign import TrustedKeys, sign_bundle
from toolchain.cli.teacher import add_task_arguments, task_from_args
from toolchain.errors import ConfigError

HELP = "write, verify or sign a deployable bundle (manifest, hashes, model card)"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="MODEL_OR_ONNX",
        help="an `edgec export` folder or a model directory; or `verify BUNDLE`, `sign BUNDLE`",
    )
    parser.add_argument("bundle", nargs="?", metavar="BUNDLE", help="with verify/sign: the bundle")
    parser.add_argument("--device", help="target device profile (name or alias)")
    parser.add_argument("--budget", help="the device budget this bundle is for (default: first)")
    parser.add_argument("--format", help="export format when MODEL_OR_ONNX is a model directory")
    add_task_arguments(parser)
    parser.add_argument("-o", "--output", metavar="NAME.edgec", help="the bundle folder to write")
    parser.add_argument("--no-tar", action="store_true", help="do not also write NAME.edgec.tar.gz")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.add_argument("--key", metavar="KEY", help="with sign: the private key (edgec keygen)")
    parser.add_argument(
        "--trust",
        action="append",
        metavar="KEY.pub",
        help="with verify: the bundle must be signed by this public key (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    if args.source in ("verify", "sign") and not args.bundle:
        raise ConfigError(f"usage: edgec bundle {args.source} NAME.edgec (or NAME.edgec.tar.gz)")
    if args.key and args.source != "sign":
        raise ConfigError("--key goes with `edgec bundle sign BUNDLE --key KEY`")
    if args.trust and args.source != "verify":
        raise ConfigError("--trust goes with `edgec bundle verify BUNDLE --trust KEY.pub`")
    if args.source == "verify":
        return _verify(args)
    if args.source == "sign":
        return _sign(args)
    if not args.device or not args.output:
        raise ConfigError("edgec bundle MODEL_OR_ONNX needs --device D and -o NAME.edgec")

    from toolchain import api  # the training stack: not on a device with edgec[runtime] only

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


def _verify(args: argparse.Namespace) -> int:
    trust = TrustedKeys.load(args.trust) if args.trust else None
    checked = verify_bundle(args.bundle, trust=trust)
    if args.json:
        print(json.dumps(checked.manifest, indent=2))
        return 0
    print(f"{args.bundle}: OK ({len(checked.manifest['files'])} files match their sha256)")
    print(f"  digest: {checked.digest}")
    if checked.key_id is None:
        print("  signature: none (hashes catch corruption, not tampering)")
    elif checked.trusted:
        print(f"  signature: key {checked.key_id[:16]}, trusted ({trust.sources[checked.key_id]})")
    else:
        print(f"  signature: key {checked.key_id[:16]}, not checked (give --trust KEY.pub)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    if not args.key:
        raise ConfigError("usage: edgec bundle sign NAME.edgec --key KEY (make one: edgec keygen)")
    record = sign_bundle(args.bundle, args.key)
    print(f"{args.bundle}: signed by key {record['key_id'][:16]}")
    print(f"  digest: {record['digest']}")
    return 0
