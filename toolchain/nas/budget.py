"""The search for one budget, over a trained supernet. It sees only a scorer (accuracy with
inherited weights), a predictor (latency and memory of an arch at the budget's shape) and a
measurement callback: whoever calls it decides how latency is predicted and measured (the device
target of a build), so this module imports nothing above :mod:`toolchain.nas`.

Evolution under the predicted budget (a prediction fits when the upper end of its interval does),
then a greedy descent towards cheaper subnets within ``accuracy_tolerance`` of the best; the
shortlist (``finalists``): the most accurate subnets that fit and the fastest within the
tolerance, measured where the device can be measured. Inherited-weight accuracy only ranks: the
build distils the shortlists of all budgets and :func:`choose_per_budget` picks, per budget, the
most accurate after distillation among those that fit it (near-ties to the faster; a looser
budget never gets a less accurate subnet than a tighter one).

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
# archs -> their measured figures in order (None: cannot); the caller decides whether they are
# measured at once (a pool of agents) or one after another (this host)
Measure = Callable[[list[Arch], BudgetSpec], "list[dict | None]"]


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
        measure: real figures of each of a list of archs (``p50_ms``, ``p90_ms``, ``verdict``,
            ``label`` ...), or None where the device cannot be measured; the whole top-k is
            handed over at once, so that a pool of agents measures it concurrently.
        note: what to say about the measurement of ``n`` candidates.
    """
    t0 = time.perf_counter()

    def feasible(arch: Arch) -> bool:
        return fits(predict(arch, budget), None, budget)

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
    candidates = [
        {**arch.as_dict(), "accuracy": acc, "predicted": predict(arch, budget)}
        for arch, acc in shortlist(ranked, near, cfg.finalists)
    ]
    measured_note = _measure(candidates, measure, budget, cfg, note)
    best = choose(candidates, 0.0, budget)  # provisional: the build chooses after distilling
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


def shortlist(
    ranked: list[tuple[Arch, float]], near: list[tuple[Arch, float]], k: int
) -> list[tuple[Arch, float]]:
    """The ``k`` finalists of a budget: the ``k - 1`` most accurate subnets that fit (inherited
    weights; all ``k`` when ``k`` is 1) and the fastest within the tolerance (``near[0]``),
    without repeats. Inherited weights under-rate small subnets, hence the fast one."""
    picks = list(ranked[: max(1, k - 1)]) + ([near[0]] if near and k > 1 else [])
    out, seen = [], set()
    for arch, acc in picks + list(ranked[max(1, k - 1) :]):
        if arch not in seen and len(out) < k:
            seen.add(arch)
            out.append((arch, acc))
    return out


def fits(predicted: dict | None, measured: dict | None, budget: BudgetSpec) -> bool:
    """Whether a subnet fits ``budget``: by its measured figures where measured (the budget's
    percentile, else p90), else by the upper end of the predicted interval (the point figure
    where the prediction has no interval); memory likewise, where known."""
    if measured:
        lat = measured.get(f"p{budget.percentile:g}_ms", measured.get("p90_ms"))
        mem = measured.get("peak_rss_mb")
    else:
        lat = predicted.get("latency_hi_ms", predicted["latency_ms"])
        mem = predicted.get("memory_hi_mb", predicted.get("memory_mb"))
    return lat is not None and lat <= budget.latency_ms and (mem is None or mem <= budget.memory_mb)


def cap_finalists(budgets, pools: dict[str, list[dict]], cap: int) -> list[str]:
    """The finalists to distil when the budgets' pooled finalists exceed ``cap``: round after
    round, each budget from the tightest adds its next finalist (most accurate first, as the
    search listed them) not already kept, until ``cap`` are kept. Every budget with finalists
    keeps at least its first when ``cap`` >= the number of budgets."""
    kept: list[str] = []
    order = [b.name for b in sorted(budgets, key=lambda b: (b.latency_ms, b.memory_mb))]
    depth = max((len(p) for p in pools.values()), default=0)
    for r in range(depth):
        for name in order:
            pool = pools.get(name, [])
            if len(kept) < cap and r < len(pool) and pool[r]["arch"] not in kept:
                kept.append(pool[r]["arch"])
    return kept


def choose_per_budget(
    budgets, pools: dict[str, list[dict]], scores: dict[str, float | None], near_tie: float
) -> dict[str, dict]:
    """The subnet of each budget, after distillation.

    Args:
        budgets: :class:`BudgetSpec` s; tighter ones (lower latency, then memory) go first.
        pools: budget name -> the finalists that fit it, each ``{"arch", "latency_ms"}`` (the
            figure that ranks speed: measured p50 where measured, else predicted).
        scores: arch -> validation score after distillation (None: its distillation failed).
        near_tie: finalists within this of the best score count as tied: the fastest wins, but
            never one less accurate than what a tighter budget (whose choice fits) got.

    Returns:
        budget name -> ``{"arch", "score", "latency_ms", "best", "tied", "why", "shared_with"}``;
        budgets with no scored finalist are left out.
    """
    chosen: dict[str, dict] = {}
    for b in sorted(budgets, key=lambda b: (b.latency_ms, b.memory_mb)):
        pool = [c for c in pools.get(b.name, []) if scores.get(c["arch"]) is not None]
        if not pool:
            continue
        best = max(scores[c["arch"]] for c in pool)
        archs = {c["arch"] for c in pool}
        floor = max(
            (v["score"] for v in chosen.values() if v["arch"] in archs), default=float("-inf")
        )
        tied = [c for c in pool if scores[c["arch"]] >= max(best - near_tie, floor)]
        pick = min(tied, key=lambda c: (c["latency_ms"], -scores[c["arch"]]))
        why = "the most accurate that fits"
        if scores[pick["arch"]] < best:
            why = f"within {near_tie:g} of the most accurate ({best:.4f}) and faster"
        chosen[b.name] = {
            "arch": pick["arch"],
            "score": scores[pick["arch"]],
            "latency_ms": pick["latency_ms"],
            "best": best,
            "tied": len(tied),
            "why": why,
        }
    for name, v in chosen.items():
        v["shared_with"] = sorted(
            n for n, o in chosen.items() if n != name and o["arch"] == v["arch"]
        )
    return chosen


def _measure(candidates: list[dict], measure: Measure, budget, cfg, note) -> str:
    """Adds ``measured`` to each candidate the device could measure (at most
    ``measure_top_k``); says what was done."""
    if cfg.measure_top_k == 0:
        return "not measured (measure_top_k is 0)"
    top = candidates[: cfg.measure_top_k]
    for c, figures in zip(top, measure([Arch.parse(c["arch"]) for c in top], budget), strict=True):
        if figures is None:
            break  # the device cannot be measured: every candidate stays a prediction
        c["measured"] = figures
    return note(len(candidates))


def choose(candidates: list[dict], tolerance: float = 0.0, budget: BudgetSpec | None = None):
    """Among the candidates that fit (measured to meet the budget where measured, else predicted
    to), those within ``tolerance`` of the best accuracy, the fastest (measured p50 where
    measured, else predicted). If every measured candidate missed, the one with the lowest
    measured latency (its record says it missed). ``budget``: judge the measured figures
    against it (else by the verdict the measurement carries)."""
    meas = [c for c in candidates if "measured" in c]

    def met(c) -> bool:
        if budget is not None:
            return fits(c["predicted"], c["measured"], budget)
        return c["measured"]["verdict"] == "met"

    pool = [c for c in meas if met(c)] if meas else candidates
    if meas and not pool:
        return min(meas, key=lambda c: c["measured"]["p90_ms"])
    best = max(c["accuracy"] for c in pool)
    near = [c for c in pool if c["accuracy"] >= best - tolerance]

    def latency(c):
        return c["measured"]["p50_ms"] if "measured" in c else c["predicted"]["latency_ms"]

    return min(near, key=lambda c: (latency(c), -c["accuracy"]))


__all__ = ["Searched", "choose", "choose_per_budget", "fits", "search_budget", "shortlist"]
