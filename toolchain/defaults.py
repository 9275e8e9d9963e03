"""Where edgec keeps what builds share, by default: fine-tuned teachers (and the supernets and
baselines beside them) and fitted latency predictors. ``$EDGEC_HOME`` moves them all; else
``~/.cache/edgec``. The Python API and the CLI take these defaults from here.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "EDGEC_HOME"


def edgec_home() -> Path:
    """``$EDGEC_HOME``, else ``~/.cache/edgec``."""
    home = os.environ.get(HOME_ENV)
    return Path(home) if home else Path.home() / ".cache" / "edgec"


def default_teacher_cache() -> Path:
    """Fine-tuned teachers reused by later builds (``<home>/teachers``)."""
    return edgec_home() / "teachers"


def default_predictors_dir() -> Path:
    """Fitted predictors, ``<device>.json`` each (``<home>/predictors``)."""
    return edgec_home() / "predictors"


__all__ = ["default_predictors_dir", "default_teacher_cache", "edgec_home"]
