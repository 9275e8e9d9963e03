"""`edgec mapping`: search the teacher-to-student layer mapping once, task-agnostically (the GA's
proxy setting as the seed paper runs it), for `edgec distill --mapping ga --ga-mapping-file F` on
any task.

    edgec mapping --student-shape L3:H384:A12:F1536 --task sst2 --task cola -o mapping.json

Each candidate mapping's fitness: a student initialised from the pretrained model learns its
hidden states through the mapping on a small portion of unlabelled text, then is fine-tuned
briefly on each representative task; the mean of their validation scores. An interrupted search
resumes from F.state.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.options import text_sources
from toolchain.config import load_recipe

HELP = "search a task-agnostic layer mapping for distillation (GA, unlabelled text)"
IMPLEMENTED = True

_FIELDS = ("population", "generations", "proxy_steps", "proxy_sentences", "task_steps",
           "task_train_samples", "task_val_samples")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", metavar="DIR",
                        help="the pretrained model (default: all-MiniLM-L6-v2)")  # fmt: skip
    parser.add_argument("--student-shape", required=True, metavar="L3:H384:A12:F1536")
    parser.add_argument("--init", default="truncation", choices=("truncation", "etd-rand",
                                                                  "etd-impt"))  # fmt: skip
    parser.add_argument("--task", action="append", metavar="T",
                        help="a task of the fitness, repeatable (sst2, cola)")  # fmt: skip
    parser.add_argument("--text", action="append", metavar="SRC",
                        help="unlabelled text: wikitext, text, sst2, conll or a file")  # fmt: skip
    parser.add_argument("--data-dir", metavar="D", help="data folder (default: $EDGEC_DATA_DIR)")
    parser.add_argument("-o", "--output", required=True, metavar="F", help="the mapping file")
    parser.add_argument("--recipe", metavar="R.yaml", help="take distill.ga settings from it")
    g = parser.add_argument_group("GA (defaults: the recipe's distill.ga)")
    for f in _FIELDS:
        g.add_argument(f"--{f.replace('_', '-')}", type=int, dest=f)
    g.add_argument("--seed", type=int)
    parser.add_argument("--train-device", help="torch device: cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    overrides = {f"distill.ga.{k}": getattr(args, k) for k in _FIELDS}
    overrides["distill.ga.tasks"] = tuple(args.task) if args.task else None
    overrides["distill.ga.text"] = text_sources(args.text)
    overrides["seed"] = args.seed
    recipe = load_recipe(args.recipe, overrides=overrides)
    out = Path(args.output).resolve()
    report = api.search_mapping(
        out, student_shape=args.student_shape, model=args.model, cfg=recipe.distill.ga,
        init=args.init, data_dir=args.data_dir or recipe.data_dir,
        train_device=args.train_device, seed=recipe.seed,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{out}: mapping {report['mapping']} (student {report['student_shape']} of "
          f"{report['teacher_layers']} teacher layers), fitness "
          f"{report['fitness'][','.join(map(str, report['mapping']))]:.4f} = mean over "
          f"{', '.join(report['tasks'])}; {report['evaluations']} mappings in "
          f"{report['search_s']} s")  # fmt: skip
    print(f"  use it: edgec distill --mapping ga --ga-mapping-file {args.output} ...")
    return 0
