"""`edgec distill`: distil a student from the teacher (KD, RAIL-KD, GA layer mapping, ETD init),
or compress it by BERT-of-Theseus module replacing.

    edgec distill --teacher DIR --task sst2 --student-shape L3:H384:A12:F1536 \\
        --init etd-impt --mapping rail -o DIR
    edgec distill --teacher DIR --task sst2 --method theseus \\
        --student-shape L3:H384:A12:F1536 -o DIR

DIR becomes a Hugging Face directory (student, tokenizer, metrics.json with dev accuracy and
label/probability loyalty to the teacher, stage.json). Re-running the same command does nothing;
an interrupted run resumes from its last evaluation checkpoint (a GA search from its last
scored mapping).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.teacher import add_run_arguments, add_task_arguments, task_from_args
from toolchain.config import load_recipe

HELP = "distil a student from the teacher (KD, RAIL-KD, GA layer mapping, ETD init)"
IMPLEMENTED = True

_FIELDS = (
    "method",
    "student_shape",
    "init",
    "mapping",
    "rail_variant",
    "temperature",
    "kd_weight",
    "hidden_weight",
    "attention_weight",
    "embedding_weight",
    "steps",
    "batch_size",
    "grad_accumulation",
    "learning_rate",
    "max_seq_len",
    "eval_every",
    "early_stopping_patience",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher",
        required=True,
        metavar="DIR",
        help="fine-tuned teacher (e.g. the output of `edgec teacher`)",
    )
    add_task_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output student")
    parser.add_argument("--recipe", metavar="R.yaml", help="take distill settings from a recipe")
    d = parser.add_argument_group("distillation (defaults: the recipe's distill section)")
    d.add_argument(
        "--method",
        choices=("kd", "theseus"),
        help="kd (default) or theseus: BERT-of-Theseus module replacing (--student-shape gives "
        "the depth; the width stays the teacher's)",
    )
    d.add_argument("--student-shape", metavar="L3:H384:A12:F1536")
    d.add_argument(
        "--replace-start",
        type=float,
        dest="theseus_replace_start",
        help="theseus: replacement probability at step 0 (rises linearly to 1)",
    )
    d.add_argument(
        "--successor-fraction",
        type=float,
        dest="theseus_successor_fraction",
        help="theseus: share of the steps that fine-tune the successors alone",
    )
    d.add_argument("--init", choices=("random", "truncation", "etd-rand", "etd-impt"))
    d.add_argument(
        "--init-from",
        metavar="DIR",
        help="start from this model's weights and shape (e.g. a subnet of `edgec search`)",
    )
    d.add_argument("--mapping", choices=("none", "uniform", "last", "rail", "ga"))
    d.add_argument(
        "--ga-mapping-file",
        metavar="F",
        help="with --mapping ga: the mapping `edgec mapping` found (task-agnostic), reused "
        "instead of searching one for this task",
    )
    d.add_argument("--rail-variant", choices=("layer", "concat"))
    d.add_argument("--temperature", type=float)
    d.add_argument("--kd-weight", type=float, help="logit-KD share (hard loss: 1 - this)")
    d.add_argument("--hidden-weight", type=float)
    d.add_argument("--attention-weight", type=float)
    d.add_argument("--embedding-weight", type=float)
    d.add_argument("--steps", type=int)
    d.add_argument("--batch-size", type=int)
    d.add_argument("--grad-accumulation", type=int)
    d.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    d.add_argument("--max-seq-len", type=int)
    d.add_argument("--eval-every", type=int)
    d.add_argument("--patience", type=int, dest="early_stopping_patience")
    add_run_arguments(parser, d)


def run(args: argparse.Namespace) -> int:
    spec = task_from_args(args)
    overrides = {f"distill.{k}": getattr(args, k) for k in _FIELDS}
    overrides["distill.theseus.replace_start"] = args.theseus_replace_start
    overrides["distill.theseus.successor_fraction"] = args.theseus_successor_fraction
    overrides["seed"] = args.seed
    if args.ga_mapping_file:  # relative to the working directory
        overrides["distill.ga.mapping_file"] = str(Path(args.ga_mapping_file).resolve())
    if args.no_clean:
        overrides["data.clean"] = False
    recipe = load_recipe(args.recipe, overrides=overrides)
    out = Path(args.output).resolve()
    result = api.distill(
        args.teacher,
        out,
        task=spec,
        data_dir=args.data_dir or recipe.data_dir,
        cfg=recipe.distill,
        data_cfg=recipe.data,
        init_from=args.init_from,
        device=args.train_device,
        seed=recipe.seed,
        force=args.force,
    )
    m = result.metrics
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    state = "up to date (cached)" if result.cached else "distilled"
    print(
        f"{out}: {state} ({m['student_shape']}, {m['parameters']:,} parameters, "
        f"init {m['init']}, mapping {m['mapping']})"
    )
    dev = m.get("dev")
    if dev:
        metric = spec.main_metric
        print(
            f"  dev {metric}: student {dev['student'][metric]:.4f}, teacher "
            f"{dev['teacher'][metric]:.4f}"
        )
        if "label_loyalty" in dev:
            print(
                f"  loyalty: label {dev['label_loyalty']:.4f}, probability "
                f"{dev['prob_loyalty']:.4f}"
            )
    print(f"  {m['steps']} steps (best {m['best_step']}), {m['wall_s']} s on {m['device']}")
    return 0
