"""toolchain/distill/mapping.py and ga.py: valid ordered mappings, RAIL coverage, GA operators,
GA search and resume."""

from __future__ import annotations

import itertools
import random

import pytest

from toolchain.config import GAConfig
from toolchain.distill.ga import GAState, crossover, ga_search, mutate, random_genome
from toolchain.distill.init import uniform_layers
from toolchain.distill.mapping import LayerMapper, is_valid
from toolchain.errors import ConfigError


def test_fixed_mappings():
    assert uniform_layers(6, 3) == [1, 3, 5]
    assert uniform_layers(12, 4) == [2, 5, 8, 11]
    assert LayerMapper("uniform", 6, 3)() == [1, 3, 5]
    assert LayerMapper("last", 6, 3)() == [3, 4, 5]
    assert LayerMapper("ga", 6, 3, genome=[0, 2, 4])() == [0, 2, 4]
    assert LayerMapper("none", 6, 3)() == []


def test_rail_samples_are_valid_and_cover_every_teacher_layer():
    mapper = LayerMapper("rail", 12, 4, seed=1)
    seen = set()
    samples = [mapper() for _ in range(300)]
    for m in samples:
        assert is_valid(m, 12, 4)
        seen.update(m)
    assert seen == set(range(12))
    assert len({tuple(m) for m in samples}) > 50  # re-sampled each step


def test_rail_state_round_trip():
    a = LayerMapper("rail", 6, 3, seed=0)
    a()
    state = a.state()
    b = LayerMapper("rail", 6, 3, seed=99)
    b.set_state([state[0], list(state[1]), state[2]])  # as it comes back from a checkpoint
    assert [a() for _ in range(5)] == [b() for _ in range(5)]


def test_mapping_errors():
    with pytest.raises(ConfigError, match="unknown mapping 'skip'"):
        LayerMapper("skip", 6, 3)
    with pytest.raises(ConfigError, match="needs a valid genome"):
        LayerMapper("ga", 6, 3, genome=[2, 1, 0])
    with pytest.raises(ConfigError, match="student layers .7. <= teacher layers .6."):
        LayerMapper("uniform", 6, 7)


def test_ga_operators_keep_genomes_valid():
    rng = random.Random(0)
    for _ in range(2000):
        n_t = rng.randint(2, 12)
        n_s = rng.randint(1, n_t)
        a, b = random_genome(rng, n_t, n_s), random_genome(rng, n_t, n_s)
        assert is_valid(crossover(a, b, rng, n_t), n_t, n_s)
        assert is_valid(mutate(a, rng, n_t, rate=0.5), n_t, n_s)


def test_ga_finds_the_best_mapping_and_caches():
    target = [0, 3, 5]
    calls = []

    def fitness(g):
        calls.append(tuple(g))
        return -sum(abs(x - y) for x, y in zip(g, target, strict=True))

    best, state = ga_search(
        fitness,
        teacher_layers=6,
        student_layers=3,
        cfg=GAConfig(population=8, generations=8),
        seed=0,
    )
    assert best == target
    assert len(calls) == len(set(calls)) == len(state.fitness) <= 20  # C(6,3) = 20, no repeats
    assert [h["generation"] for h in state.history] == list(range(8))
    assert all(h["best"] >= prev["best"] for prev, h in itertools.pairwise(state.history))


def test_ga_resumes_from_its_state(tmp_path):
    path = tmp_path / "ga.json"
    scores = {}

    def fitness(g):
        scores[tuple(g)] = scores.get(tuple(g), 0) + 1
        return sum(g)

    _, first = ga_search(
        fitness,
        teacher_layers=8,
        student_layers=3,
        cfg=GAConfig(population=6, generations=2),
        seed=3,
        state_path=path,
    )
    assert GAState.load(path).generation == 2
    best, second = ga_search(
        fitness,
        teacher_layers=8,
        student_layers=3,
        cfg=GAConfig(population=6, generations=5),
        seed=3,
        state_path=path,
    )
    assert [h["generation"] for h in second.history] == [0, 1, 2, 3, 4]
    assert second.history[:2] == first.history
    assert max(scores.values()) == 1  # nothing scored twice across the two runs
    assert best == [5, 6, 7]
