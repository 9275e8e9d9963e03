"""Options that several verbs share, defined once (not a verb: :data:`toolchain.cli.main.VERBS`
lists those)."""

from __future__ import annotations

import argparse


def add_agent_arguments(
    parser: argparse.ArgumentParser,
    *,
    target_help: str,
    token_help: str = "the agents' token (with --target)",
    dest: str = "target",
    metavar: str = "http://HOST:9600",
    ca_cert: bool = True,
) -> None:
    """``--target`` (repeatable: a pool of agents on copies of the device), ``--token-file``,
    ``--pool FILE`` and, with ``ca_cert``, ``--ca-cert PEM``."""
    parser.add_argument("--target", dest=dest, action="append", metavar=metavar, help=target_help)
    parser.add_argument("--token-file", metavar="F", help=token_help)
    parser.add_argument(
        "--pool",
        metavar="FILE",
        help="a pool file (YAML or JSON): a list of agents, each {url, token_file, ca_cert, "
        "device}; its agents of another --device are left out",
    )
    if ca_cert:
        parser.add_argument(
            "--ca-cert",
            metavar="PEM",
            help="with an https:// --target: the agents' certificate to trust (a self-signed "
            "one); default: the system's trust store",
        )


def text_sources(given: list[str] | None) -> tuple[str, ...] | None:
    """``--text`` values as a recipe keeps them: a source name (wikitext, text, sst2, conll), or
    a file's absolute path (a path given on the command line is relative to the working
    directory); None when none was given."""
    if not given:
        return None
    from pathlib import Path

    from toolchain.data.text import TEXT_SOURCES

    return tuple(t if t in TEXT_SOURCES else str(Path(t).resolve()) for t in given)
