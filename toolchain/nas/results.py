"""Typed results of the search stage, as later stages read them.

The search stage's record keeps them as plain JSON (its ``metrics``, also ``search.json``); a
build reads them back with :meth:`SearchResult.from_metrics` instead of indexing dicts, so a key
renamed here is renamed everywhere.

Example::

    result = SearchResult.from_metrics(run.record("search")["metrics"])
    for name, outcome in result.budgets.items():
        if outcome.met: print(name, outcome.subnet, outcome.model)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any


def subnet_key(subnet: str) -> str:
    """A subnet's file-name form: ``L[1,3,5]:H384:A12:F1536`` -> ``L1.3.5-H384-A12-F1536`` (its
    folder under the search stage's ``subnets/``, and its stages' names in a build)."""
    layers, rest = re.fullmatch(r"L\[([\d,]+)\]:(.*)", subnet).groups()
    return "L" + layers.replace(",", ".") + "-" + rest.replace(":", "-")


@dataclass(frozen=True)
class BudgetChoice:
    """The subnet chosen for one budget, and how it was chosen."""

    budget: dict  # latency_ms, percentile, memory_mb, batch, seq_len
    subnet: str  # the arch, e.g. L[0,2,5]:H320:A10:F384
    shape: str  # the plain model's shape, e.g. L3:H320:A10:F384
    params: int
    accuracy_inherited: float
    predicted: dict  # latency_ms, memory_mb, label
    measured: dict | None
    measured_note: str
    candidates: list
    best_accuracy_inherited: float
    within_tolerance: int
    descent: dict
    scored: int
    search_s: float
    model: str  # the extracted subnet, relative to the search stage's folder
    # the shortlist of every budget that fits this one, each {"arch", "shape", "params",
    # "accuracy_inherited", "predicted", "measured", "model"}: the build distils them and
    # chooses on the score after distillation (empty in records of older searches)
    finalists: list = field(default_factory=list)

    met = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BudgetUnmet:
    """A budget no subnet of the space fits: why, and the closest subnet."""

    error: str
    closest: dict = field(default_factory=dict)  # subnet, predicted, accuracy_inherited

    met = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchResult:
    """Everything the search stage reports (the record's ``metrics``)."""

    task: str
    device: str
    teacher: str
    space: str
    space_size: int
    supernet: dict  # steps, ..., train_s, cached (the cache folder, when loaded from one)
    pruning: dict | None
    budgets: dict[str, BudgetChoice | BudgetUnmet]
    pareto_png: str | None
    wall_s: float
    vocab: int | None = None  # the teacher's vocabulary, which the latency predictions assumed

    def to_metrics(self) -> dict:
        out: dict[str, Any] = asdict(self)
        out["budgets"] = {k: v.to_dict() for k, v in self.budgets.items()}
        return out

    @classmethod
    def from_metrics(cls, metrics: dict) -> SearchResult:
        budgets = {
            name: BudgetUnmet(**r) if "error" in r else BudgetChoice(**r)
            for name, r in metrics["budgets"].items()
        }
        return cls(**{**metrics, "budgets": budgets})


__all__ = ["BudgetChoice", "BudgetUnmet", "SearchResult", "subnet_key"]
