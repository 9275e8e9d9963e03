"""`edgec eval`: score a model on a task split (accuracy, F1, MCC, Pearson/Spearman, span F1,
perplexity).

    edgec eval MODEL --task sst2 [--split dev] [--data-dir D] [--json]
    edgec eval MODEL --dev-file dev.csv --text-column text --label-column label

MODEL is a local Hugging Face directory (e.g. the output of `edgec teacher`) or a .gguf file.
"""

from __future__ import annotations

import argparse
import json

from toolchain import api
from toolchain.cli.teacher import add_task_arguments, task_from_args

HELP = "evaluate a model on a task: accuracy, F1, MCC, Pearson/Spearman, span F1, perplexity"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="Hugging Face directory or .gguf file")
    add_task_arguments(parser)
    parser.add_argument(
        "--teacher",
        metavar="DIR",
        help="also score this teacher and report the model's label and probability loyalty to it",
    )
    parser.add_argument("--split", default="dev", help="train, validation, dev or test (dev)")
    parser.add_argument("--max-samples", type=int, help="score only the first N examples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run(args: argparse.Namespace) -> int:
    result = api.evaluate(
        args.model,
        task=task_from_args(args),
        split=args.split,
        data_dir=args.data_dir,
        teacher=args.teacher,
        device=args.device,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
    )
    metrics = {k: v for k, v in result.items() if k not in ("model", "task", "split", "protocol")}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['task']} {args.split}: {_fmt(metrics)}")
    if "protocol" in result:
        print(f"  protocol: {result['protocol']}")
    if "teacher" in metrics:
        print(f"  teacher: {_fmt(metrics['teacher'])}")
    return 0


def _fmt(metrics: dict) -> str:
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in metrics.items()
        if not isinstance(v, dict)
    )
