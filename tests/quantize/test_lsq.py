"""LSQ: the forward pass is the formula, the step gradient is LSQ's, the initialisations."""

from __future__ import annotations

import math

import pytest
import torch

from toolchain.quantize.lsq import LSQQuantizer, grad_scale, init_step, lsq, quant_range, round_ste


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


@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quant_is_bit_exact_with_the_packed_codes(bits):
    # a packed checkpoint reloads to codes * step: the trained fake-quant forward must give
    # exactly that, also for the values an ulp from a rounding boundary (a W8 KDLSQ run met one
    # and its reload moved the logits by 0.07)
    torch.manual_seed(0)
    q = LSQQuantizer(bits, channels=64)
    w = torch.randn(64, 16384) * torch.rand(64, 1)
    q.init_from(w)
    with torch.no_grad():
        q.step.mul_(1 + torch.rand(64) * 1e-3)  # steps as training leaves them, not init's
    step = q.step.detach().view(-1, 1)
    assert torch.equal(q(w).detach(), q.codes(w).float() * step)
    ties = (torch.randint(-5, 5, (64, 1024)) + 0.5) * step  # exactly half-way, by construction
    assert torch.equal(q(ties).detach(), q.codes(ties).float() * step)
    assert torch.equal(grad_scale(w, 0.37), w) and torch.equal(round_ste(w * 7), (w * 7).round())


def test_a_step_pushed_through_zero_is_kept_positive():
    q = LSQQuantizer(8, channels=3)
    w = torch.tensor([[0.5, -0.25], [1e-4, -2e-4], [0.1, 0.2]])
    q.init_from(w)
    with torch.no_grad():
        q.step[1] = -q.step[1]  # what one optimizer step did to a row of tiny weights
    before = q.step.detach().abs().clone()
    out = q(w)
    assert (q.step > 0).all() and torch.equal(q.step.detach(), before)
    assert torch.equal(out.detach(), q.codes(w).float() * before.view(-1, 1))
    with torch.no_grad():
        q.step[0] = 0.0
    q.codes(w)  # the exporters read the step after codes(): positive there too
    assert q.step[0].item() > 0
