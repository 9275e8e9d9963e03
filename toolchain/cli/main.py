"""The `edgec` command: the verb table and error handling.

Each verb is a module in this package with ``HELP`` (one line), ``IMPLEMENTED``, and, when
implemented, ``add_arguments(parser)`` and ``run(args) -> exit code``. Heavy imports happen inside
``run`` so that ``edgec --help`` is instant. Exit codes: 0 success, 1 error in the input or a
failed stage (a message, never a traceback), 2 usage error or a verb not implemented yet,
130 interrupted.

The training verbs take ``--nproc N``: the command is handed to torchrun
(``python -m torch.distributed.run --standalone --nproc-per-node N -m toolchain ...``), whose
processes join one process group (:mod:`toolchain.distributed`); launched by torchrun directly
(several nodes), they join the group torchrun set up. Ranks other than 0 print nothing.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

from toolchain.errors import EdgecError, NotImplementedYet
from toolchain.log import setup_logging
from toolchain.version import __version__

VERBS = (
    "build",
    "teacher",
    "distill",
    "prune",
    "quantize",
    "search",
    "supernet",
    "mapping",
    "export",
    "profile",
    "bundle",
    "keygen",
    "run",
    "agent",
    "devices",
    "eval",
    "report",
)

# the verbs that train, data-parallel under torchrun (``--nproc N``)
DISTRIBUTED_VERBS = ("build", "teacher", "distill", "prune", "quantize", "search")

# the modules of edgec[train] (setup.py): missing on a device install
TRAINING_STACK = frozenset(
    {"torch", "transformers", "optimum", "onnx", "onnxscript", "safetensors", "yaml", "tqdm",
     "matplotlib", "gguf", "accelerate", "cryptography", "datasketch"}
)  # fmt: skip

DESCRIPTION = (
    "edgec: compress a transformer (distil, quantize, search) for an edge device, export it, "
    "measure it, and ship one verified bundle per latency/memory budget."
)


def verb_module(verb: str) -> ModuleType:
    return importlib.import_module(f"toolchain.cli.{verb}")


# flags that mean something else here, with what to use instead
_RENAMED = {
    "--device": "--train-device (--device names a target device profile; the torch device "
    "of a training verb is --train-device)",
}


def suggest(flag: str, options: list[str]) -> str:
    """' Did you mean ...?' for a mistyped or renamed flag, or ''."""
    name = flag.split("=", 1)[0]
    if name in _RENAMED and _RENAMED[name].split()[0] in options:
        return f" Did you mean {_RENAMED[name]}?"
    close = difflib.get_close_matches(name, [o for o in options if o.startswith("--")], n=2)
    if not close:
        return ""
    return f" Did you mean {' or '.join(close)}?"


class Parser(argparse.ArgumentParser):
    """argparse with suggestions for a mistyped verb, flag or choice (argparse learns that only in
    Python 3.14, ``suggest_on_error``)."""

    def error(self, message: str):
        bad = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:
            choices = re.findall(r"'?([^',\s]+)'?", bad.group(3))
            close = difflib.get_close_matches(bad.group(2), choices, n=2)
            if close:
                message += f". Did you mean {' or '.join(close)}?"
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            options = [o for a in self._actions for o in a.option_strings]
            hints = [suggest(t, options) for t in unknown.group(1).split() if t.startswith("-")]
            if any(hints):
                message += "." + "".join(h for h in hints if h)
        super().error(message)


def _summary_and_details(doc: str | None) -> str:
    """A verb module's docstring less its first paragraph (the summary, which HELP says)."""
    _, _, rest = (doc or "").partition("\n\n")
    return textwrap.dedent(rest).strip("\n")


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # At the top level the defaults are set; under a verb they are SUPPRESSed so a flag given
    # before the verb is not reset by the verb's parser.
    default = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        **default,
        help="only warnings and errors; no progress output",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        **({"default": 0} if top else default),
        help="more detail (debug logging)",
    )


def _verb_of(argv: list[str]) -> str | None:
    """The verb ``argv`` names (the first word that is not an option), if it is one."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in VERBS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb, or with ``only``, of that verb alone: a device with only
    edgec[runtime] installed imports the modules of `edgec run`, `bundle` and `agent` and no
    other verb's (theirs need the training stack)."""
    modules = {verb: verb_module(verb) for verb in ((only,) if only else VERBS)}
    lines = ["verbs:"]
    for verb, mod in modules.items():
        todo = "" if mod.IMPLEMENTED else "  [not implemented yet]"
        lines.append(f"  {verb:<10} {mod.HELP}{todo}")
    lines += ["", "Run `edgec VERB --help` for a verb's options."]
    parser = Parser(
        prog="edgec",
        usage="edgec [-h] [--version] [-q] [-v] VERB [options]",
        description=textwrap.fill(DESCRIPTION, width=100),
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgec {__version__}")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", help=argparse.SUPPRESS)
    parser.verb_parsers = {}  # type: ignore[attr-defined]
    for verb, mod in modules.items():
        if mod.IMPLEMENTED:
            details = _summary_and_details(mod.__doc__)
            p = sub.add_parser(
                verb,
                prog=f"edgec {verb}",
                description=f"{mod.HELP}.\n\n{details}",
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            mod.add_arguments(p)
        else:
            p = sub.add_parser(
                verb,
                prog=f"edgec {verb}",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description=f"{mod.HELP}.\n\nNot implemented yet. Planned form:\n  {mod.PLANNED}",
            )
        _common_options(p, top=False)
        if verb in DISTRIBUTED_VERBS and mod.IMPLEMENTED:
            _distributed_options(p)
        parser.verb_parsers[verb] = p  # type: ignore[attr-defined]
    return parser


def _distributed_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data-parallel training (torchrun)")
    group.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train data-parallel on N processes of this machine, launched by torchrun (gloo on "
        "CPU, NCCL with one GPU each); same global batch and schedule as one process",
    )
    group.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="K",
        help="with --nproc: let torchrun restart all processes up to K times when one dies; they "
        "resume from the last checkpoint (default 0: fail, and a re-run resumes)",
    )


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` less ``flags`` and their values (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in flags:
            skip = True
        elif not word.startswith(tuple(f + "=" for f in flags)):
            out.append(word)
    return out


# set by `launch` for the ranks: rank 0 writes its exit code there (see `_exit_code`)
EXIT_FILE = "EDGEC_EXIT_FILE"


def launch(argv: list[str], nproc: int, max_restarts: int = 0) -> int:
    """Run ``edgec ARGV`` on ``nproc`` processes through torchrun; rank 0's exit code (torchrun
    passes on only whether every process succeeded), or torchrun's when a process crashed."""
    import tempfile

    if nproc < 1:
        raise EdgecError(f"--nproc {nproc}: give 1 or more processes")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts),
        "-m", "toolchain", *_without(argv, ("--nproc", "--max-restarts")),
    ]  # fmt: skip
    print(f"edgec: training on {nproc} processes: {' '.join(command[1:])}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edgec-launch-") as tmp:
        exit_file = Path(tmp) / "rc"
        rc = subprocess.call(command, env={**os.environ, EXIT_FILE: str(exit_file)})
        if rc == 0 and exit_file.is_file():
            return int(exit_file.read_text() or 0)
    return rc


def _exit_code(rc: int) -> int:
    """Under `launch`: rank 0 records its exit code, and an answer edgec gave (an error it
    explained: 1, a partial result: 3) leaves torchrun with success, so that it neither
    restarts the processes nor prints a traceback of its own; a crash stays a crash."""
    path = os.environ.get(EXIT_FILE)
    if not path or "WORLD_SIZE" not in os.environ:
        return rc
    if os.environ.get("RANK", "0") == "0":
        Path(path).write_text(str(rc))
    return 0 if rc in (0, 1, 3) else rc


def _join_ranks(verb: str) -> None:
    """Under torchrun: join the process group; ranks other than 0 go quiet."""
    from toolchain import distributed as dist

    if verb not in DISTRIBUTED_VERBS:
        raise EdgecError(
            f"edgec {verb} does not train: run it without torchrun (data-parallel verbs: "
            f"{', '.join(DISTRIBUTED_VERBS)})"
        )
    dist.init()
    if not dist.is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `edgec` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_verb_of(argv))
    # Verbs not implemented yet accept any arguments (and then say they are not implemented).
    args, extra = parser.parse_known_args(argv)
    if args.verb is None:
        parser.print_help(sys.stderr)
        return 2
    mod = verb_module(args.verb)
    if extra and mod.IMPLEMENTED:
        parser.verb_parsers[args.verb].error(f"unrecognized arguments: {' '.join(extra)}")

    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    setup_logging(verbosity=args.verbose, quiet=args.quiet or rank != "0")
    try:
        if not mod.IMPLEMENTED:
            raise NotImplementedYet(
                f"edgec {args.verb}: not implemented yet (planned: {mod.PLANNED})"
            )
        if getattr(args, "nproc", 1) != 1 and "WORLD_SIZE" not in os.environ:
            return launch(argv, args.nproc, args.max_restarts)
        if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
            _join_ranks(args.verb)
        return _exit_code(int(mod.run(args) or 0))
    except NotImplementedYet as e:
        print(str(e), file=sys.stderr)
        return 2
    except EdgecError as e:
        if type(e).__name__ != "RankZeroFailed":  # rank 0 says it itself
            where = f" (rank {rank})" if rank != "0" else ""
            print(f"edgec: error{where}: {e}", file=sys.stderr)
        return _exit_code(1)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAINING_STACK:
            raise
        print(
            f"edgec {args.verb}: needs {e.name}, which is not installed: this looks like a "
            "device install (edgec[runtime]: run, bundle verify, agent). Install the training "
            'stack with: pip install "edgec[train]"',
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `edgec devices | head -3`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
