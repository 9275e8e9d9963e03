"""`edgec eval`: score a model on a task split (accuracy, F1, MCC, Pearson/Spearman, span F1,
perplexity).

    edgec eval MODEL --task sst2 [--split dev] [--data-dir D] [--json]
    edgec eval MODEL --dev-file dev.csv --text-column text --label-column label
    edgec eval MODEL --task sst2 --attack char --attack word --n 100 [--seed 0]

MODEL is a local Hugging Face directory (e.g. the output of `edgec teacher`) or a .gguf file.
With --attack, MODEL may also be a bundle (NAME.edgec) or an export folder (model.onnx), and the
output is its robustness: accuracy under attack, attack success rate, perturbed words and queries
per example, on a fixed sample of N examples drawn with --seed. Attacks: char (DeepWordBug-style
character edits) and word (TextFooler-style substitution; see toolchain.evaluate.attack).
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
    parser.add_argument(
        "--train-device",
        help="torch device of a PyTorch MODEL: cpu, cuda or cuda:N (default: cuda when "
        "available); --device names a target device profile on every verb",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    a = parser.add_argument_group("adversarial robustness")
    a.add_argument("--attack", action="append", metavar="NAME",
                   choices=("char", "word", "deepwordbug", "textfooler"),
                   help="run this attack (char or word; give twice for both)")  # fmt: skip
    a.add_argument("--n", type=int, default=100, help="examples attacked (100)")
    a.add_argument("--seed", type=int, default=0, help="seeds the sample and the edits (0)")
    a.add_argument("--threads", type=int, help="ONNX Runtime threads for a bundle or export")


def run(args: argparse.Namespace) -> int:
    if args.attack:
        return _attack(args)
    result = api.evaluate(
        args.model,
        task=task_from_args(args),
        split=args.split,
        data_dir=args.data_dir,
        teacher=args.teacher,
        device=args.train_device,
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


def _attack(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise SystemExit("edgec eval: --n must be at least 1")
    result = api.attack(args.model, task=task_from_args(args), attacks=tuple(args.attack),
                        n=args.n, seed=args.seed, split=args.split, data_dir=args.data_dir,
                        max_seq_len=args.max_seq_len, threads=args.threads)  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['task']} {args.split}: {result['protocol']}")
    for name in ("char", "word"):
        s = result.get(name)
        if not s:
            continue
        if isinstance(s, str):
            print(f"  {name}: {s}")
            continue
        print(
            f"  {name}: accuracy {s['accuracy']:.4f} -> under attack "
            f"{s['accuracy_under_attack']:.4f}; success rate {_pct(s['attack_success'])}, "
            f"perturbed words {_opt(s['avg_perturbed_words'])}, queries {_opt(s['avg_queries'])}"
        )
        for ex in s["examples"][:1]:
            print(f"    e.g. {ex['original']!r} -> {ex['perturbed']!r}")
    return 0


def _opt(v) -> str:
    return "n/a" if v is None else str(v)


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"
