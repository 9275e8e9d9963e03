"""`edgec prune`: prune a fine-tuned model, then fine-tune it under distillation from the teacher.

    edgec prune --teacher DIR --task sst2 --method structured --sparsity 0.4 -o DIR
    edgec prune --teacher DIR --task sst2 --method unstructured --sparsity 0.5 -o DIR
    edgec prune --teacher DIR --model STUDENT --task sst2 --sparsity 0.3 -o DIR

structured removes attention heads and FFN neurons by importance, so the model and its ONNX export
really shrink; unstructured zeroes the smallest encoder weights, which saves no latency or memory
in ONNX Runtime (its kernels are dense). DIR becomes a Hugging Face directory with metrics.json
(dev score, label and probability loyalty to the teacher, parameters before and after).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.teacher import add_run_arguments, add_task_arguments, task_from_args
from toolchain.config import load_recipe

HELP = "prune heads and FFN neurons (structured) or weights (unstructured), then KD fine-tune"
IMPLEMENTED = True

_FIELDS = (
    "method",
    "sparsity",
    "head_sparsity",
    "ffn_sparsity",
    "importance_samples",
    "steps",
    "batch_size",
    "learning_rate",
    "temperature",
    "kd_weight",
    "hidden_weight",
    "max_seq_len",
    "eval_every",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="DIR",
                        help="fine-tuned teacher (the model pruned, unless --model)")  # fmt: skip
    parser.add_argument("--model", metavar="DIR",
                        help="prune this model instead (e.g. a distilled student)")  # fmt: skip
    add_task_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output model")
    parser.add_argument("--recipe", metavar="R.yaml", help="take prune settings from a recipe")
    p = parser.add_argument_group("pruning (defaults: the recipe's prune section)")
    p.add_argument("--method", choices=("structured", "unstructured"))
    p.add_argument("--sparsity", type=float, help="share removed: heads+neurons, or weights")
    p.add_argument("--head-sparsity", type=float, help="structured: share of heads removed")
    p.add_argument("--ffn-sparsity", type=float, help="structured: share of FFN neurons removed")
    p.add_argument("--importance-samples", type=int)
    p.add_argument("--steps", type=int, help="KD fine-tuning steps after pruning (0: none)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    p.add_argument("--temperature", type=float)
    p.add_argument("--kd-weight", type=float)
    p.add_argument("--hidden-weight", type=float)
    p.add_argument("--max-seq-len", type=int)
    p.add_argument("--eval-every", type=int)
    add_run_arguments(parser, p)


def run(args: argparse.Namespace) -> int:
    spec = task_from_args(args)
    overrides = {f"prune.{k}": getattr(args, k) for k in _FIELDS}
    overrides["seed"] = args.seed
    if args.no_clean:
        overrides["data.clean"] = False
    recipe = load_recipe(args.recipe, overrides=overrides)
    out = Path(args.output).resolve()
    result = api.prune(args.teacher, out, task=spec, data_dir=args.data_dir or recipe.data_dir,
                       cfg=recipe.prune, data_cfg=recipe.data, model=args.model,
                       device=args.train_device, seed=recipe.seed, force=args.force)  # fmt: skip
    m = result.metrics
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    state = "up to date (cached)" if result.cached else "pruned"
    p = m["prune"]
    detail = (
        f"heads {p['heads_before']} -> {p['heads_after']}, FFN {p['ffn_before']} -> "
        f"{p['ffn_after']}"
        if m["method"] == "structured"
        else f"{p['sparsity']:.1%} of encoder weights zero ({p['note']})"
    )
    print(f"{out}: {state} ({m['method']}: {detail})")
    print(f"  parameters {m['parameters_before']:,} -> {m['parameters']:,}")
    dev = m.get("dev")
    if dev:
        metric = spec.main_metric
        trivial = (dev.get("trivial") or {}).get(metric)
        print(f"  dev {metric} (measured here, PyTorch): pruned {dev['student'][metric]:.4f}, "
              f"teacher {dev['teacher'][metric]:.4f}"
              + (f", trivial baseline {trivial:.4f}" if trivial is not None else ""))  # fmt: skip
        if "label_loyalty" in dev:
            print(f"  loyalty: label {dev['label_loyalty']:.4f}, probability "
                  f"{dev['prob_loyalty']:.4f}")  # fmt: skip
    return 0
