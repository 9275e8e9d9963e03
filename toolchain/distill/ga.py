"""Genetic-algorithm search of the layer mapping (the seed paper's GA-KD).

Genome: a strictly increasing list of teacher layers, one per student layer. Fitness: the task
score of a student distilled briefly with that mapping on a sampled fraction of the training data
(the paper's proxy setting). Tournament selection, crossover and mutation that always return valid
genomes, elitism, a fitness cache, and a JSON state written after every evaluation, so an
interrupted search resumes where it stopped.

Example::

    best, state = ga_search(fitness, teacher_layers=6, student_layers=3, cfg=GAConfig(),
                            state_path=Path("runs/x/ga.json"))
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolchain.config import GAConfig
from toolchain.distill.mapping import is_valid

log = logging.getLogger(__name__)


def random_genome(rng: random.Random, teacher_layers: int, student_layers: int) -> list[int]:
    return sorted(rng.sample(range(teacher_layers), student_layers))


def crossover(a: list[int], b: list[int], rng: random.Random, teacher_layers: int) -> list[int]:
    """One-point crossover of two genomes, repaired to a valid genome: the child takes a's prefix
    and b's suffix; duplicates are replaced by unused layers, then sorted."""
    n = len(a)
    cut = rng.randint(1, n - 1) if n > 1 else 0
    child = list(dict.fromkeys(a[:cut] + b[cut:]))
    unused = [layer for layer in range(teacher_layers) if layer not in child]
    rng.shuffle(unused)
    while len(child) < n:
        child.append(unused.pop())
    return sorted(child)


def mutate(genome: list[int], rng: random.Random, teacher_layers: int, rate: float) -> list[int]:
    """Each gene is replaced, with probability ``rate``, by a teacher layer not yet used."""
    out = list(genome)
    for i in range(len(out)):
        unused = [layer for layer in range(teacher_layers) if layer not in out]
        if unused and rng.random() < rate:
            out[i] = rng.choice(unused)
    return sorted(out)


@dataclass
class GAState:
    generation: int = 0
    population: list[list[int]] = field(default_factory=list)
    fitness: dict[str, float] = field(default_factory=dict)  # genome key -> score
    history: list[dict] = field(default_factory=list)  # per generation: best, mean, evaluated
    rng_state: list | None = None

    def save(self, path: Path | None) -> None:
        from toolchain import distributed as dist

        if path is None or not dist.is_main():  # every rank holds the same state
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | None) -> GAState | None:
        if path is None or not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


def key(genome: list[int]) -> str:
    return ",".join(map(str, genome))


def ga_search(
    fitness: Callable[[list[int]], float],
    *,
    teacher_layers: int,
    student_layers: int,
    cfg: GAConfig,
    seed: int = 0,
    state_path: Path | None = None,
) -> tuple[list[int], GAState]:
    """Evolve mappings maximising ``fitness``; returns the best genome and the search state.

    The number of distinct genomes is C(teacher_layers, student_layers); the population never
    holds duplicates when enough distinct genomes exist, and a genome is never evaluated twice.
    """
    rng = random.Random(seed)
    state = GAState.load(state_path)
    if state is not None:
        log.info(
            "GA: resuming at generation %d (%d genomes scored)",
            state.generation,
            len(state.fitness),
        )
        if state.rng_state is not None:
            version, internal, gauss = state.rng_state
            rng.setstate((version, tuple(internal), gauss))
    else:
        state = GAState(population=_initial(rng, cfg.population, teacher_layers, student_layers))

    def score(genome: list[int]) -> float:
        k = key(genome)
        if k not in state.fitness:
            state.fitness[k] = float(fitness(genome))
            log.info("GA gen %d: mapping %s -> %.4f", state.generation, genome, state.fitness[k])
            state.save(state_path)
        return state.fitness[k]

    while state.generation < cfg.generations:
        scores = [score(g) for g in state.population]
        state.history.append(
            {
                "generation": state.generation,
                "best": max(scores),
                "mean": sum(scores) / len(scores),
                "best_genome": state.population[scores.index(max(scores))],
                "evaluated": len(state.fitness),
            }
        )
        log.info(
            "GA generation %d: best %.4f mean %.4f (%d genomes scored)",
            state.generation,
            max(scores),
            sum(scores) / len(scores),
            len(state.fitness),
        )
        state.population = _next_generation(state.population, scores, rng, cfg, teacher_layers)
        state.generation += 1
        state.rng_state = list(rng.getstate())
        state.save(state_path)
    for g in state.population:
        score(g)
    best = max(state.fitness, key=state.fitness.get)
    return [int(x) for x in best.split(",")], state


def _initial(rng, size: int, teacher_layers: int, student_layers: int) -> list[list[int]]:
    from math import comb

    distinct = min(size, comb(teacher_layers, student_layers))
    population: list[list[int]] = []
    while len(population) < size:
        g = random_genome(rng, teacher_layers, student_layers)
        if g not in population or len(population) >= distinct:
            population.append(g)
    return population


def _tournament(population, scores, rng, k: int = 3) -> list[int]:
    picks = [rng.randrange(len(population)) for _ in range(min(k, len(population)))]
    return population[max(picks, key=lambda i: scores[i])]


def _next_generation(population, scores, rng, cfg: GAConfig, teacher_layers: int):
    order = sorted(range(len(population)), key=lambda i: scores[i], reverse=True)
    nxt = [population[order[0]]]  # elitism: the best survives unchanged
    while len(nxt) < len(population):
        a = _tournament(population, scores, rng)
        b = _tournament(population, scores, rng)
        child = crossover(a, b, rng, teacher_layers) if rng.random() < cfg.crossover_rate else a
        child = mutate(child, rng, teacher_layers, cfg.mutation_rate)
        assert is_valid(child, teacher_layers, len(a))
        nxt.append(child)
    return nxt
