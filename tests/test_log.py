"""toolchain/log.py: plain progress lines off a TTY, silence with --quiet, one logger set-up."""

from __future__ import annotations

import logging

from toolchain import log
from toolchain.log import format_progress, progress, setup_logging


def test_format_progress_with_total():
    assert format_progress(40, 100, 20.0, "distill", "step") == (
        "distill: 40/100 step (40%), 2.0 step/s, 20s elapsed, ETA 30s"
    )
    assert format_progress(5, None, 2.0, "", "batch") == "5 batch, 2.5 batch/s, 2s elapsed"
    assert format_progress(0, 10, 0.0, "x", "it").endswith("ETA ?")
    assert "1h01m elapsed" in format_progress(1, 2, 3660.0, "x", "it")


def test_plain_progress_prints_lines_not_bars(capsys):
    setup_logging(bars=False)
    items = list(progress(range(5), desc="train", unit="step", interval_s=0.0))
    assert items == [0, 1, 2, 3, 4]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5 and all("\r" not in ln for ln in lines)
    assert lines[-1].startswith("train: 5/5 step (100%)")


def test_plain_progress_throttles(capsys):
    setup_logging(bars=False)
    list(progress(range(1000), desc="t", interval_s=3600))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("t: 1000/1000")  # only the final line


def test_quiet_is_silent(capsys):
    setup_logging(quiet=True)
    assert list(progress(total=3, desc="x", interval_s=0.0)) == [0, 1, 2]
    logging.getLogger("toolchain.test").info("hidden")
    logging.getLogger("toolchain.test").warning("shown")
    err = capsys.readouterr().err
    assert err.strip() == "edgec: warning: shown"
    setup_logging()


def test_setup_is_idempotent_and_levels():
    setup_logging()
    setup_logging(verbosity=1)
    logger = logging.getLogger("toolchain")
    assert sum(getattr(h, "_edgec", False) for h in logger.handlers) == 1
    assert logger.level == logging.DEBUG
    setup_logging()
    assert logger.level == logging.INFO


def test_bars_default_off_when_not_a_tty_or_in_ci(monkeypatch):
    setup_logging()
    assert log._use_bars() is False  # pytest captures stderr: not a TTY
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    monkeypatch.setenv("CI", "true")
    assert log._use_bars() is False
