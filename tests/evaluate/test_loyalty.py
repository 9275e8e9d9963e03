"""toolchain/evaluate/loyalty.py against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolchain.evaluate.loyalty import js_divergence, label_loyalty, loyalty, probability_loyalty


def test_label_loyalty_counts_agreement():
    teacher = [[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]]
    student = [[1.0, 0.0], [1.0, 0.0], [2.0, 1.0], [0.0, 1.0]]
    assert label_loyalty(teacher, student) == 0.75


def test_js_divergence_by_hand():
    p = np.array([[1.0, 0.0]])
    q = np.array([[0.0, 1.0]])
    assert js_divergence(p, q)[0] == pytest.approx(1.0)  # disjoint: 1 bit
    p = np.array([[0.5, 0.5]])
    q = np.array([[1.0, 0.0]])
    # m = (0.75, 0.25); JSD = 0.5*KL(p||m) + 0.5*KL(q||m)
    kl_pm = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_qm = 1.0 * math.log2(1.0 / 0.75)
    assert js_divergence(p, q)[0] == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm)


def test_probability_loyalty():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    assert probability_loyalty(logits, logits) == pytest.approx(1.0)
    assert probability_loyalty(logits, logits + 7.0) == pytest.approx(1.0)  # softmax invariance
    far = probability_loyalty([[100.0, 0.0]], [[0.0, 100.0]])
    assert far == pytest.approx(0.0, abs=1e-6)
    p, q = np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])
    jsd = js_divergence(p, q)[0]
    assert probability_loyalty(np.log(p), np.log(q + 1e-300)) == pytest.approx(1 - math.sqrt(jsd))


def test_loyalty_dict():
    out = loyalty([[1.0, 0.0]], [[0.9, 0.1]])
    assert out["label_loyalty"] == 1.0 and 0.9 < out["prob_loyalty"] < 1.0
