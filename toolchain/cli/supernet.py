"""`edgec supernet`: train the task-agnostic supernet once, from the pretrained model, on
unlabelled text; `edgec search --agnostic DIR` (or `edgec build --supernet agnostic`, which keeps
its own in the teacher cache) then adapts it to any task.

    edgec supernet --model default --text wikitext --text my_sentences.txt -o runs/agnostic

DIR/supernet/ is the supernet: a headless Hugging Face directory plus supernet.json (the search
space, the units' order and how it was trained). Each block of teacher layers learns, on the
teacher's own input, to reproduce the teacher's output at every width and depth the search space
holds (NAS-BERT's block-wise distillation). Re-running the same command does nothing; an
interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolchain import api
from toolchain.cli.options import text_sources
from toolchain.config import load_recipe

HELP = "train the task-agnostic supernet (once, on unlabelled text) for any task"
IMPLEMENTED = True

_FIELDS = ("agnostic_steps", "agnostic_block_layers", "agnostic_attention_weight",
           "agnostic_max_sentences", "sandwich", "learning_rate", "batch_size",
           "max_seq_len")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", metavar="DIR",
        help="the pretrained model (not fine-tuned): a local Hugging Face directory or "
        "'default' (the installed all-MiniLM-L6-v2)",
    )  # fmt: skip
    parser.add_argument(
        "--text", action="append", metavar="SRC",
        help="unlabelled text, repeatable: wikitext, text (MR/SUBJ), sst2, conll, or your own "
        "text file, one sentence per line (default: wikitext, text, conll)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", metavar="D", help="data folder with the layout of shared/data "
        "(default: $EDGEC_DATA_DIR)",
    )  # fmt: skip
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--recipe", metavar="R.yaml", help="take search settings from a recipe")
    s = parser.add_argument_group("training (defaults: the recipe's search section)")
    s.add_argument("--steps", type=int, dest="agnostic_steps", help="block-wise steps (2000)")
    s.add_argument("--block-layers", type=int, dest="agnostic_block_layers",
                   help="teacher layers per block (2)")  # fmt: skip
    s.add_argument("--attention-weight", type=float, dest="agnostic_attention_weight")
    s.add_argument("--max-sentences", type=int, dest="agnostic_max_sentences")
    s.add_argument("--sandwich", type=int, help="subnets trained per step")
    s.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--max-seq-len", type=int)
    s.add_argument("--seed", type=int)
    parser.add_argument("--train-device", help="torch device: cpu, cuda or cuda:N")
    parser.add_argument("--force", action="store_true", help="re-run even if the output is current")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run(args: argparse.Namespace) -> int:
    overrides = {f"search.{k}": getattr(args, k) for k in _FIELDS}
    overrides["search.agnostic_text"] = text_sources(args.text)
    overrides["seed"] = args.seed
    recipe = load_recipe(args.recipe, overrides=overrides)
    out = Path(args.output).resolve()
    result = api.agnostic_supernet(
        out, model=args.model, cfg=recipe.search, data_dir=args.data_dir or recipe.data_dir,
        train_device=args.train_device, seed=recipe.seed, force=args.force,
    )  # fmt: skip
    m = result.metrics
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    state = "up to date (cached)" if result.cached else "trained"
    print(f"{out / m['supernet']}: {state}, {m['steps']} steps on {m['sentences']:,} sentences "
          f"({', '.join(m['text'])}) in {m['wall_s']} s")  # fmt: skip
    print(f"  space: {m['space']}")
    if m.get("loss_history"):
        print(f"  block-wise loss: {m['loss_history'][0][1]} -> {m['loss_history'][-1][1]}")
    return 0
