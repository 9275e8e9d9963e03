"""`edgec build`: the whole pipeline for a device, one verified bundle per budget.

    edgec build --device jetson-orin-nano-8gb --task sst2 --data-dir ../shared/data -o OUT
    edgec build --device host --model DIR --recipe R.yaml --preset full -o OUT
    edgec build --device jetson --target http://HOST:9600 --token-file F -o OUT
    edgec build --print-recipe [...]    # the effective recipe, defaults filled in

Teacher fine-tune (cached) -> supernet -> search per budget -> distill -> KDLSQ -> export ->
bundle with its latency (measured here, measured by the device's agent, or predicted, each
labelled) -> OUT/report.md and report.html. Re-running the same command skips every finished stage
and resumes the first unfinished one; Ctrl-C leaves a resumable run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    from toolchain.cli.teacher import add_task_arguments

    add_task_arguments(parser)
    parser.add_argument(
        "--preset",
        choices=("quick", "full"),
        default="quick",
        help="quick (default): sized for a first run on 2 CPU cores; full: paper-scale, for a "
        "GPU. Fills only what the recipe file does not set",
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
    from toolchain.build import preset_overrides
    from toolchain.config import load_recipe, resolve_recipe

    overrides = {
        **preset_overrides(args.preset, args.recipe),
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
    from toolchain.build import Build
    from toolchain.cli.profile import predictors_dir
    from toolchain.errors import ConfigError

    if not recipe.output:
        raise ConfigError("name the output folder: -o OUT (or `output:` in the recipe)")
    spec = _spec(args, recipe)
    agent = None
    if recipe.profile.target:
        from toolchain.profile.agent import read_token

        if not recipe.profile.token_file:
            raise ConfigError("--target needs --token-file F (the agent's token)")
        agent = {
            "url": recipe.profile.target,
            "token": read_token(recipe.profile.token_file),
            "token_file": recipe.profile.token_file,
        }
    build = Build(
        recipe,
        Path(recipe.output),
        spec=spec,
        agent=agent,
        predictors_dir=str(predictors_dir(args)),
        torch_device=args.train_device,
        force=tuple(args.force_stage),
        teacher_cache=None if args.no_teacher_cache else _teacher_cache(args),
    )
    summary = build.execute()
    out = Path(recipe.output)
    print(f"\n{out / 'report.md'}")
    from toolchain.report import rows

    header, table = rows(summary)
    keep = (0, 1, 2, 4, 7, 8, 10, 11)
    print("  " + " | ".join(header[i] for i in keep))
    for r in table:
        print("  " + " | ".join(r[i] for i in keep))
    return 0 if all(b.get("built") for b in summary["bundles"]) else 3


def _teacher_cache(args) -> Path:
    import os

    if args.teacher_cache:
        return Path(args.teacher_cache)
    home = os.environ.get("EDGEC_HOME")
    return Path(home) / "teachers" if home else Path.home() / ".cache" / "edgec" / "teachers"


def _spec(args, recipe):
    """The task: --task / the recipe's, or the --*-file options (labels from the train file)."""
    from toolchain.cli.teacher import task_from_args
    from toolchain.data.tasks import get_task

    if any(getattr(args, f"{s}_file") for s in ("train", "validation", "dev")):
        args.task = None
        return task_from_args(args)
    return get_task(recipe.task)
