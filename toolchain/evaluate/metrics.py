"""Task metrics: accuracy, F1, Matthews correlation, Pearson/Spearman, span F1, perplexity.

Plain numpy, no scikit-learn. Span F1 follows conlleval: a span counts only when its type and both
boundaries match exactly; IOB1 and IOB2 tags are both read (an ``I-X`` after ``O`` or another
type opens a span).

Example::

    >>> accuracy([1, 0, 1], [1, 1, 1])
    0.6666666666666666
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def accuracy(preds: Sequence, labels: Sequence) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if len(labels) else 0.0


def f1(preds: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """Binary F1 of the ``positive`` class (GLUE's MRPC/QQP F1)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = int(((preds == positive) & (labels == positive)).sum())
    fp = int(((preds == positive) & (labels != positive)).sum())
    fn = int(((preds != positive) & (labels == positive)).sum())
    return _f1(tp, fp, fn)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def mcc(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation (multi-class form; CoLA's metric). 0 when undefined."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    classes = np.union1d(preds, labels)
    # (C, C) confusion matrix: rows true, columns predicted.
    cm = np.array(
        [[np.sum((labels == t) & (preds == p)) for p in classes] for t in classes], dtype=np.float64
    )
    n, correct = cm.sum(), np.trace(cm)
    true_k, pred_k = cm.sum(axis=1), cm.sum(axis=0)
    cov = correct * n - true_k @ pred_k
    denom = math.sqrt((n * n - pred_k @ pred_k) * (n * n - true_k @ true_k))
    return float(cov / denom) if denom else 0.0


def pearson(preds: Sequence[float], labels: Sequence[float]) -> float:
    x, y = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman needs."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(preds: Sequence[float], labels: Sequence[float]) -> float:
    return pearson(_ranks(np.asarray(preds, float)), _ranks(np.asarray(labels, float)))


def tag_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, start, end_exclusive)`` spans of an IOB1/IOB2 tag sequence, in order."""
    out, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        opens = prefix == "B" or (prefix == "I" and label != kind)
        if kind is not None and (tag == "O" or opens):
            out.append((kind, start, i))
            kind = None
        if opens:
            start, kind = i, label
    return out


def spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The set of :func:`tag_spans`."""
    return set(tag_spans(tags))


def span_f1(pred_tags: Sequence[Sequence[str]], true_tags: Sequence[Sequence[str]]) -> float:
    """Micro-averaged exact-match span F1 over sentences (conlleval's overall F1)."""
    tp = fp = fn = 0
    for p, t in zip(pred_tags, true_tags, strict=True):
        ps, ts = spans(p), spans(t)
        tp += len(ps & ts)
        fp += len(ps - ts)
        fn += len(ts - ps)
    return _f1(tp, fp, fn)


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(mean negative log-likelihood per predicted token)."""
    return math.exp(total_nll / num_tokens) if num_tokens else float("inf")


CLASSIFICATION_METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc}
REGRESSION_METRICS = {"pearson": pearson, "spearman": spearman}
