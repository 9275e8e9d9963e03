"""Loyalty of a compressed model to its teacher ("beyond preserved accuracy").

- label loyalty: the share of examples where the student predicts the teacher's label;
- probability loyalty: 1 - sqrt(JSD(p_teacher, p_student)), averaged over examples, with the
  Jensen-Shannon divergence in base 2 so that it lies in [0, 1] (1 = identical distributions).

Example::

    >>> label_loyalty([[2., 0.], [0., 1.]], [[1., 0.], [1., 0.]])
    0.5
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def label_loyalty(teacher_logits, student_logits) -> float:
    """Agreement of the arg-max labels. Inputs: (N, C) logits (or probabilities)."""
    t = np.asarray(teacher_logits).argmax(-1)
    s = np.asarray(student_logits).argmax(-1)
    return float((t == s).mean()) if len(t) else 0.0


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row Jensen-Shannon divergence in bits (0..1). p, q: (N, C) probabilities."""
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * (np.log2(a) - np.log2(b)), 0.0)
        return terms.sum(-1)

    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, 1.0)


def probability_loyalty(teacher_logits, student_logits) -> float:
    """Mean of 1 - sqrt(JSD) between the softmax distributions. Inputs: (N, C) logits."""
    p, q = softmax(teacher_logits), softmax(student_logits)
    return float((1.0 - np.sqrt(js_divergence(p, q))).mean()) if len(p) else 0.0


def loyalty(teacher_logits, student_logits) -> dict[str, float]:
    """Both loyalty figures for (N, C) logits of the same examples."""
    return {
        "label_loyalty": label_loyalty(teacher_logits, student_logits),
        "prob_loyalty": probability_loyalty(teacher_logits, student_logits),
    }
