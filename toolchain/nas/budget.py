"""The search for one budget, over a trained supernet. It sees only a scorer (accuracy with
inherited weights), a predictor (latency and memory of an arch at the budget's shape) and a
measurement callback: whoever calls it decides how latency is predicted and measured (the device
target of a build), so this module imports nothing above :mod:`toolchain.nas`.

Evolution under the predicted budget, then a greedy descent towards cheaper subnets within
``accuracy_tolerance`` of the best, then the ``measure_top_k`` fastest of those measured (where the
device can be measured) and the fastest that meets the budget chosen.

Example::

    outcome = search_budget(space, scorer, predict, measure, budget, cfg, seed=0)
    if outcome.met: print(outcome.arch, outcome.candidates)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolchain.config import BudgetSpec, SearchConfig
from toolchain.errors import EdgecError
from toolchain.nas.results import BudgetUnmet
from toolchain.nas.search import evolve, shrink
from toolchain.nas.space import Arch, SearchSpace

log = logging.getLogger(__name__)

Predict = Callable[[Arch, BudgetSpec], dict]  # -> {"latency_ms", "memory_mb", "label"}
Measure = Callable[[Arch, BudgetSpec], "dict | None"]  # -> measured figures, None: cannot


@dataclass
class Searched:
    """The outcome of one budget's search before its subnet is extracted."""

    arch: Arch
    best: dict  # the chosen candidate
    candidates: list[dict]
    ranked: list[tuple[Arch, float]]
    near: int  # subnets within the tolerance
    descent: dict
    measured_note: str
    search_s: float

    met = True


def search_budget(
    space: SearchSpace,
    scorer: Callable[[Arch], float],
    predict: Predict,
    measure: Measure,
    budget: BudgetSpec,
    cfg: SearchConfig,
    *,
    seed: int,
    state_path: Path | None = None,
    note: Callable[[int], str] = lambda n: "",
) -> Searched | BudgetUnmet:
    """Search ``space`` for ``budget``; a :class:`BudgetUnmet` when no subnet fits it.

    Args:
        predict: the latency/memory prediction of an arch at the budget's batch and sequence.
        measure: real figures of an arch (``p50_ms``, ``p90_ms``, ``verdict``, ``label`` ...),
            or None where the device cannot be measured.
        note: what to say about the measurement of ``n`` candidates.
    """
    t0 = time.perf_counter()

    def feasible(arch: Arch) -> bool:
        p = predict(arch, budget)
        memory_ok = p.get("memory_mb") is None or p["memory_mb"] <= budget.memory_mb
        return p["latency_ms"] <= budget.latency_ms and memory_ok

    try:
        ranked = evolve(
            space, scorer, feasible, cfg, seed=seed, state_path=state_path,
            desc=f"search {budget.name}",
        )  # fmt: skip
    except EdgecError as e:  # this budget cannot be met; the others are still searched
        smallest = space.smallest()
        log.warning("%s: %s", budget.name, e)
        closest = {
            "subnet": str(smallest),
            "predicted": predict(smallest, budget),
            "accuracy_inherited": scorer(smallest),
        }
        return BudgetUnmet(error=str(e), closest=closest)
    near, descent = shrink(
        space,
        ranked,
        scorer,
        feasible,
        lambda a: predict(a, budget)["latency_ms"],
        tolerance=cfg.accuracy_tolerance,
        evaluations=cfg.shrink_evaluations,
    )
    candidates = [  # the fastest of those within the tolerance of the best accuracy
        {**arch.as_dict(), "accuracy": acc, "predicted": predict(arch, budget)}
        for arch, acc in near[: max(1, cfg.measure_top_k)]
    ]
    measured_note = _measure(candidates, measure, budget, cfg, note)
    best = choose(candidates, cfg.accuracy_tolerance)
    return Searched(
        arch=Arch.parse(best["arch"]),
        best=best,
        candidates=candidates,
        ranked=ranked,
        near=len(near),
        descent=descent,
        measured_note=measured_note,
        search_s=round(time.perf_counter() - t0, 1),
    )


def _measure(candidates: list[dict], measure: Measure, budget, cfg, note) -> str:
    """Adds ``measured`` to each candidate the device could measure; says what was done."""
    if cfg.measure_top_k == 0:
        return "not measured (measure_top_k is 0)"
    for c in candidates:
        figures = measure(Arch.parse(c["arch"]), budget)
        if figures is None:
            break  # the device cannot be measured: every candidate stays a prediction
        c["measured"] = figures
    return note(len(candidates))


def choose(candidates: list[dict], tolerance: float = 0.0) -> dict:
    """Among the candidates that fit (measured to meet the budget where measured, else predicted
    to), those within ``tolerance`` of the best accuracy, the fastest (measured p50 where
    measured, else predicted). If every measured candidate missed, the one with the lowest
    measured latency (its record says it missed)."""
    meas = [c for c in candidates if "measured" in c]
    pool = [c for c in meas if c["measured"]["verdict"] == "met"] if meas else candidates
    if meas and not pool:
        return min(meas, key=lambda c: c["measured"]["p90_ms"])
    best = max(c["accuracy"] for c in pool)
    near = [c for c in pool if c["accuracy"] >= best - tolerance]

    def latency(c):
        return c["measured"]["p50_ms"] if "measured" in c else c["predicted"]["latency_ms"]

    return min(near, key=lambda c: (latency(c), -c["accuracy"]))


__all__ = ["Searched", "choose", "search_budget"]
