"""`edgec teacher`: fine-tune the teacher on a task (sequence/token classification, regression).

    edgec teacher --task sst2 [--model DIR] [--data-dir D] -o DIR
    edgec teacher --train-file train.csv --text-column text --label-column label -o DIR

DIR becomes a Hugging Face directory (model, tokenizer, metrics.json, stage.json). Re-running the
same command finds the record and does nothing; a changed option, model or data file re-runs it.
An interrupted run resumes from its last evaluation checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolchain.errors import ConfigError

# the task options are shared with `edgec bundle`, which a device with only edgec[runtime] runs:
# this module imports the recipe and data machinery where it is used, not at import time

HELP = "fine-tune the teacher on a task (sequence/token classification, regression)"
IMPLEMENTED = True


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Options naming a task and its data (shared with `edgec eval`)."""
    parser.add_argument(
        "--task",
        help="registered task (sst2, rte, cola, mrpc, stsb, qnli, qqp, "
        "mnli, wnli, conll2003, conll2000, wikitext2)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="D",
        help="data folder with the layout of shared/data (default: "
        "$EDGEC_DATA_DIR; none: fetch with the datasets library)",
    )
    table = parser.add_argument_group("your own TSV/CSV/JSONL data (instead of --task)")
    for split in ("train", "validation", "dev"):
        table.add_argument(f"--{split}-file", metavar="F", help=f"{split} split file")
    table.add_argument(
        "--text-column",
        action="append",
        metavar="COL",
        help="text column (give twice for sentence pairs)",
    )
    table.add_argument("--label-column", metavar="COL", help="label column")
    table.add_argument("--regression", action="store_true", help="labels are numbers")
    table.add_argument(
        "--labels",
        metavar="A,B,...",
        help="the class names, comma-separated, in class-index order (default: the sorted labels "
        "of --train-file, where a rare label that looks like a typo of a common one is refused)",
    )


def task_from_args(args: argparse.Namespace):
    """The TaskSpec named by --task, or built from the --*-file options."""
    from toolchain.data.readers import infer_labels
    from toolchain.data.tasks import get_task, table_task

    files = {s: getattr(args, f"{s}_file") for s in ("train", "validation", "dev")}
    files = {s: f for s, f in files.items() if f}
    if args.task and files:
        raise ConfigError("give either --task or --train-file/--dev-file, not both")
    if args.task:
        return get_task(args.task)
    if not files:
        raise ConfigError(
            "name a task: --task sst2, or --train-file F --text-column C "
            "--label-column L for your own data"
        )
    if not args.text_column or not args.label_column:
        raise ConfigError("your own data needs --text-column (once or twice) and --label-column")
    spec = table_task(
        files,
        text_columns=tuple(args.text_column),
        label_column=args.label_column,
        kind="regression" if args.regression else "classification",
        labels=_labels(args),
    )
    return infer_labels(spec) if "train" in files else spec


def _labels(args: argparse.Namespace) -> tuple[str, ...]:
    if args.labels is None:
        return ()
    if args.regression:
        raise ConfigError("--labels names classes: it does not go with --regression")
    labels = tuple(name.strip() for name in args.labels.split(","))
    if len(labels) < 2 or not all(labels) or len(set(labels)) < len(labels):
        raise ConfigError(
            f"--labels needs two or more distinct class names separated by commas, got "
            f"{args.labels!r}"
        )
    return labels


def add_run_arguments(parser: argparse.ArgumentParser, group) -> None:
    """The options every training verb shares: seed, cleaning, device, caching, output form."""
    group.add_argument("--seed", type=int)
    group.add_argument("--no-clean", action="store_true", help="skip training-data cleaning")
    parser.add_argument(
        "--train-device",
        help="torch device: cpu, cuda or cuda:N (default: cuda when available); --device names "
        "a target device profile on every verb",
    )
    parser.add_argument("--force", action="store_true", help="re-run even if the output is current")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser)
    parser.add_argument(
        "--model",
        default="default",
        metavar="DIR",
        help="model to fine-tune: a local Hugging Face directory, a .gguf file, or "
        "'default' (the installed all-MiniLM-L6-v2)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output model folder")
    parser.add_argument(
        "--recipe", metavar="R.yaml", help="take teacher_finetune and data settings from a recipe"
    )
    hp = parser.add_argument_group("training (defaults: the recipe's teacher_finetune)")
    hp.add_argument("--epochs", type=float)
    hp.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    hp.add_argument("--batch-size", type=int)
    hp.add_argument("--max-seq-len", type=int)
    hp.add_argument("--max-train-samples", type=int, help="train on a random subset this big")
    hp.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    hp.add_argument("--eval-every", type=int, help="validation every N steps")
    hp.add_argument(
        "--patience",
        type=int,
        dest="early_stopping_patience",
        help="early stopping: evaluations without improvement (0 = off)",
    )
    add_run_arguments(parser, hp)


def run(args: argparse.Namespace) -> int:
    from toolchain import api
    from toolchain.config import load_recipe

    spec = task_from_args(args)
    keys = (
        "epochs",
        "learning_rate",
        "batch_size",
        "max_seq_len",
        "max_train_samples",
        "max_steps",
        "eval_every",
        "early_stopping_patience",
    )
    overrides = {f"teacher_finetune.{k}": getattr(args, k) for k in keys}
    overrides["seed"] = args.seed
    if args.no_clean:
        overrides["data.clean"] = False
    recipe = load_recipe(args.recipe, overrides=overrides)
    out = Path(args.output).resolve()
    result = api.teacher(
        args.model,
        out,
        task=spec,
        data_dir=args.data_dir or recipe.data_dir,
        cfg=recipe.teacher_finetune,
        data_cfg=recipe.data,
        device=args.train_device,
        seed=recipe.seed,
        force=args.force,
    )
    metrics = result.metrics
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    state = "up to date (cached)" if result.cached else "fine-tuned"
    print(f"{out}: {state}")
    best = metrics.get("best_validation", {})
    print(
        f"  validation ({spec.main_metric}): {best.get(spec.main_metric, float('nan')):.4f} "
        f"at step {metrics.get('best_step')} of {metrics.get('steps')}"
    )
    if "dev" in metrics:
        dev = ", ".join(f"{k} {v:.4f}" for k, v in metrics["dev"].items() if isinstance(v, float))
        print(f"  dev: {dev} (n={metrics['dev'].get('n')})")
    print(
        f"  {metrics['train_examples']} training examples, {metrics['wall_s']} s on "
        f"{metrics['device']}",
        file=sys.stdout,
    )
    return 0
