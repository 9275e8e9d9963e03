"""`edgec run`: predict with a bundle using ONNX Runtime and `tokenizers` alone (no torch).

    edgec run sst2-host.edgec --text "a gripping, beautifully shot film"
    edgec run sst2-host.edgec --file inputs.jsonl     # {"text": ..., "text_pair": ...} per line

    edgec run sst2-host.edgec --trust release.key.pub --text "..."   # only if that key signed it
    edgec run wikitext2-host-balanced.edgec --prompt "The castle was" --max-tokens 40 --stop "\n"

The bundle is verified (every file's sha256, every path inside the bundle) before it runs; a .tar.gz
is unpacked safely into a temporary folder first (its members checked before a byte is written).
With --trust, it runs only if one of those keys signed it: hashes catch corruption, a signature
catches tampering. One JSON line per input: {"label": ..., "scores": {label: probability}}; for
a tagger (NER, chunking) {"words": [...], "labels": [...], "scores": [...], "spans": [{"label",
"text", "start", "end", "words", "score"}]}, each word labelled at its first sub-token (a row
may give {"tokens": [...]} instead of "text").
A language-model bundle takes --prompt instead: the continuation is streamed to stdout as it is
generated (greedy unless --temperature > 0, then --top-k/--top-p sampling, seeded by --seed),
ending at --max-tokens, the end-of-sequence token or the first --stop string; time to first token
and decode tokens/s go to stderr.
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
    src.add_argument("--prompt", help="a language-model bundle: the text to continue")
    gen = parser.add_argument_group("generation (with --prompt)")
    gen.add_argument("--max-tokens", type=int, help="new tokens at most (default: the bundle's)")
    gen.add_argument("--temperature", type=float, help="0: greedy (default); > 0: sampling")
    gen.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    gen.add_argument("--top-p", type=float, help="sample within this probability mass")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--seed", type=int, help="seed of the sampling")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    parser.add_argument(
        "--provider",
        action="append",
        metavar="NAME",
        help="ONNX Runtime execution provider, best first (repeatable): cpu, cuda, tensorrt or "
        "ORT's own names; the CPU is always added last as fallback (default: the providers the "
        "bundle lists that this onnxruntime has)",
    )
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


def _check_generation(args) -> None:
    if args.max_tokens is not None and args.max_tokens < 1:
        raise BundleError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.temperature is not None and args.temperature < 0:
        raise BundleError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 0:
        raise BundleError(f"--top-k must be >= 0, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise BundleError(f"--top-p must be in (0, 1], got {args.top_p}")


def _generate(bundle: Path, args, trust) -> int:
    from toolchain.bundle.generator import GeneratorRunner

    runner = GeneratorRunner(bundle, threads=args.threads, trust=trust, providers=args.provider)
    _say_providers(runner.session)
    run = runner.generate(
        args.prompt, max_new_tokens=args.max_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, stop=args.stop, seed=args.seed,
    )  # fmt: skip
    for piece in run:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    st = run.stats
    rate = f", {st['decode_tok_s']} decode tok/s" if "decode_tok_s" in st else ""
    sys.stderr.write(
        f"edgec run: {st['new_tokens']} new tokens after a {st['prompt_tokens']}-token prompt; "
        f"time to first token {st.get('ttft_ms')} ms{rate}; stopped by {st['stopped_by']} "
        "(measured on this machine)\n"
    )
    return 0


def _say_providers(session) -> None:
    sys.stderr.write(f"edgec run: execution providers {', '.join(session.get_providers())}\n")


def _runner(bundle: Path):
    """The runner class for the bundle's task kind (read from its manifest; verified by the
    runner itself)."""
    from toolchain.bundle.manifest import read_manifest
    from toolchain.bundle.runtime import BundleRunner
    from toolchain.bundle.tagger import TaggerRunner

    try:
        kind = read_manifest(bundle)["task"]["kind"]
    except (BundleError, KeyError, TypeError):
        return BundleRunner  # it reports what is wrong with the bundle
    return TaggerRunner if kind == "token-classification" else BundleRunner


def run(args: argparse.Namespace) -> int:
    trust = TrustedKeys.load(args.trust) if args.trust else None
    if args.prompt is not None:
        _check_generation(args)
        bundle = Path(args.bundle)
        with tempfile.TemporaryDirectory(prefix="edgec-run-") as tmp:
            if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
                bundle = unpack(bundle, Path(tmp))
            return _generate(bundle, args, trust)
    rows = _rows(args)
    bundle = Path(args.bundle)
    with tempfile.TemporaryDirectory(prefix="edgec-run-") as tmp:
        if bundle.is_file() and bundle.name.endswith((".tar.gz", ".tgz")):
            bundle = unpack(bundle, Path(tmp))
        runner = _runner(bundle)(bundle, threads=args.threads, trust=trust, providers=args.provider)
        _say_providers(runner.session)
        for start in range(0, len(rows), 32):
            for pred in runner.predict(rows[start : start + 32]):
                sys.stdout.write(json.dumps(pred) + "\n")
    return 0
