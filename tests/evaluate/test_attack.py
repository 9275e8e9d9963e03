"""toolchain/evaluate/attack.py: the attacks keep the gold label, respect their constraints, are
deterministic under a seed, and count what TextAttack counts."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolchain.data.examples import Example
from toolchain.errors import ConfigError
from toolchain.evaluate.attack import (
    MAX_EDIT_DISTANCE,
    STOPWORDS,
    WordResources,
    char_candidates,
    levenshtein,
    run_attack,
    summarize,
)
from toolchain.evaluate.loyalty import loyalty

POSITIVE = {"good": 2.0, "great": 2.0, "fine": 1.0}
NEGATIVE = {"bad": 2.0, "awful": 2.0, "poor": 1.0}


def keyword_victim(examples):
    """P(positive) from exact keyword matches: misspell or swap the keyword and it flips."""
    out = []
    for ex in examples:
        words = f"{ex.text} {ex.text_pair or ''}".lower().split()
        z = sum(POSITIVE.get(w, 0.0) - NEGATIVE.get(w, 0.0) for w in words) - 0.05
        p = 1 / (1 + np.exp(-z))
        out.append([1 - p, p])
    return np.array(out)


EXAMPLES = [
    Example("the movie was good", None, 1),
    Example("a great film and the acting is good", None, 1),
    Example("it is awful", None, 0),
    Example("the movie was good", None, 0),  # the victim is wrong: skipped
    Example("the plot", "the acting was great", 1),  # a pair
]


def _resources():
    words = ["good", "fine", "nice", "great", "okay", "film", "movie", "awful", "bad"]
    rng = np.random.default_rng(0)
    base = rng.normal(size=(len(words), 8))
    base[words.index("nice")] = base[words.index("good")] + 0.1  # nice is good's neighbour
    base[words.index("okay")] = base[words.index("great")] + 0.1
    vectors = base / np.linalg.norm(base, axis=1, keepdims=True)

    same = {"nice": "good", "okay": "great", "film": "movie"}

    def encode(texts):  # a bag-of-words "sentence encoder" that knows three synonyms
        m = np.zeros((len(texts), 256))
        for row, t in enumerate(texts):
            for w in t.lower().split():
                m[row, zlib.crc32(same.get(w, w).encode()) % 256] += 1.0
        return m / np.linalg.norm(m, axis=1, keepdims=True).clip(1e-9)

    return WordResources(words, vectors.astype(np.float32), encode)


@pytest.mark.parametrize("attack", ["char", "word"])
def test_attacks_keep_the_gold_label_and_their_constraints(attack):
    resources = _resources()
    results = run_attack(keyword_victim, EXAMPLES, attack=attack, seed=0, resources=resources)
    for ex, r in zip(EXAMPLES, results, strict=True):
        assert r.perturbed.label == ex.label == r.original.label  # never changes the label
        assert (r.perturbed.text_pair is None) == (ex.text_pair is None)
        for change in r.changes:
            assert change["from"].lower() not in STOPWORDS
        if attack == "char":
            assert r.edit_distance <= MAX_EDIT_DISTANCE
            total = levenshtein(ex.text, r.perturbed.text) + levenshtein(
                ex.text_pair or "", r.perturbed.text_pair or ""
            )
            assert total == r.edit_distance
        if attack == "word" and r.similarity is not None:
            assert r.similarity >= 0.85
        if r.status == "success":
            assert keyword_victim([r.perturbed])[0].argmax() != ex.label
    assert results[3].status == "skipped" and results[3].queries == 1


def test_the_char_attack_flips_a_keyword_classifier_and_the_summary_counts_it():
    results = run_attack(keyword_victim, EXAMPLES, attack="deepwordbug", seed=0)
    s = summarize(results)
    assert s["n"] == 5 and s["skipped"] == 1
    assert [r.status for r in results] == ["success", "success", "failure", "skipped", "success"]
    assert s["succeeded"] == 3 and s["failed"] == 1
    assert s["accuracy"] == 0.8
    assert s["accuracy_under_attack"] == round(s["failed"] / 5, 4)
    assert s["attack_success"] == round(s["succeeded"] / 4, 4)
    assert s["avg_queries"] > 1
    first = results[0]
    assert first.status == "success" and first.changed == 1
    assert first.changes[0]["from"] == "good"  # the most important word is tried first


def test_the_word_attack_substitutes_within_the_neighbourhood():
    results = run_attack(keyword_victim, EXAMPLES[:1], attack="word", seed=0,
                         resources=_resources())  # fmt: skip
    r = results[0]
    assert r.status == "success"
    assert r.changes == [{"from": "good", "to": "nice"}]
    assert r.perturbed.text == "the movie was nice" and r.similarity >= 0.85


def test_attacks_are_deterministic_under_a_seed():
    a = run_attack(keyword_victim, EXAMPLES, attack="char", seed=3)
    b = run_attack(keyword_victim, EXAMPLES, attack="char", seed=3)
    assert [r.perturbed for r in a] == [r.perturbed for r in b]
    assert [r.queries for r in a] == [r.queries for r in b]


@given(st.text(alphabet="abcdefghijKLM", min_size=1, max_size=12), st.integers(0, 10**6))
def test_char_candidates_are_single_edits(word, seed):
    for c in char_candidates(word, random.Random(seed)):
        assert c != word
        assert levenshtein(word, c) <= 2  # a swap is two substitutions


def test_regression_and_unknown_attacks_are_refused():
    with pytest.raises(ConfigError, match="unknown attack"):
        run_attack(keyword_victim, EXAMPLES, attack="nope")
    with pytest.raises(ConfigError, match="class indices"):
        run_attack(keyword_victim, [Example("x", None, 0.5)], attack="char")
    with pytest.raises(ConfigError, match="word resources"):
        run_attack(keyword_victim, EXAMPLES, attack="word")


def test_loyalty_of_a_model_to_itself_is_one():
    logits = np.random.default_rng(0).normal(size=(50, 3))
    assert loyalty(logits, logits) == {"label_loyalty": 1.0, "prob_loyalty": 1.0}
