"""`edgec build`: the whole pipeline for a device, one verified bundle per budget.

    edgec build --device jetson-orin-nano-8gb --task sst2 --data-dir ../shared/data -o OUT
    edgec build --device host --model DIR --recipe R.yaml --preset full -o OUT
    edgec build --device jetson --target http://HOST:9600 --token-file F -o OUT
    edgec build --device jetson --target http://A:9600 --target http://B:9600 --token-file F ...
    edgec build --device jetson --pool agents.yaml -o OUT    # agents with their own tokens
    edgec build --print-recipe [...]    # the effective recipe, defaults filled in

Teacher fine-tune (cached) -> supernet -> search per budget -> distill -> KDLSQ -> export ->
bundle with its latency (measured here, measured by the device's agent, or predicted, each
labelled) -> OUT/report.md and report.html. Re-running the same command skips every finished stage
and resumes the first unfinished one; Ctrl-C leaves a resumable run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from toolchain import api
from toolchain.cli.options import add_agent_arguments, text_sources
from toolchain.cli.teacher import add_task_arguments, task_from_args
from toolchain.config import recipe_to_yaml
from toolchain.devices.budgets import resolve_recipe
from toolchain.errors import ConfigError
from toolchain.report import rows
from toolchain.schema import safe_load
from toolchain.version import __version__

HELP = "the whole pipeline for a device: one verified bundle per budget"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", metavar="R.yaml", help="recipe file (defaults when omitted)")
    parser.add_argument("--device", help="device profile name or alias (see `edgec devices`)")
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="teacher: a local Hugging Face directory, or 'default' "
        "(the installed all-MiniLM-L6-v2)",
    )

    add_task_arguments(parser)
    parser.add_argument(
        "--preset",
        choices=("quick", "standard", "full"),
        default="quick",
        help="quick (default): a first look, about 30 min on 2 CPU cores; standard: about 90 min "
        "on 2 CPU cores, the teacher fine-tuned on all the data, longer distillation; full: "
        "paper-scale, for a GPU. Fills only what the recipe file does not set",
    )
    parser.add_argument(
        "--predictors",
        metavar="DIR",
        help="fitted predictors, DEVICE.json each (default: $EDGEC_HOME/predictors or "
        "~/.cache/edgec/predictors)",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--teacher-cache",
        metavar="DIR",
        help="where fine-tuned teachers are kept and reused by later builds (default: "
        "$EDGEC_HOME/teachers or ~/.cache/edgec/teachers)",
    )
    cache.add_argument(
        "--no-teacher-cache",
        action="store_true",
        help="fine-tune the teacher inside the run directory instead",
    )
    parser.add_argument(
        "--train-device",
        help="torch device for training: cpu, cuda or cuda:N (default: cuda when available)",
    )
    parser.add_argument(
        "--budget",
        action="append",
        metavar="NAME",
        help="build only this budget of the device (repeatable)",
    )
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument(
        "--candidates",
        choices=["cvt"],
        action="append",
        help="tagging tasks: also train this kind of model and let each budget choose it "
        "(cvt: a Cross-View Training BiLSTM tagger; recipe key cvt.enabled)",
    )
    parser.add_argument(
        "--supernet",
        choices=("task", "agnostic"),
        help="task (default): a supernet trained from the task's teacher on the task's data; "
        "agnostic: one supernet trained once from the pretrained model on unlabelled text "
        "(cached beside the teachers), adapted to each task briefly (recipe key "
        "search.supernet)",
    )
    parser.add_argument(
        "--text",
        action="append",
        metavar="SRC",
        help="with --supernet agnostic: the unlabelled text, repeatable: wikitext, text "
        "(MR/SUBJ), sst2, conll, or your own text file, one sentence per line (recipe key "
        "search.agnostic_text; default wikitext, text, conll)",
    )
    parser.add_argument(
        "--labelled-fraction",
        type=float,
        metavar="F",
        help="keep the labels of this share of the training examples (0 < F <= 1), the rest "
        "is unlabelled text for CVT (recipe key data.labelled_fraction)",
    )
    add_agent_arguments(
        parser,
        metavar="URL",
        target_help="edgec agent on the device (http://HOST:9600); repeatable: a pool of agents "
        "on copies of the device, measuring candidates at once, one per agent (another takes "
        "over when one fails)",
        token_help="token file for the --target agents",
    )
    parser.add_argument("-o", "--output", metavar="OUT", help="run directory / output folder")
    parser.add_argument(
        "--force-stage",
        action="append",
        default=[],
        metavar="NAME",
        help="re-run this stage even if its record matches (repeatable)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any recipe key by its dotted name, e.g. --set distill.steps=2000 --set "
        "teacher_finetune.require_above_trivial=false (repeatable; wins over the recipe file "
        "and the preset)",
    )
    parser.add_argument(
        "--print-recipe",
        action="store_true",
        help="print the effective recipe (defaults filled in) and exit",
    )


def recipe_from_args(args: argparse.Namespace):
    """The recipe file (or defaults) with the preset and the CLI options applied on top."""
    overrides = {
        "device": args.device,
        "teacher": args.model,
        "task": args.task,
        "data_dir": args.data_dir,
        "budgets": tuple(args.budget) if args.budget else None,
        "seed": args.seed,
        "output": args.output,
        # one --target stays a single URL in the recipe; several are a list (a pool)
        "profile.target": args.target[0] if args.target and len(args.target) == 1 else args.target,
        "profile.token_file": args.token_file,
        "profile.ca_cert": args.ca_cert,
        "profile.pool": args.pool,
        "cvt.enabled": True if args.candidates and "cvt" in args.candidates else None,
        "data.labelled_fraction": args.labelled_fraction,
        "search.supernet": args.supernet,
        "search.agnostic_text": text_sources(args.text),
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. distill.steps=2000")
        overrides[key.strip()] = safe_load(value, file=f"--set {key.strip()}")
    return api.build_recipe(args.recipe, preset=args.preset, overrides=overrides)


def _note(line: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone speaks
        print(f"edgec: {line}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.print_recipe:
        return _print_recipe(args, recipe)
    summary = api.build(
        recipe,
        task=_spec(args),
        predictors=args.predictors or api.DEFAULT,
        teacher_cache=None if args.no_teacher_cache else (args.teacher_cache or api.DEFAULT),
        train_device=args.train_device,
        force=tuple(args.force_stage),
        notes=_note,
    )
    if not summary:  # under torchrun, a rank other than 0: it trained with rank 0, which reports
        return 0
    print(f"\n{Path(recipe.output) / 'report.md'}")
    if summary.get("kind") == "language-modeling":
        for b in summary["bundles"]:
            if not b.get("built"):
                print(f"  {b['budget']}: NOT BUILT: {b.get('error')}")
                continue
            lat, dev = b["latency"], b["dev"]
            print(
                f"  {b['budget']}: {b['key']} ({b['shape']}) perplexity {dev['perplexity']:.2f}"
                f" (teacher {summary['teacher']['dev']['perplexity']:.2f}), TTFT "
                f"{lat.get('ttft_ms')} ms, {lat.get('decode_tok_s')} tok/s: {b['verdict']}"
            )
        return 0 if all(b.get("built") for b in summary["bundles"]) else 3

    header, table = rows(summary)
    keep = (0, 1, 2, 4, 7, 8, 10, 11)
    print("  " + " | ".join(header[i] for i in keep))
    for r in table:
        print("  " + " | ".join(r[i] for i in keep))
    return 0 if all(b.get("built") for b in summary["bundles"]) else 3


def _print_recipe(args, recipe) -> int:
    recipe, notes = resolve_recipe(recipe, file=args.recipe)
    for note in notes:
        print(f"edgec: {note}", file=sys.stderr)
    source = args.recipe or "built-in defaults"
    header = (
        f"# effective edgec {__version__} recipe (from {source}, command-line options "
        "applied, defaults filled in)\n"
    )
    sys.stdout.write(recipe_to_yaml(recipe, header=header))
    return 0


def _spec(args):
    """Your own data files (--train-file ...): their task, labels from the train file; None for
    a registered task (the recipe's)."""
    if any(getattr(args, f"{s}_file") for s in ("train", "validation", "dev")):
        args.task = None
        return task_from_args(args)
    return None
