"""`edgec report RUN_DIR`: regenerate the Markdown/HTML report of a build's run directory from
its build.json and stage records (the same files `edgec build` wrote)."""

from __future__ import annotations

import argparse

from toolchain.report import write_report

HELP = "regenerate the Markdown/HTML report of a build's run directory"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the -o folder of `edgec build`")


def run(args: argparse.Namespace) -> int:
    md, page = write_report(args.run_dir)
    print(f"{md}\n{page}")
    return 0
