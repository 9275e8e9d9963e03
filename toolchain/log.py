"""One logging set-up for edgec, and progress reporting for long work.

Progress is a tqdm bar when stderr is a terminal; otherwise (CI, a pipe, a log file) it is a plain
line every few seconds with the count, rate and ETA; with ``--quiet`` it is silent.

Example::

    setup_logging(verbosity=0, quiet=False)
    for batch in progress(loader, desc="distill", unit="step"):
        ...
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_state = {"quiet": False, "bars": None}  # bars: None = decide from the terminal
PLAIN_INTERVAL_S = 10.0


def setup_logging(verbosity: int = 0, quiet: bool = False, *, bars: bool | None = None) -> None:
    """Configure the ``toolchain`` logger (idempotent).

    Args:
        verbosity: 0 = INFO, 1+ = DEBUG.
        quiet: only warnings and errors; no progress output.
        bars: force tqdm bars on or off; None = bars only when stderr is a TTY and not in CI.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    logger = logging.getLogger("toolchain")
    logger.setLevel(level)
    if not any(getattr(h, "_edgec", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
    logger.propagate = False
    _state["quiet"] = quiet
    _state["bars"] = bars


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the call (it may be replaced)."""

    _edgec = True

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"edgec: {record.levelname.lower()}: {msg}"
        return f"edgec: {msg}"


def _use_bars() -> bool:
    if _state["bars"] is not None:
        return bool(_state["bars"])
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    interval_s: float = PLAIN_INTERVAL_S,
) -> Iterator[T]:
    """Iterate with progress output (see module docstring).

    Args:
        iterable: what to iterate; None with ``total`` gives ``range(total)``.
        total: number of items (taken from ``len(iterable)`` when it has one).
        desc: label shown before the count.
        unit: what one item is (``step``, ``batch``).
        interval_s: seconds between plain-text lines.
    """
    if iterable is None:
        if total is None:
            raise ValueError("progress() needs an iterable or a total")
        iterable = range(total)
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if _state["quiet"]:
        yield from iterable
        return
    if _use_bars():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)
        return
    yield from _plain(iterable, total, desc, unit, interval_s)


def _plain(iterable, total, desc, unit, interval_s):
    start = last = time.monotonic()
    n = 0
    for item in iterable:
        yield item
        n += 1
        now = time.monotonic()
        if now - last >= interval_s or (total is not None and n == total):
            print(format_progress(n, total, now - start, desc, unit), file=sys.stderr, flush=True)
            last = now


def format_progress(n: int, total: int | None, elapsed_s: float, desc: str, unit: str) -> str:
    """``distill: 40/100 step (40%), 2.0 step/s, 20s elapsed, ETA 30s``."""
    rate = n / elapsed_s if elapsed_s > 0 else 0.0
    head = f"{desc}: " if desc else ""
    if total:
        eta = (total - n) / rate if rate > 0 else float("inf")
        return (
            f"{head}{n}/{total} {unit} ({100 * n / total:.0f}%), {rate:.1f} {unit}/s, "
            f"{_dur(elapsed_s)} elapsed, ETA {_dur(eta)}"
        )
    return f"{head}{n} {unit}, {rate:.1f} {unit}/s, {_dur(elapsed_s)} elapsed"


def _dur(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
