"""`edgec run`: predict with a bundle using ONNX Runtime and `tokenizers` alone (no torch).

    edgec run sst2-host.edgec --text "a gripping, beautifully shot film"
    edgec run sst2-host.edgec --file inputs.jsonl     # {"text": ..., "text_pair": ...} per line

    edgec run sst2-host.edgec --trust release.key.pub --text "..."   # only if that key signed it

The bundle is verified (every file's sha256, every path inside the bundle) before it runs; a .tar.gz
is unpacked safely into a temporary folder first (its members checked before a byte is written).
With --trust, it runs only if one of those keys signed it: hashes catch corruption, a signature
catches tampering. One JSON line per input: {"label": ..., "scores": {label: probability}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from toolchain.bundle.manifest import BundleError, unpack
from toolchain.bundle.sign import TrustedKeys

HELP = "run a verified bundle with ONNX Runtime alone (no torch)"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="NAME.edgec", help="bundle folder or .tar.gz")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="an input text (repeatable)")
    src.add_argument("--file", metavar="in.jsonl", help='one {"text": ...} object per line')
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--trust",
        action="append",
        metavar="KEY.pub",
        help="run the bundle only if this public key signed it (repeatable)",
    )


def _rows(args) -> list[dict]:
    if args.text:
        return [{"text": t} for t in args.text]
    rows = []
    path = Path(args.file)
    if not path.is_file():
        raise BundleError(f"input file not found: {path}")
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BundleError(f'{path}:{i}: not JSON ({e.msg}); expected {{"text": ...}}') from None
        if not isinstance(row, dict):
            raise BundleError(f'{path}:{i}: expected an object {{"text": ...}}')
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    from toolchain.bundle.runtime import BundleRunner

    trust = TrustedKeys.load(args.trust) if args.trust else None
    rows = _rows(args)
    bundle = Path(args.bundle)
    with tempfile.TemporaryDirectory(prefix="edgec-run-") as tmp:
        if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
            bundle = unpack(bundle, Path(tmp))
        runner = BundleRunner(bundle, threads=args.threads, trust=trust)
        for start in range(0, len(rows), 32):
            for pred in runner.predict(rows[start : start + 32]):
                sys.stdout.write(json.dumps(pred) + "\n")
    return 0
