"""toolchain/evaluate/metrics.py against hand-computed values."""

from __future__ import annotations

import math

import pytest

from toolchain.evaluate import metrics as M


def test_accuracy_and_f1():
    preds, labels = [1, 0, 1, 1, 0], [1, 1, 0, 1, 0]
    assert M.accuracy(preds, labels) == 3 / 5
    # tp=2, fp=1, fn=1 -> 2*2 / (4 + 1 + 1)
    assert M.f1(preds, labels) == pytest.approx(4 / 6)
    assert M.f1([0, 0], [1, 1]) == 0.0


def test_mcc_binary_by_hand():
    preds, labels = [1, 0, 1, 1, 0], [1, 1, 0, 1, 0]
    tp, tn, fp, fn = 2, 1, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert M.mcc(preds, labels) == pytest.approx(expected)
    assert M.mcc([1, 1, 1], [1, 0, 1]) == 0.0  # undefined: one predicted class
    assert M.mcc([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)


def test_pearson_spearman():
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x=[1,2,3,4], y=[1,3,2,4]: cov=4, var_x=var_y=5 -> 0.8
    assert M.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert M.spearman([10, 20, 30, 40], [1, 9, 4, 16]) == pytest.approx(0.8)  # ranks as above
    assert M.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(M.pearson([1.5, 1.5, 3], [1, 2, 3]))


def test_spans_iob1_iob2():
    assert M.spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert M.spans(["I-PER", "I-PER", "B-PER"]) == {("PER", 0, 2), ("PER", 2, 3)}  # IOB1
    assert M.spans(["B-ORG", "I-PER"]) == {("ORG", 0, 1), ("PER", 1, 2)}
    assert M.spans(["O", "O"]) == set()


def test_span_f1_exact_boundaries():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG"]]  # PER boundary wrong
    # gold spans 3, predicted 3, correct 2 -> P = R = 2/3
    assert M.span_f1(pred, gold) == pytest.approx(2 / 3)
    assert M.span_f1(gold, gold) == 1.0


def test_perplexity():
    assert M.perplexity(0.0, 10) == 1.0
    assert M.perplexity(10 * math.log(28.0), 10) == pytest.approx(28.0)
    assert M.perplexity(1.0, 0) == float("inf")
