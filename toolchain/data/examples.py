"""The examples every reader returns, the data error, and label parsing: the layer below the
file readers (:mod:`toolchain.data.readers`) and the online loader (:mod:`toolchain.data.hub`),
so that neither imports the other's caller."""

from __future__ import annotations

import math
from dataclasses import dataclass

from toolchain.data.tasks import TaskSpec
from toolchain.errors import EdgecError


class DataError(EdgecError):
    """A data file is missing or malformed."""


@dataclass(frozen=True)
class Example:
    """One sequence(-pair) example; ``label`` is a class index, a float (regression) or None."""

    text: str
    text_pair: str | None = None
    label: int | float | None = None


@dataclass(frozen=True)
class TokenExample:
    """One sentence of a token task; ``tags`` are label indices (None when unlabelled)."""

    tokens: tuple[str, ...]
    tags: tuple[int, ...] | None = None


def parse_label(spec: TaskSpec, raw: str, where: str) -> int | float | None:
    """A label string -> class index (by name or integer), float (regression) or None (unlabelled,
    e.g. GLUE test files' -1)."""
    if raw in ("", "-1", "-"):
        return None
    if spec.kind == "regression":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DataError(f"{where}: expected a finite number as the label, got {raw!r}")
        return value
    if raw in spec.labels:
        return spec.labels.index(raw)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if 0 <= value < len(spec.labels):
        return value
    raise DataError(
        f"{where}: unknown label {raw!r}; expected one of {', '.join(spec.labels)} "
        f"or an index 0..{len(spec.labels) - 1}"
    )


__all__ = ["DataError", "Example", "TokenExample", "parse_label"]
