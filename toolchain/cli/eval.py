"""`edgec eval`: score a model on a task split (accuracy, F1, MCC, Pearson/Spearman, span F1,
perplexity).

    edgec eval MODEL --task sst2 [--split dev] [--data-dir D] [--json]
    edgec eval MODEL --dev-file dev.csv --text-column text --label-column label

MODEL is a local Hugging Face directory (e.g. the output of `edgec teacher`) or a .gguf file.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

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
    from toolchain.data.readers import load_split
    from toolchain.evaluate.evaluate import compare, evaluate
    from toolchain.models.finetune import head_for, pick_device
    from toolchain.models.loading import load_model

    spec = task_from_args(args)
    adapter = load_model(args.model, head=head_for(spec))
    adapter.model.to(pick_device(args.device))
    if spec.kind == "classification" and not spec.labels:
        # your own data without a train file: the label names the model was trained with
        id2label = adapter.model.config.id2label
        spec = replace(spec, labels=tuple(str(id2label[i]) for i in range(len(id2label))))
    examples = load_split(spec, args.split, args.data_dir)
    if args.max_samples:
        examples = examples[: args.max_samples]
    if args.teacher:
        teacher = load_model(args.teacher, head=head_for(spec))
        both = compare(
            teacher, adapter, spec, examples, batch_size=args.batch_size, max_len=args.max_seq_len
        )
        metrics = {**both.pop("student"), "teacher": both.pop("teacher"), **both}
    else:
        metrics = evaluate(
            adapter,
            spec,
            examples,
            batch_size=args.batch_size,
            max_len=args.max_seq_len,
            desc=f"{spec.name} {args.split}",
        )
    result = {"model": args.model, "task": spec.name, "split": args.split, **metrics}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{spec.name} {args.split}: {_fmt(metrics)}")
    if "teacher" in metrics:
        print(f"  teacher: {_fmt(metrics['teacher'])}")
    return 0


def _fmt(metrics: dict) -> str:
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in metrics.items()
        if not isinstance(v, dict)
    )
