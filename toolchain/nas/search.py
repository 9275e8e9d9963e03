"""Evolutionary search of supernet subnets under a device budget, search-space pruning, and the
Pareto front.

* :func:`evolve`: population, crossover, mutation, generations; fitness = the subnet's accuracy
  with inherited weights; a subnet enters the population only if ``feasible`` (the predicted
  latency and memory fit the budget). The state (generation, population, RNG, every score) is
  written after each generation, and a run that finds it continues from there.
* :func:`shrink`: from the subnets within a tolerance of the best accuracy, a greedy descent
  to cheaper neighbours that stay within it, most latency saved per accuracy lost first (the
  fastest "as good" subnet, not the largest).
* :func:`prune_space`: NAS-BERT's search-space pruning: a choice (a hidden size, head count or FFN
  size) is dropped when another choice of the same dimension is more accurate by a margin and
  at most as costly, judged on the same random subnets with only that dimension changed.
* :func:`pareto_front`: accuracy vs latency, non-dominated points.

Example::

    ranked = evolve(space, scorer, lambda a: predict(a)["latency_ms"] <= 8.0, cfg, seed=0)
    best_arch, best_accuracy = ranked[0]
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

from toolchain.config import SearchConfig
from toolchain.errors import ConfigError, EdgecError
from toolchain.log import progress
from toolchain.nas.space import Arch, SearchSpace

log = logging.getLogger(__name__)


def evolve(
    space: SearchSpace,
    fitness: Callable[[Arch], float],
    feasible: Callable[[Arch], bool],
    cfg: SearchConfig,
    *,
    seed: int = 0,
    state_path: Path | None = None,
    desc: str = "search",
) -> list[tuple[Arch, float]]:
    """Every feasible subnet the search scored, best first.

    Raises:
        EdgecError: no subnet of the space is feasible (the budget is below the smallest one).
    """
    rng = random.Random(seed)
    state = _load_state(state_path)
    if state:
        rng.setstate(state["rng"])
        population = [Arch.parse(a) for a in state["population"]]
        scores = {Arch.parse(a): v for a, v in state["scores"].items()}
        start = state["generation"]
        log.info("%s: resuming at generation %d", desc, start)
    else:
        population = _initial(space, feasible, cfg.population, rng)
        scores, start = {}, 0
    if not population:
        raise EdgecError(
            f"no subnet of the search space fits this budget (the smallest, {space.smallest()}, "
            "does not): relax the budget or widen the space"
        )

    def score(a: Arch) -> float:
        if a not in scores:
            scores[a] = fitness(a)
        return scores[a]

    for generation in progress(
        range(start, cfg.generations), desc=desc, unit="generation", total=cfg.generations
    ):
        ranked = sorted(population, key=score, reverse=True)
        parents = ranked[: max(2, len(ranked) // 2)]
        elite = ranked[: max(1, cfg.population // 4)]
        children, seen, tries = [], set(elite), 0
        while len(elite) + len(children) < cfg.population and tries < 50 * cfg.population:
            tries += 1
            a = rng.choice(parents)
            if rng.random() < cfg.crossover_rate:
                a = space.crossover(a, rng.choice(parents), rng)
            child = space.mutate(a, rng, rate=cfg.mutation_rate)
            if child not in seen and feasible(child):
                seen.add(child)
                children.append(child)
        population = elite + children
        for child in children:
            score(child)
        _save_state(state_path, generation + 1, population, scores, rng)
    ranked = sorted(((a, v) for a, v in scores.items() if feasible(a)), key=lambda p: -p[1])
    return ranked or [(a, score(a)) for a in population]


def shrink(
    space: SearchSpace,
    scored: list[tuple[Arch, float]],
    fitness: Callable[[Arch], float],
    feasible: Callable[[Arch], bool],
    cost: Callable[[Arch], float],
    *,
    tolerance: float,
    evaluations: int,
) -> tuple[list[tuple[Arch, float]], dict]:
    """The subnets within ``tolerance`` of the best accuracy, cheapest first, after a greedy
    descent towards cheaper ones. From the most accurate subnet, every one-step-smaller
    neighbour (:meth:`SearchSpace.smaller`: a layer dropped, one width narrowed) is scored, and
    the descent moves to the one that stays within ``tolerance`` and saves the most latency per
    point of accuracy it gives up (a greedy knapsack: cheap cuts first, whichever dimension they
    are in); it stops when no neighbour stays within, or after ``evaluations`` new scores. The
    evolution maximises accuracy; this finds how much of it a much cheaper subnet keeps.

    Returns:
        ``(near, {"floor", "evaluated", "path"})``: ``near`` = [(arch, accuracy)], cheapest
        first; ``path`` = the subnets the descent moved through.
    """
    if not scored:
        return [], {"floor": None, "evaluated": 0, "path": []}
    floor = max(acc for _, acc in scored) - tolerance
    known = dict(scored)
    near = {a: acc for a, acc in scored if acc >= floor}
    start = max(near, key=lambda a: (near[a], -cost(a)))  # the most accurate: every cut open
    path, evaluated = [str(start)], 0
    while True:
        options = []
        for nb in space.smaller(start):
            if not feasible(nb):
                continue
            if nb not in known:
                if evaluated >= evaluations:
                    continue
                known[nb] = fitness(nb)
                evaluated += 1
            if known[nb] >= floor:
                near[nb] = known[nb]
                saved = cost(start) - cost(nb)
                options.append((saved / max(known[start] - known[nb], 1e-3), nb))
        if not options:
            break
        start = max(options, key=lambda o: (o[0], -cost(o[1])))[1]
        path.append(str(start))
    ranked = sorted(near.items(), key=lambda p: (cost(p[0]), -p[1]))
    return ranked, {"floor": round(floor, 5), "evaluated": evaluated, "path": path}


def _initial(space, feasible, n: int, rng: random.Random) -> list[Arch]:
    out: list[Arch] = []
    for candidate in (space.smallest(), space.largest()):
        if feasible(candidate) and candidate not in out:
            out.append(candidate)
    tries = 0
    while len(out) < n and tries < 200 * n:
        tries += 1
        a = space.sample(rng)
        if a not in out and feasible(a):
            out.append(a)
    return out


def _save_state(path, generation, population, scores, rng) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    version, internal, gauss = rng.getstate()
    state = {
        "generation": generation,
        "population": [str(a) for a in population],
        "scores": {str(a): v for a, v in scores.items()},
        "rng": [version, list(internal), gauss],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state) + "\n")
    tmp.replace(path)


def _load_state(path) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    state = json.loads(Path(path).read_text())
    version, internal, gauss = state["rng"]
    state["rng"] = (version, tuple(internal), gauss)
    return state


def prune_space(
    space: SearchSpace,
    fitness: Callable[[Arch], float],
    cost: Callable[[Arch], float],
    *,
    samples: int = 4,
    margin: float = 0.01,
    seed: int = 0,
) -> tuple[SearchSpace, dict]:
    """Drop dominated choices of hidden size, heads and FFN size (see the module docstring):
    a choice goes only when another is at most as costly and more accurate by at least
    ``margin``, so that the noise of a few inherited-weight scores cannot prune a good width.

    Returns:
        ``(pruned space, {"dimension": {"value": {"accuracy", "cost", "dropped"}}})``.
    """
    rng = random.Random(seed)
    bases = [space.sample(rng) for _ in range(samples)]
    report: dict = {}
    keep = {"hidden": list(space.hidden), "heads": list(space.heads), "ffn": list(space.ffn)}
    for dim in ("hidden", "heads", "ffn"):
        stats = {}
        for value in getattr(space, dim):
            archs = [_with(space, b, dim, value) for b in bases]
            archs = [a for a in archs if a is not None]
            if not archs:
                continue
            acc = sum(fitness(a) for a in archs) / len(archs)
            stats[value] = {
                "accuracy": round(acc, 5),
                "cost": sum(cost(a) for a in archs) / len(archs),
                "n": len(archs),
            }
        for v, s in stats.items():
            s["dropped"] = any(
                o["accuracy"] >= s["accuracy"] + margin
                and o["cost"] <= s["cost"]
                and o["n"] == s["n"]  # compared on the same subnets
                for u, o in stats.items()
                if u != v
            )
        survivors = [v for v in keep[dim] if not stats.get(v, {}).get("dropped")]
        keep[dim] = survivors or keep[dim]
        report[dim] = {str(v): s for v, s in stats.items()}
    try:
        pruned = SearchSpace(
            space.teacher_layers,
            space.teacher_heads,
            space.teacher_head_size,
            tuple(keep["hidden"]),
            tuple(keep["heads"]),
            tuple(keep["ffn"]),
            space.min_layers,
            space.max_layers,
        )
    except ConfigError:  # a pruned head count left a hidden size without heads: keep all heads
        pruned = SearchSpace(
            space.teacher_layers,
            space.teacher_heads,
            space.teacher_head_size,
            tuple(keep["hidden"]),
            space.heads,
            tuple(keep["ffn"]),
            space.min_layers,
            space.max_layers,
        )
    return pruned, report


def _with(space: SearchSpace, arch: Arch, dim: str, value: int) -> Arch | None:
    """``arch`` with one dimension set to ``value`` (heads re-chosen to fit a new hidden size),
    or None where that is not a subnet of the space."""
    fields = {"layers": arch.layers, "hidden": arch.hidden, "heads": arch.heads, "ffn": arch.ffn}
    fields[dim] = value
    candidate = Arch(**fields)
    if dim == "hidden" and not space.contains(candidate):
        valid = [h for h in space.heads if space.contains(Arch(**{**fields, "heads": h}))]
        if not valid:
            return None
        candidate = Arch(**{**fields, "heads": min(valid, key=lambda h: abs(h - arch.heads))})
    return candidate if space.contains(candidate) else None


def pareto_front(points: list[dict], *, x: str = "latency_ms", y: str = "accuracy") -> list[dict]:
    """Points not dominated by another (lower or equal ``x`` and higher or equal ``y``, one of
    them strictly), sorted by ``x``."""
    front = []
    for p in points:
        dominated = any(
            q[x] <= p[x] and q[y] >= p[y] and (q[x] < p[x] or q[y] > p[y]) for q in points
        )
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: p[x])


def plot_pareto(
    points: list[dict],
    front: list[dict],
    path: Path,
    *,
    chosen=(),
    budgets=(),
    title="",
    xlabel="latency (ms)",
    ylabel="accuracy (inherited weights)",
) -> bool:
    """A PNG of a score (named by ``ylabel``: the task's metric) vs predicted latency; False
    where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.scatter(
        [p["latency_ms"] for p in points],
        [p["accuracy"] for p in points],
        s=8,
        c="0.7",
        label="scored subnets",
    )
    ax.plot(
        [p["latency_ms"] for p in front],
        [p["accuracy"] for p in front],
        "o-",
        ms=4,
        label="Pareto front",
    )
    for c in chosen:
        ax.scatter(
            [c["latency_ms"]], [c["accuracy"]], marker="*", s=120, zorder=3, label=c.get("label")
        )
    for name, ms in budgets:
        ax.axvline(ms, ls="--", lw=0.8, c="tab:red")
        ax.annotate(name, (ms, ax.get_ylim()[0]), rotation=90, fontsize=7, va="bottom", ha="right")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return True
