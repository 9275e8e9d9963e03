"""Distillation losses: logit KD (KL with temperature, or MSE) mixed with the hard-label loss,
hidden-state MSE through a learned projection when widths differ, per-head attention KL with a head
mapping when head counts differ, and the embedding-layer loss.

Shapes: logits (B, C) or (B, T, C); hidden states (B, T, H); attentions (B, heads, T, T);
mask (B, T) with 1 for real tokens.

Example::

    >>> kd = logit_kd(student_logits, teacher_logits, temperature=2.0)
    >>> loss = (1 - a) * hard_loss + a * kd
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def logit_kd(
    student: Tensor,
    teacher: Tensor,
    *,
    temperature: float = 1.0,
    kind: str = "kl",
    mask: Tensor | None = None,
) -> Tensor:
    """Logit distillation.

    ``kl``: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over examples (Hinton et al.; the T^2
    keeps gradient sizes comparable across temperatures). ``mse``: mean squared error of the raw
    logits (regression teachers, or the MSE option). For (B, T, C) token logits, ``mask`` selects
    the positions that count.
    """
    if kind == "mse":
        err = (student.float() - teacher.float()) ** 2
        return _masked_mean(err.mean(-1), mask) if student.dim() == 3 else err.mean()
    if kind != "kl":
        raise ValueError(f"logit KD kind must be 'kl' or 'mse', got {kind!r}")
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (B,) or (B, T)
    return (t * t) * (_masked_mean(kl, mask) if kl.dim() == 2 else kl.mean())


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (B, T) values over positions where mask is 1."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def hidden_mse(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor | None = None,
    projection: nn.Module | None = None,
) -> Tensor:
    """MSE between (B, T, H_s) student and (B, T, H_t) teacher states over real tokens.

    ``projection`` maps H_s -> H_t (a learned Linear) when the widths differ.
    """
    s = projection(student) if projection is not None else student
    if s.shape[-1] != teacher.shape[-1]:
        raise ValueError(
            f"hidden widths differ ({s.shape[-1]} vs {teacher.shape[-1]}): give a projection"
        )
    err = ((s.float() - teacher.float()) ** 2).mean(-1)  # (B, T)
    return _masked_mean(err, mask)


def head_map(student_heads: int, teacher_heads: int) -> Tensor:
    """How much of each teacher head every student head is compared with: a (student_heads,
    teacher_heads) matrix whose rows sum to 1. The teacher's heads, laid end to end, are cut into
    ``student_heads`` equal stretches and each student head takes the mean of its stretch: equal
    counts map one to one, a divisible count averages contiguous groups, and otherwise a head on
    a boundary contributes in proportion to its overlap (12 teacher heads, 10 student heads: the
    first student head takes teacher head 0 and a fifth of head 1)."""
    if student_heads < 1 or teacher_heads < 1:
        raise ValueError(f"head counts must be positive, got {student_heads} and {teacher_heads}")
    ratio = teacher_heads / student_heads
    w = torch.zeros(student_heads, teacher_heads)
    for j in range(student_heads):
        lo, hi = j * ratio, (j + 1) * ratio
        for i in range(int(lo), min(teacher_heads, math.ceil(hi))):
            w[j, i] = max(0.0, min(hi, i + 1) - max(lo, i))
    return w / w.sum(1, keepdim=True)


def attention_kl(
    student: Tensor, teacher: Tensor, mask: Tensor | None = None, eps: float = 1e-8
) -> Tensor:
    """Per-head KL(teacher || student) between attention distributions, averaged over heads and
    real query positions. (B, h_s, T, T) vs (B, h_t, T, T); when the counts differ the teacher's
    distributions are mixed per student head by :func:`head_map` (still distributions)."""
    h_s, h_t = student.shape[1], teacher.shape[1]
    if h_s != h_t:
        w = head_map(h_s, h_t).to(device=teacher.device, dtype=teacher.dtype)
        teacher = torch.einsum("st,btqk->bsqk", w, teacher)
    t = teacher.float().clamp(min=eps)
    s = student.float().clamp(min=eps)
    kl = (t * (t.log() - s.log())).sum(-1).mean(1)  # (B, T): summed over keys, mean over heads
    return _masked_mean(kl, mask)


def hard_loss(logits: Tensor, labels: Tensor, *, regression: bool = False) -> Tensor:
    """The task loss on gold labels: cross-entropy (ignoring -100 tags) or MSE for regression."""
    if regression:
        return F.mse_loss(logits.float().view(-1), labels.float().view(-1))
    if logits.dim() == 3:  # token classification
        return F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100
        )
    return F.cross_entropy(logits.float(), labels)


def combine(hard: Tensor, kd: Tensor, kd_weight: float) -> Tensor:
    """(1 - kd_weight) * hard + kd_weight * kd."""
    return (1.0 - kd_weight) * hard + kd_weight * kd


class Projections(nn.Module):
    """Learned Linear maps from student to teacher width, one per supervised layer (identity
    when the widths match). Trained with the student, dropped after distillation."""

    def __init__(self, count: int, student_width: int, teacher_width: int):
        super().__init__()
        self.same = student_width == teacher_width
        self.maps = nn.ModuleList(
            [] if self.same else [nn.Linear(student_width, teacher_width) for _ in range(count)]
        )

    def forward(self, i: int, x: Tensor) -> Tensor:
        return x if self.same else self.maps[i](x)


def hidden_cosine(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """1 - cosine similarity per token between (B, T, H) states, over real tokens: DistilGPT-2's
    (DistilBERT's) hidden-state loss. Unlike :func:`hidden_mse` it ignores the states' scale,
    which in Llama-family decoders is dominated by a few huge residual dimensions (SmolLM2's
    raw MSE was ~3,000 against a KD term of ~5)."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1)  # (B, T)
    return _masked_mean(1.0 - cos, mask)


def pooled(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens: (B, T, H) -> (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def normalised_mse(a: Tensor, b: Tensor) -> Tensor:
    """MSE of L2-normalised (B, H) representations (RAIL-KD compares normalised vectors)."""
    return ((F.normalize(a.float(), dim=-1) - F.normalize(b.float(), dim=-1)) ** 2).sum(-1).mean()


def embedding_loss(
    student_emb: Tensor, teacher_emb: Tensor, mask: Tensor, projection: nn.Module | None = None
) -> Tensor:
    """The embedding-layer loss: :func:`hidden_mse` on hidden_states[0]."""
    return hidden_mse(student_emb, teacher_emb, mask, projection)


__all__ = [
    "Projections",
    "attention_kl",
    "combine",
    "embedding_loss",
    "hard_loss",
    "head_map",
    "hidden_cosine",
    "hidden_mse",
    "logit_kd",
    "normalised_mse",
    "pooled",
]
