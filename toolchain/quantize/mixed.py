"""Mixed precision: per-layer weight widths that meet a size budget at the least accuracy cost.

Each layer's *sensitivity* at width ``b`` is measured: the KL divergence of the float model's
output distribution from that of the same model with only this layer's weights quantized to ``b``
bits (MSE-initialised steps), on a calibration sample. :func:`allocate` then starts every layer
at the narrowest width and repeatedly widens the layer that buys the largest sensitivity drop per
extra stored bit, while the budget allows.

Widths are priced by their storage (a 3-bit layer is stored in a 4-bit container), so the default
choices are the containers themselves: 2, 4 and 8.

Example::

    sens = sensitivity(model, plan, batches, choices=(2, 4, 8))
    widths = allocate(sizes, sens, budget_bits=3.0 * sum(sizes.values()))
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from toolchain.errors import ConfigError
from toolchain.log import progress
from toolchain.lowbit.reference import container_bits
from toolchain.quantize.lsq import init_step, quant_range

log = logging.getLogger(__name__)


@torch.no_grad()
def _fake_quant(weight: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    qn, qp = quant_range(bits, True)
    step = init_step(weight, bits, True, method="mse", dim=dim)
    shape = [1] * weight.ndim
    shape[dim] = -1
    s = step.view(shape)
    return torch.clamp(torch.round(weight / s), -qn, qp) * s


@torch.no_grad()
def sensitivity(
    model: nn.Module,
    plan: dict[str, int],
    batches: list[dict],
    *,
    choices: tuple[int, ...] = (2, 4, 8),
) -> dict[str, dict[int, float]]:
    """``{module: {bits: KL(float || this module alone at bits)}}``, averaged over ``batches``."""
    model.eval()
    modules = dict(model.named_modules())
    inputs = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    reference = [F.log_softmax(_logits(model, b), -1) for b in inputs]
    out: dict[str, dict[int, float]] = {}
    for name in progress(list(plan), desc="sensitivity", unit="layer"):
        m = modules[name]
        original = m.weight.data
        dim = 1 if type(m).__name__ == "Conv1D" else 0  # output channels
        out[name] = {}
        try:
            for bits in choices:
                m.weight.data = _fake_quant(original.float(), bits, dim).to(original.dtype)
                kl = sum(
                    F.kl_div(
                        F.log_softmax(_logits(model, b), -1),
                        r,
                        log_target=True,
                        reduction="batchmean",
                    ).item()
                    for b, r in zip(inputs, reference, strict=True)
                )
                out[name][bits] = max(kl / len(inputs), 0.0)  # rounding can dip below 0
        finally:
            m.weight.data = original
    return out


def _logits(model: nn.Module, batch: dict) -> torch.Tensor:
    logits = model(**batch).logits.float()
    return logits.reshape(-1, logits.shape[-1])


def allocate(
    sizes: dict[str, int],
    sens: dict[str, dict[int, float]],
    *,
    budget_bits: float,
) -> dict[str, int]:
    """Widths per layer whose stored bits ``sum(sizes[l] * container(bits[l]))`` fit the budget.

    Args:
        sizes: weights per layer.
        sens: per layer and width, the measured loss (see :func:`sensitivity`).
        budget_bits: total stored bits allowed for these weights.

    Raises:
        ConfigError: even the narrowest width everywhere exceeds the budget.
    """
    choices = {n: sorted(sens[n]) for n in sizes}
    widths = {n: c[0] for n, c in choices.items()}
    used = sum(sizes[n] * container_bits(b) for n, b in widths.items())
    if used > budget_bits:
        raise ConfigError(
            f"the size budget ({budget_bits / 8 / 2**20:.2f} MiB of weights) is below the "
            f"smallest packing ({used / 8 / 2**20:.2f} MiB with every layer at its narrowest "
            "width): raise the budget, quantize the embeddings, or allow narrower widths",
            key="quantize.avg_bits",
        )
    while True:
        best, best_gain = None, 0.0
        for n, b in widths.items():
            wider = [c for c in choices[n] if c > b]
            if not wider:
                continue
            nxt = wider[0]
            extra = sizes[n] * (container_bits(nxt) - container_bits(b))
            if used + extra > budget_bits:
                continue
            gain = (sens[n][b] - sens[n][nxt]) / max(extra, 1)
            if best is None or gain > best_gain:
                best, best_gain = (n, nxt, extra), gain
        if best is None:
            break
        n, nxt, extra = best
        widths[n] = nxt
        used += extra
    log.info(
        "mixed precision: %.3f stored bits per weight (budget %.3f)",
        used / sum(sizes.values()),
        budget_bits / sum(sizes.values()),
    )
    return widths


def layer_sizes(model: nn.Module, plan: dict[str, int]) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {n: modules[n].weight.numel() for n in plan}
