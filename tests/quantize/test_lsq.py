"""LSQ: the forward pass is the formula, the step gradient is LSQ's, the initialisations."""

from __future__ import annotations

import math

import pytest
import torch

from toolchain.quantize.lsq import LSQQuantizer, init_step, lsq, quant_range


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", (True, False))
def test_forward_equals_the_formula(bits, signed):
    torch.manual_seed(bits)
    x = torch.randn(6, 40) * 3
    q = LSQQuantizer(bits, signed=signed, channels=6)
    with torch.no_grad():
        q.step.copy_(torch.rand(6) * 0.5 + 0.05)
    qn, qp = quant_range(bits, signed)
    s = q.step.detach()[:, None]
    expected = torch.clamp(torch.round(x / s), -qn, qp) * s
    torch.testing.assert_close(q(x), expected, rtol=0, atol=1e-6)
    codes = q.codes(x)
    assert codes.min() >= -qn and codes.max() <= qp
    torch.testing.assert_close(codes.float() * s, expected, rtol=0, atol=1e-6)


def lsq_step_grad(x, s, w, qn, qp, g):
    """LSQ's d(sum(w * x_hat))/ds: -x/s + round(x/s) inside, -Qn / Qp outside, times g."""
    v = x / s
    inner = torch.where(v <= -qn, -float(qn), torch.where(v >= qp, float(qp), -v + torch.round(v)))
    return g * (w * inner).sum()


@pytest.mark.parametrize("bits", (2, 4, 8))
def test_step_gradient_is_lsq_and_matches_finite_differences(bits):
    torch.manual_seed(0)
    x = torch.randn(500, dtype=torch.float64) * 2
    w = torch.randn(500, dtype=torch.float64)  # upstream gradient
    qn, qp = quant_range(bits, True)
    s0 = 0.9 / qp
    step = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    g = 1 / math.sqrt(x.numel() * qp)
    (w * lsq(x, step, qn, qp, g)).sum().backward()
    expected = lsq_step_grad(x, s0, w, qn, qp, g)
    torch.testing.assert_close(step.grad, expected, rtol=1e-9, atol=1e-12)

    # Finite differences of the straight-through surrogate, rounding offsets frozen at s0:
    # F(s) = sum(w * s * u(s)), u = x/s + c inside the range (c = round(x/s0) - x/s0) and the
    # clamped code outside; its derivative is LSQ's gradient.
    v0 = x / s0
    c = torch.round(v0) - v0
    inside = (v0 > -qn) & (v0 < qp)

    def surrogate(s):
        return (w * s * torch.where(inside, x / s + c, torch.clamp(v0, -qn, qp))).sum()

    h = 1e-7 * s0
    fd = (surrogate(s0 + h) - surrogate(s0 - h)) / (2 * h)
    torch.testing.assert_close(step.grad / g, fd, rtol=1e-5, atol=1e-6)


def test_gradient_scale_and_straight_through_input_gradient():
    q = LSQQuantizer(4, channels=3)
    w = torch.randn(3, 16)
    assert q.grad_scale(w) == pytest.approx(1 / math.sqrt(16 * 7))
    a = LSQQuantizer(8, signed=False)
    assert a.grad_scale(torch.zeros(2, 5, 10)) == pytest.approx(1 / math.sqrt(100 * 255))
    x = torch.tensor([-10.0, -0.3, 0.2, 0.6, 10.0], requires_grad=True)
    q1 = LSQQuantizer(2)
    with torch.no_grad():
        q1.step.fill_(0.5)  # range [-1.0, 0.5]
    q1(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]


def test_initialisations():
    torch.manual_seed(0)
    w = torch.randn(8, 256)
    steps = {m: init_step(w, 2, True, method=m, dim=0) for m in ("lsq", "max", "mse")}
    assert steps["lsq"].shape == (8,)
    torch.testing.assert_close(steps["lsq"], 2 * w.abs().mean(1) / math.sqrt(1))
    torch.testing.assert_close(steps["max"], w.abs().amax(1) / 1)

    def err(s):
        return ((torch.clamp(torch.round(w / s[:, None]), -2, 1) * s[:, None] - w) ** 2).sum()

    # the MSE search includes the max-abs step, so it can only do better; at 2 bits much better
    assert err(steps["mse"]) < 0.7 * err(steps["max"])
    assert err(steps["mse"]) <= err(steps["lsq"])
    per_tensor = init_step(w, 8, True, method="max")
    assert per_tensor.ndim == 0
    with pytest.raises(ValueError, match="unknown step initialisation 'pct'"):
        init_step(w, 4, True, method="pct")


def test_unsigned_activation_quantizer_turns_signed_on_negative_data():
    a = LSQQuantizer(8, signed=False)
    a.init_from(torch.rand(100))
    assert not a.signed and a.initialized
    a.init_from(torch.randn(100))
    assert a.signed
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        LSQQuantizer(1)
