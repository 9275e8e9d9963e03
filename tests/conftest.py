"""Shared test set-up: the --run-slow option, the slow/cuda markers, and CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow")
    has_cuda = _cuda_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="cuda: no GPU visible to torch"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _fresh_profile_cache():
    """Profiles are cached per folder list; tests changing EDGEC_PROFILE_PATH need a clean one."""
    from toolchain.profile import devices

    devices._load_all.cache_clear()
    yield
    devices._load_all.cache_clear()


def run_edgec(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run `python -m toolchain ARGS` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "toolchain", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


@pytest.fixture
def edgec():
    return run_edgec


@pytest.fixture
def shared_data() -> Path:
    """The real data folder (EDGEC_DATA_DIR or ../shared/data); skips when absent."""
    candidates = [os.environ.get("EDGEC_DATA_DIR"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and Path(c, "glue").is_dir():
            return Path(c)
    pytest.skip("real data not found: set EDGEC_DATA_DIR to a copy of shared/data")
