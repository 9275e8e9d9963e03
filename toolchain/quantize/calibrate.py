"""Step-size initialisation from data, and round-to-nearest post-training quantization.

:func:`calibrate` sets every weight step from the weights and every activation step from the
inputs a few batches send through the float model. With ``weight_init="max"`` and
``act_init="max"`` and no training afterwards this *is* the RTN baseline (:func:`rtn`):
per-channel ``max|w| / Qp`` weights, per-tensor min-max activations.

Example::

    quantize_modules(model, plan, act_bits=8)
    calibrate(model, calibration_batches, weight_init="mse", act_init="mse")
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from toolchain.quantize.modules import QuantEmbedding, QuantLinear, quantized_modules

log = logging.getLogger(__name__)


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[dict],
    *,
    weight_init: str = "mse",
    act_init: str = "mse",
) -> dict[str, dict]:
    """Initialise every LSQ step of a quantized ``model``.

    Args:
        model: a model after :func:`~toolchain.quantize.modules.quantize_modules`.
        batches: model inputs (dicts of tensors on the model's device); the float model runs on
            them and each QuantLinear keeps a sample of its inputs.
        weight_init, act_init: ``"mse"``, ``"lsq"`` or ``"max"``
            (see :func:`toolchain.quantize.lsq.init_step`).

    Returns:
        ``{module: {"w_bits", "a_step", "a_signed"}}`` for the log and the stage record.
    """
    modules = quantized_modules(model)
    for m in modules.values():
        m.weight_quant.init_from(m.weight, method=weight_init)
    acts = {n: m for n, m in modules.items() if isinstance(m, QuantLinear) and m.act_quant}
    if acts:
        _run_float(model, modules.values(), batches)
    summary = {}
    for name, m in modules.items():
        info = {"w_bits": m.w_bits}
        if name in acts:
            if not m.seen:
                raise RuntimeError(f"calibration batches never reached {name}")
            sample = torch.cat(m.seen)
            m.seen = []
            m.act_quant.init_from(sample.to(m.weight.device), method=act_init)
            info.update(a_step=float(m.act_quant.step), a_signed=m.act_quant.signed)
        summary[name] = info
    log.info("calibrated %d quantized modules (%d activation quantizers)", len(modules), len(acts))
    return summary


def _run_float(model: nn.Module, modules, batches: Iterable[dict]) -> None:
    was_training = model.training
    model.eval()
    for m in modules:
        m.calibrating = True
    try:
        count = 0
        for batch in batches:
            model(**{k: v for k, v in batch.items() if k != "labels"})
            count += 1
        if not count:
            raise ValueError("calibration needs at least one batch")
    finally:
        for m in modules:
            m.calibrating = False
        model.train(was_training)


def rtn(model: nn.Module, batches: Iterable[dict]) -> dict[str, dict]:
    """Round-to-nearest PTQ: per-channel max-abs weight steps, per-tensor min-max activations."""
    return calibrate(model, batches, weight_init="max", act_init="max")


@torch.no_grad()
def weight_sqnr_db(model: nn.Module) -> dict[str, float]:
    """Signal-to-quantization-noise ratio (dB) of every quantized weight at its current steps."""
    out = {}
    for name, m in quantized_modules(model).items():
        w = m.weight.float()
        err = m.weight_quant(w) - w if isinstance(m, QuantLinear) else _emb_error(m)
        out[name] = float(10 * torch.log10(w.pow(2).sum() / err.pow(2).sum().clamp_min(1e-20)))
    return out


def _emb_error(m: QuantEmbedding) -> torch.Tensor:
    ids = torch.arange(m.num_embeddings, device=m.weight.device)
    return m(ids) - m.weight
