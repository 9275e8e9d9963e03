"""toolchain/distill/losses.py against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from toolchain.distill import losses as L


def test_logit_kd_matches_formula():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[2.0, 0.0, 1.0]])
    T = 2.0
    ps = torch.softmax(s / T, -1)
    pt = torch.softmax(t / T, -1)
    expected = T * T * float((pt * (pt.log() - ps.log())).sum())
    assert L.logit_kd(s, t, temperature=T).item() == pytest.approx(expected, rel=1e-6)
    assert L.logit_kd(t, t, temperature=3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_kd_mse_and_token_mask():
    s = torch.tensor([[1.0, 3.0]])
    t = torch.tensor([[0.0, 1.0]])
    assert L.logit_kd(s, t, kind="mse").item() == pytest.approx((1 + 4) / 2)
    s3 = torch.zeros(1, 2, 2)
    t3 = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])
    mask = torch.tensor([[1, 0]])  # the second position is padding: no loss
    assert L.logit_kd(s3, t3, mask=mask).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="'kl' or 'mse'"):
        L.logit_kd(s, t, kind="l1")


def test_hidden_cosine_ignores_scale_and_masked_tokens():
    s = torch.tensor([[[1.0, 0.0], [5.0, 5.0], [7.0, -3.0]]])
    t = torch.tensor([[[1000.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # token 1: same direction at 1000x the scale (0); token 2: 45 degrees; token 3 masked
    expected = (0.0 + (1 - 2**-0.5)) / 2
    assert L.hidden_cosine(s, t, mask).item() == pytest.approx(expected, rel=1e-5)
    assert L.hidden_mse(s, t, mask).item() > 1e5  # what the scale does to the MSE


def test_hidden_mse_with_projection_and_mask():
    s = torch.tensor([[[1.0, 2.0], [9.0, 9.0]]])  # (B=1, T=2, H=2)
    t = torch.tensor([[[1.0, 4.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 0]])
    assert L.hidden_mse(s, t, mask).item() == pytest.approx((0 + 4) / 2)
    proj = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    t3 = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    assert L.hidden_mse(s, t3, mask, proj).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="give a projection"):
        L.hidden_mse(s, t3, mask)


def test_head_map_and_attention_kl():
    assert L.head_map(2, 4).tolist() == [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]
    assert L.head_map(3, 3).tolist() == torch.eye(3).tolist()
    w = L.head_map(10, 12)  # a searched subnet's 10 heads against MiniLM's 12
    assert w.shape == (10, 12) and torch.allclose(w.sum(1), torch.ones(10))
    assert w[0].tolist()[:3] == pytest.approx([1 / 1.2, 0.2 / 1.2, 0.0])
    assert torch.allclose(w.sum(0), torch.full((12,), 10 / 12))  # every teacher head used equally
    w = L.head_map(3, 2)  # more student heads than the teacher's
    assert torch.allclose(w, torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive"):
        L.head_map(0, 4)
    t = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
    s = torch.tensor([[[[0.75, 0.25], [0.75, 0.25]]]])  # one student head = mean of both
    assert L.attention_kl(s, t).item() == pytest.approx(0.0, abs=1e-6)
    s2 = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
    p = torch.tensor([0.75, 0.25])
    expected = float((p * (p.log() - math.log(0.5))).sum())
    assert L.attention_kl(s2, t).item() == pytest.approx(expected, rel=1e-5)
    t12 = torch.softmax(torch.randn(2, 12, 5, 5), -1)  # non-divisible counts: finite, and zero
    s10 = torch.einsum("st,btqk->bsqk", L.head_map(10, 12), t12)  # for the mixed teacher
    assert L.attention_kl(s10, t12).item() == pytest.approx(0.0, abs=1e-6)
    assert L.attention_kl(torch.softmax(torch.randn(2, 10, 5, 5), -1), t12).item() > 0.01


def test_hard_loss_and_combine():
    logits = torch.tensor([[2.0, 0.0]])
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert L.hard_loss(logits, torch.tensor([0])).item() == pytest.approx(ce)
    tok = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])
    assert L.hard_loss(tok, torch.tensor([[0, -100]])).item() == pytest.approx(ce)
    assert L.hard_loss(torch.tensor([[1.5]]), torch.tensor([0.5]), regression=True).item() == 1.0
    assert L.combine(torch.tensor(2.0), torch.tensor(4.0), 0.25).item() == 2.5


def test_pooled_and_normalised_mse():
    h = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]])
    assert L.pooled(h, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 1.0]]
    a = torch.tensor([[1.0, 0.0]])
    assert L.normalised_mse(a, 5 * a).item() == pytest.approx(0.0)
    assert L.normalised_mse(a, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2.0)


def test_projections_identity_when_widths_match():
    p = L.Projections(3, 8, 8)
    x = torch.randn(2, 4, 8)
    assert p(1, x) is x and not list(p.parameters())
    q = L.Projections(2, 8, 16)
    assert q(1, x).shape == (2, 4, 16) and len(list(q.parameters())) == 4
