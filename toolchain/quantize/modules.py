"""Fake-quantized layers and the choice of what to quantize.

:class:`QuantLinear` quantizes its weight per output channel and its input per tensor (LSQ);
:class:`QuantEmbedding` quantizes its table per row, only the rows a batch looks up.
:func:`plan_modules` picks the layers (every Linear of the blocks and the pooler; embeddings on
request; the classifier excluded by default; per-module widths by glob) and
:func:`quantize_modules` swaps them in place.

Example::

    plan = plan_modules(model, weight_bits=4, quantize_embeddings=True)
    quantize_modules(model, plan, act_bits=8)
"""

from __future__ import annotations

import fnmatch
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolchain.config import QuantizeConfig
from toolchain.errors import ConfigError
from toolchain.quantize.lsq import LSQQuantizer, lsq

log = logging.getLogger(__name__)

# Heads that stay in float unless a user's override names them.
DEFAULT_EXCLUDE: tuple[str, ...] = QuantizeConfig.exclude
_SAMPLE = 1 << 16  # activation values kept per calibration batch


class QuantLinear(nn.Module):
    """``y = Q_a(x) @ Q_w(W).T + b`` (a Linear, or a GPT-2 ``Conv1D`` stored transposed).

    Attributes:
        weight: (N, K) float master weights (trained by KDLSQ).
        weight_quant: per-channel :class:`LSQQuantizer` (N steps).
        act_quant: per-tensor :class:`LSQQuantizer`, or None for float activations.
        calibrating: when True the layer runs in float and keeps a sample of its inputs.
    """

    def __init__(self, layer: nn.Module, w_bits: int, a_bits: int | None):
        super().__init__()
        self.from_conv1d = not isinstance(layer, nn.Linear)  # GPT-2's Conv1D stores W.T
        weight = layer.weight if not self.from_conv1d else layer.weight.detach().T
        self.out_features, self.in_features = weight.shape
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight.clone())
        self.bias = layer.bias
        self.weight_quant = LSQQuantizer(w_bits, channels=self.out_features)
        self.act_quant = LSQQuantizer(a_bits, signed=False) if a_bits else None
        self.calibrating = False
        self.seen: list[Tensor] = []

    @property
    def w_bits(self) -> int:
        return self.weight_quant.bits

    def forward(self, x: Tensor) -> Tensor:
        if self.calibrating:
            self.seen.append(_sample(x))
            return F.linear(x, self.weight, self.bias)
        if self.act_quant is not None:
            x = self.act_quant(x)
        return F.linear(x, self.weight_quant(self.weight), self.bias)


class QuantEmbedding(nn.Module):
    """An embedding table quantized per row (one LSQ step per token), looked up then quantized."""

    def __init__(self, layer: nn.Embedding, w_bits: int):
        super().__init__()
        self.weight = layer.weight
        self.padding_idx = layer.padding_idx
        self.num_embeddings, self.embedding_dim = layer.weight.shape
        self.weight_quant = LSQQuantizer(w_bits, channels=self.num_embeddings)
        self.calibrating = False

    @property
    def w_bits(self) -> int:
        return self.weight_quant.bits

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids, self.weight, self.padding_idx)
        if self.calibrating:
            return rows
        q = self.weight_quant
        q.keep_positive()
        steps = q.step[ids].unsqueeze(-1)
        return lsq(rows, steps, q.qn, q.qp, 1.0 / (self.embedding_dim * q.qp) ** 0.5)


QUANT_TYPES = (QuantLinear, QuantEmbedding)


def _sample(x: Tensor) -> Tensor:
    flat = x.detach().reshape(-1).float()
    if flat.numel() <= _SAMPLE:
        return flat.cpu()
    idx = torch.randint(0, flat.numel(), (_SAMPLE,), device=flat.device)
    # keep the extremes: the clipping search must see them
    return torch.cat([flat[idx], flat.min()[None], flat.max()[None]]).cpu()


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def plan_modules(
    model: nn.Module,
    *,
    weight_bits: int,
    quantize_embeddings: bool = False,
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
    overrides: dict[str, int] | None = None,
) -> dict[str, int]:
    """Which modules to quantize, at which weight width.

    Args:
        model: a Hugging Face model.
        weight_bits: default width (2..8).
        quantize_embeddings: also quantize the ``nn.Embedding`` tables.
        exclude: fnmatch patterns of module names left in float.
        overrides: ``{pattern: bits}``; a module matching several takes the last; an override
            also brings back a module that ``exclude`` or the embeddings switch left out.

    Returns:
        ``{module name: bits}`` in model order.

    Raises:
        ConfigError: an override pattern matches no quantizable module.
    """
    overrides = dict(overrides or {})
    plan: dict[str, int] = {}
    used = set()
    for name, module in model.named_modules():
        is_emb = isinstance(module, nn.Embedding)
        if not (_is_linear(module) or is_emb):
            continue
        bits = None
        if (quantize_embeddings or not is_emb) and not any(
            fnmatch.fnmatch(name, p) for p in exclude
        ):
            bits = weight_bits
        for pattern, value in overrides.items():
            if fnmatch.fnmatch(name, pattern):
                bits = value
                used.add(pattern)
        if bits is not None:
            plan[name] = bits
    _refuse_tied_float_heads(model, plan)
    unused = [p for p in overrides if p not in used]
    if unused:
        raise ConfigError(
            f"quantize.overrides pattern(s) {unused} match no Linear or Embedding module; "
            f"quantizable names look like {next(iter(plan), 'encoder.layer.0.output.dense')}",
            key="quantize.overrides",
        )
    return plan


def _refuse_tied_float_heads(model: nn.Module, plan: dict[str, int]) -> None:
    """A quantized table shared with a float head (GPT-2's tied LM head) would train against the
    float copy and reload as the quantized one: refuse it up front."""
    owners: dict[int, str] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            owners.setdefault(weight.data_ptr(), name)
            other = owners[weight.data_ptr()]
            if other != name and (other in plan) != (name in plan):
                raise ConfigError(
                    f"{name} shares its weight with {other}, and only one of them would be "
                    "quantized: quantize both (an override for the float one) or neither "
                    "(drop --embeddings)",
                    key="quantize.quantize_embeddings",
                )


def quantize_modules(model: nn.Module, plan: dict[str, int], *, act_bits: int | None) -> nn.Module:
    """Replace every module named in ``plan`` by its fake-quantized version, in place.

    Weights are shared with the original modules (a GPT-2 ``Conv1D`` gets a transposed copy).
    Step sizes start at 1: call :func:`toolchain.quantize.calibrate.calibrate` next.
    """
    modules = dict(model.named_modules())
    for name, bits in plan.items():
        module = modules.get(name)
        if module is None:
            raise ConfigError(f"the model has no module {name!r} to quantize")
        if isinstance(module, nn.Embedding):
            new = QuantEmbedding(module, bits)
        elif _is_linear(module):
            new = QuantLinear(module, bits, act_bits)
        else:
            raise ConfigError(f"{name} is a {type(module).__name__}; only Linear and Embedding")
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
    log.info("quantized %d modules (activations: %s bits)", len(plan), act_bits or "float")
    return model


def quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: QuantLinear | QuantEmbedding}`` of a quantized model."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QUANT_TYPES)}
