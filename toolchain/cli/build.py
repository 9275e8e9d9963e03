"""`edgec build`: the whole pipeline for a device, one verified bundle per budget.

    edgec build --device jetson [--model DIR] [--task sst2] [--recipe R.yaml] -o OUT
    edgec build --print-recipe [...]    # the effective recipe, defaults filled in

The recipe is loaded and validated now; the stages it runs land with the stage issues, so a build
without ``--print-recipe`` says it is not implemented yet (after validating the recipe).
"""

from __future__ import annotations

import argparse
import sys

from toolchain.errors import NotImplementedYet

HELP = "the whole pipeline for a device: one verified bundle per budget"
IMPLEMENTED = True  # --print-recipe works; running the stages is not implemented yet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", metavar="R.yaml", help="recipe file (defaults when omitted)")
    parser.add_argument("--device", help="device profile name or alias (see `edgec devices`)")
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="teacher: a local Hugging Face directory, or 'default' "
        "(the installed all-MiniLM-L6-v2)",
    )
    parser.add_argument("--task", help="task name, e.g. sst2")
    parser.add_argument(
        "--data-dir",
        metavar="D",
        help="data folder with the layout of shared/data (default: $EDGEC_DATA_DIR)",
    )
    parser.add_argument(
        "--budget",
        action="append",
        metavar="NAME",
        help="build only this budget of the device (repeatable)",
    )
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument(
        "--target", metavar="URL", help="edgec agent on the device (http://HOST:9600)"
    )
    parser.add_argument("--token-file", metavar="F", help="token file for the agent")
    parser.add_argument("-o", "--output", metavar="OUT", help="run directory / output folder")
    parser.add_argument(
        "--force-stage",
        action="append",
        default=[],
        metavar="NAME",
        help="re-run this stage even if its record matches (repeatable)",
    )
    parser.add_argument(
        "--print-recipe",
        action="store_true",
        help="print the effective recipe (defaults filled in) and exit",
    )


def recipe_from_args(args: argparse.Namespace):
    """Load the recipe file (or defaults) with the CLI options applied on top, then resolve it."""
    from toolchain.config import load_recipe, resolve_recipe

    overrides = {
        "device": args.device,
        "teacher": args.model,
        "task": args.task,
        "data_dir": args.data_dir,
        "budgets": tuple(args.budget) if args.budget else None,
        "seed": args.seed,
        "output": args.output,
        "profile.target": args.target,
        "profile.token_file": args.token_file,
    }
    recipe = load_recipe(args.recipe, overrides=overrides)
    return resolve_recipe(recipe, file=args.recipe)


def run(args: argparse.Namespace) -> int:
    from toolchain import __version__
    from toolchain.config import recipe_to_yaml

    recipe, notes = recipe_from_args(args)
    for note in notes:
        print(f"edgec: {note}", file=sys.stderr)
    if args.print_recipe:
        source = args.recipe or "built-in defaults"
        header = (
            f"# effective edgec {__version__} recipe (from {source}, command-line options "
            "applied, defaults filled in)\n"
        )
        sys.stdout.write(recipe_to_yaml(recipe, header=header))
        return 0
    raise NotImplementedYet(
        "edgec build: not implemented yet: the recipe is valid, but the pipeline stages (teacher, "
        "search, distill, quantize, export, profile, bundle) land in later issues. "
        "`edgec build --print-recipe` shows what the build will run."
    )
