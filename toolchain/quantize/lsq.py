"""Learned step-size quantization (LSQ, Esser et al., 2020).

``x_hat = round(clamp(x / s, -Qn, Qp)) * s`` with a straight-through estimator for the rounding,
and the step size ``s`` learned: its gradient is LSQ's

    d x_hat / d s = -x/s + round(x/s)   inside the range,   -Qn or Qp   outside,

scaled by ``g = 1 / sqrt(N * Qp)`` (N: the number of values sharing the step).

Weights use one step per output channel and signed codes; activations one step per tensor,
signed, or unsigned when calibration saw no negative value.

Example::

    wq = LSQQuantizer(4, channels=weight.shape[0])
    wq.init_from(weight, method="mse")
    w_hat = wq(weight)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

INIT_METHODS = ("lsq", "mse", "max")


STEP_MIN = 1e-12  # the smallest step kept when one is pushed to zero


def grad_scale(x: Tensor, scale: float) -> Tensor:
    """``x`` in the forward pass, bit for bit; its gradient multiplied by ``scale`` in the
    backward pass. (``(x - x*scale).detach() + x*scale`` is off by an ulp now and then, which
    moves a value sitting on a rounding boundary to the next code.)"""
    y = x * scale
    return x.detach() + (y - y.detach())


def round_ste(x: Tensor) -> Tensor:
    """Round to nearest in the forward pass, exactly; identity gradient (straight-through)."""
    return x.detach().round() + (x - x.detach())


def lsq(x: Tensor, step: Tensor, qn: int, qp: int, g: float) -> Tensor:
    """Fake-quantize ``x`` with step ``step`` (broadcastable to ``x``) to codes in [-qn, qp]."""
    s = grad_scale(step, g)
    return round_ste(torch.clamp(x / s, -qn, qp)) * s


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(Qn, Qp)``: codes lie in ``[-Qn, Qp]``."""
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def init_step(x: Tensor, bits: int, signed: bool, *, method: str = "mse", dim=None) -> Tensor:
    """A data-driven initial step size.

    Args:
        x: the values (weights, or a calibration sample of activations).
        method: ``"lsq"`` (the paper's ``2 * mean|x| / sqrt(Qp)``), ``"max"`` (``max|x| / Qp``)
            or ``"mse"`` (the clipping of ``max|x|`` among 100 candidates that minimises the
            quantization error, measured in the benchmark to beat the other two at 2-4 bits).
        dim: reduce over all dimensions but this one (per-channel steps along ``dim``); None for
            one step for the whole tensor.

    Returns:
        The steps: shape ``(x.shape[dim],)``, or a scalar tensor.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"unknown step initialisation {method!r}; expected one of {INIT_METHODS}")
    qn, qp = quant_range(bits, signed)
    x = x.detach().float()
    rows = x.reshape(1, -1) if dim is None else x.movedim(dim, 0).reshape(x.shape[dim], -1)
    absmax = rows.abs().amax(1).clamp_min(1e-8)
    if method == "lsq":
        step = 2 * rows.abs().mean(1) / math.sqrt(qp)
    elif method == "max":
        step = absmax / qp
    else:
        step = _mse_step(rows, absmax, qn, qp)
    step = step.clamp_min(1e-8)
    return step.reshape(()) if dim is None else step


def _mse_step(rows: Tensor, absmax: Tensor, qn: int, qp: int, grid: int = 100) -> Tensor:
    best_err = torch.full_like(absmax, float("inf"))
    best = absmax / qp
    for i in range(grid):
        step = absmax * (1 - i / (grid + 10)) / qp
        s = step[:, None]
        err = ((torch.clamp(torch.round(rows / s), -qn, qp) * s - rows) ** 2).sum(1)
        better = err < best_err
        best_err, best = torch.where(better, err, best_err), torch.where(better, step, best)
    return best


class LSQQuantizer(nn.Module):
    """A fake quantizer with a learned step size.

    Args:
        bits: code width (2..8).
        signed: signed codes ``[-2**(b-1), 2**(b-1) - 1]`` or unsigned ``[0, 2**b - 1]``.
        channels: number of steps along dimension 0 of the input (per-output-channel weight
            quantization); None for one step (per tensor).
    """

    def __init__(self, bits: int, *, signed: bool = True, channels: int | None = None):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {bits}")
        self.bits, self.signed, self.channels = bits, signed, channels
        self.step = nn.Parameter(torch.ones(channels) if channels else torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False), persistent=False)

    @property
    def qn(self) -> int:
        return quant_range(self.bits, self.signed)[0]

    @property
    def qp(self) -> int:
        return quant_range(self.bits, self.signed)[1]

    def extra_repr(self) -> str:
        kind = f"per-channel ({self.channels})" if self.channels else "per-tensor"
        return f"bits={self.bits}, signed={self.signed}, {kind}"

    @torch.no_grad()
    def init_from(self, x: Tensor, *, method: str = "mse") -> None:
        """Set the step from data (see :func:`init_step`); unsigned quantizers of activations
        switch to signed codes when ``x`` has negative values."""
        if not self.channels and not self.signed and x.min() < 0:
            self.signed = True
        step = init_step(x, self.bits, self.signed, method=method, dim=0 if self.channels else None)
        self.step.copy_(step)
        self.initialized.fill_(True)

    def grad_scale(self, x: Tensor) -> float:
        per_step = x.numel() // self.channels if self.channels else x.numel()
        return 1.0 / math.sqrt(max(per_step, 1) * self.qp)

    @torch.no_grad()
    def keep_positive(self) -> None:
        """Project the steps back onto positive values. A small step (a row of tiny weights, at
        8 bits) can be pushed through zero by one optimizer step; a negative step still
        quantizes (mirrored) but is no scale an exporter may write (Q/DQ and MatMulNBits scales
        are positive), so the magnitude is kept and the sign dropped."""
        if (self.step <= 0).any():
            self.step.abs_().clamp_(min=STEP_MIN)

    def forward(self, x: Tensor) -> Tensor:
        self.keep_positive()
        step = self.step.view(-1, *([1] * (x.ndim - 1))) if self.channels else self.step
        return lsq(x, step, self.qn, self.qp, self.grad_scale(x))

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """The integer codes of ``x`` (int16), exactly those the forward pass multiplies by s."""
        self.keep_positive()
        step = self.step.view(-1, *([1] * (x.ndim - 1))) if self.channels else self.step
        return torch.clamp(x / step, -self.qn, self.qp).round().to(torch.int16)
