"""edgec's INT2-INT8 kernels from Python: the CUDA extension where it is built and a GPU runs the
tensors, the reference of the low-bit layout (:mod:`toolchain.lowbit.reference`) everywhere else.

* :func:`matmul_nbits`: ``x @ W.T`` for W in the packed layout (weight-only, 2/4/8-bit
  containers; fp16/bf16 activations on the GPU, a GEMV path for M <= 8, tensor cores above).
* :func:`gemm_w8a8`: int8 activation codes x 8-bit packed weights, int32 accumulation, scaled by
  the LSQ activation step and the per-channel weight steps (``out_dtype=torch.int32``: the exact
  integers).
* :class:`NBitsLinear` and :func:`to_kernel_modules`: a packed checkpoint
  (:func:`toolchain.quantize.convert.load_quantized`) run through the kernels.

Shapes the kernels cannot take are refused before any launch, with the rule that failed
(:func:`check_nbits`); the CUDA side checks the same rules.

Example::

    adapter = load_quantized("runs/quantize", device="cuda")
    to_kernel_modules(adapter.model)          # every QuantLinear -> NBitsLinear
    logits = adapter.model.half()(**batch).logits
"""

from __future__ import annotations

import logging
from functools import lru_cache

import torch
from torch import Tensor, nn

from toolchain.lowbit import reference as lb

log = logging.getLogger(__name__)

GEMV_MAX_M = 8  # kernels.h kGemvMaxM: at or below, the GEMV path


@lru_cache(maxsize=1)
def extension() -> tuple[object | None, str]:
    """``(module, "")`` when the ``edgec_kernels`` extension imports, else ``(None, why)``."""
    try:
        import edgec_kernels  # noqa: F401  (registers torch.ops.edgec)
    except ImportError as e:
        return None, (
            f"the edgec_kernels CUDA extension is not built ({e}); build it with a CUDA torch "
            'and nvcc: pip install --no-build-isolation -e ".[gpu]"'
        )
    _register_fakes()
    return edgec_kernels, ""


def _register_fakes() -> None:
    """Shape-only implementations, so torch.compile and meta tensors trace through the ops."""

    @torch.library.register_fake("edgec::matmul_nbits")
    def _(x, packed, scales, bits, k, block_size, bias=None):
        return x.new_empty((*x.shape[:-1], packed.shape[0]))

    @torch.library.register_fake("edgec::gemm_w8a8")
    def _(a, a_scale, a_zero, packed, w_scale, k, block_size, bias, w_rowsum, out_dtype):
        return a.new_empty((*a.shape[:-1], packed.shape[0]), dtype=out_dtype)

    @torch.library.register_fake("edgec::w8_rowsum")
    def _(packed, k, block_size):
        return packed.new_empty((packed.shape[0],), dtype=torch.int32)


def check_nbits(m: int, n: int, k: int, bits: int, block_size: int) -> str | None:
    """None when the kernels take these shapes, else the rule that failed (kernels/csrc)."""
    if m < 1 or n < 1 or k < 1:
        return "M, N and K must be positive"
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        return "weight bits must be in 2..8 (3 is stored in a 4-bit container, 5..7 in 8)"
    if block_size not in lb.BLOCK_SIZES:
        return f"block_size must be one of {lb.BLOCK_SIZES}"
    if k % 16:
        return "K must be a multiple of 16"
    return None


def _check(x_features: int, m: int, packed: Tensor, *, bits: int, k: int, block_size: int) -> int:
    if x_features != k:
        raise ValueError(f"the input has {x_features} features, the weights expect K={k}")
    n = packed.shape[0]
    why = check_nbits(m, n, k, bits, block_size)
    if why:
        raise ValueError(f"matmul_nbits cannot take M={m}, N={n}, K={k}, {bits}-bit: {why}")
    expected = lb.packed_shape(n, k, bits=bits, block_size=block_size)
    if tuple(packed.shape) != expected or packed.dtype != torch.uint8:
        raise ValueError(
            f"packed weights are {packed.dtype} {tuple(packed.shape)}; (N={n}, K={k}) at {bits} "
            f"bits, block {block_size} needs uint8 {expected}"
        )
    return n


def on_kernels(x: Tensor) -> bool:
    """Whether a tensor would run through the CUDA kernels (else the reference)."""
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and extension()[0] is not None


def matmul_nbits(
    x: Tensor,
    packed: Tensor,
    scales: Tensor,
    *,
    bits: int,
    k: int,
    block_size: int,
    bias: Tensor | None = None,
) -> Tensor:
    """``x @ dequantize(packed, scales).T (+ bias)``: (..., K) -> (..., N) in ``x.dtype``."""
    _check(
        x.shape[-1], max(1, x.numel() // max(k, 1)), packed, bits=bits, k=k, block_size=block_size
    )
    if on_kernels(x):
        return torch.ops.edgec.matmul_nbits(x, packed, scales, bits, k, block_size, bias)
    dev = x.device  # the reference runs on any device (fp32 accumulation)
    y = lb.matmul_nbits(
        x, packed.to(dev), scales.float().to(dev), bits=bits, k=k, block_size=block_size
    )
    return y if bias is None else y + bias.to(y.dtype)


def w8_rowsum(packed: Tensor, *, k: int) -> Tensor:
    """Per output channel, the sum of the signed 8-bit codes (int32): the unsigned-activation
    correction of :func:`gemm_w8a8`."""
    codes = lb.to_signed(lb.unpack(packed.cpu(), bits=8, k=k), 8)
    return codes.to(torch.int32).sum(1).to(packed.device)


def gemm_w8a8(
    a: Tensor,
    a_scale: float,
    a_zero: int,
    packed: Tensor,
    w_scale: Tensor,
    *,
    k: int,
    block_size: int,
    bias: Tensor | None = None,
    w_rowsum: Tensor | None = None,
    out_dtype: torch.dtype = torch.float16,
) -> Tensor:
    """``a_scale * w_scale[n] * (a @ w.T + a_zero * rowsum(w)) (+ bias)`` for int8 activation
    codes ``a`` (an unsigned quantizer's codes minus ``a_zero``) and 8-bit packed weights;
    ``out_dtype=torch.int32`` gives the exact integers (no scales, no bias)."""
    if a.dtype != torch.int8:
        raise ValueError(f"activations must be int8 codes, got {a.dtype}")
    n = _check(
        a.shape[-1], max(1, a.numel() // max(k, 1)), packed, bits=8, k=k, block_size=block_size
    )
    if w_scale.numel() != n:
        raise ValueError(f"one weight scale per output channel ({n}), got {tuple(w_scale.shape)}")
    if a.is_cuda and extension()[0] is not None:
        return torch.ops.edgec.gemm_w8a8(
            a,
            float(a_scale),
            int(a_zero),
            packed,
            w_scale,
            k,
            block_size,
            bias,
            w_rowsum,
            out_dtype,
        )
    w = lb.to_signed(lb.unpack(packed.cpu(), bits=8, k=k), 8).to(torch.int64)
    acc = a.cpu().to(torch.int64).reshape(-1, k) @ w.T  # exact: |sum| < 2**31 for K < 2**17
    if a_zero:
        acc = acc + int(a_zero) * w.sum(1)
    acc = acc.reshape(*a.shape[:-1], n).to(a.device)
    if out_dtype == torch.int32:
        return acc.to(torch.int32)
    y = acc.to(torch.float64) * float(a_scale) * w_scale.to(torch.float64).to(a.device)
    if bias is not None:
        y = y + bias.to(torch.float64)
    return y.to(out_dtype)


class NBitsLinear(nn.Module):
    """A Linear whose weight is held packed: the kernels on a GPU, the reference elsewhere.

    Weight-only (``act_step`` None): ``matmul_nbits``. With an LSQ activation quantizer and 8-bit
    weights on the GPU: the activations are quantized to int8 codes and ``gemm_w8a8`` runs; other
    widths fake-quantize the activations and run ``matmul_nbits`` (the same function as
    :class:`~toolchain.quantize.modules.QuantLinear`).
    """

    def __init__(
        self,
        packed: Tensor,
        scales: Tensor,
        bias: Tensor | None,
        *,
        bits: int,
        k: int,
        block_size: int,
        act_step: float | None = None,
        act_bits: int = 8,
        act_signed: bool = True,
    ):
        super().__init__()
        self.bits, self.in_features, self.block_size = bits, k, block_size
        self.out_features = packed.shape[0]
        self.register_buffer("packed", packed.contiguous())
        self.register_buffer("scales", scales.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.act_step, self.act_bits, self.act_signed = act_step, act_bits, act_signed
        self._rowsum: Tensor | None = None

    @classmethod
    def from_quant_linear(cls, q: nn.Module, *, block_size: int = 32) -> NBitsLinear:
        """Pack a trained :class:`~toolchain.quantize.modules.QuantLinear`."""
        codes = q.weight_quant.codes(q.weight.detach().float().cpu())
        packed = lb.pack(lb.to_unsigned(codes, q.w_bits), bits=q.w_bits, block_size=block_size)
        act = q.act_quant
        return cls(
            packed.to(q.weight.device),
            q.weight_quant.step.detach().float().to(q.weight.device),
            q.bias,
            bits=q.w_bits,
            k=q.in_features,
            block_size=block_size,
            act_step=None if act is None else float(act.step),
            act_bits=8 if act is None else act.bits,
            act_signed=True if act is None else bool(act.signed),
        )

    def _act_range(self) -> tuple[int, int]:
        if self.act_signed:
            return -(2 ** (self.act_bits - 1)), 2 ** (self.act_bits - 1) - 1
        return 0, 2**self.act_bits - 1

    def forward(self, x: Tensor) -> Tensor:
        if self.act_step is not None:
            lo, hi = self._act_range()
            codes = torch.clamp(torch.round(x.float() / self.act_step), lo, hi)
            if self.bits == 8 and self.act_bits == 8 and x.is_cuda and extension()[0] is not None:
                zero = 0 if self.act_signed else 128
                if zero and self._rowsum is None:
                    self._rowsum = torch.ops.edgec.w8_rowsum(
                        self.packed, self.in_features, self.block_size
                    )
                return gemm_w8a8(
                    (codes - zero).to(torch.int8),
                    self.act_step,
                    zero,
                    self.packed,
                    self.scales,
                    k=self.in_features,
                    block_size=self.block_size,
                    bias=self.bias,
                    w_rowsum=self._rowsum,
                    out_dtype=x.dtype,
                )
            x = (codes * self.act_step).to(x.dtype)  # fake-quantized, as QuantLinear does
        return matmul_nbits(
            x,
            self.packed,
            self.scales,
            bits=self.bits,
            k=self.in_features,
            block_size=self.block_size,
            bias=self.bias,
        )

    def extra_repr(self) -> str:
        act = "float" if self.act_step is None else f"{self.act_bits}-bit"
        return (
            f"in={self.in_features}, out={self.out_features}, W{self.bits} (block "
            f"{self.block_size}), activations {act}"
        )


def to_kernel_modules(model: nn.Module, *, block_size: int = 32) -> int:
    """Replace every :class:`~toolchain.quantize.modules.QuantLinear` of ``model`` (in place) by
    an :class:`NBitsLinear` holding its packed weight; returns how many were replaced. GPT-2's
    transposed ``Conv1D`` layers are QuantLinear too and are replaced the same way."""
    from toolchain.quantize.modules import QuantLinear

    n = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, QuantLinear):
                setattr(
                    module, child_name, NBitsLinear.from_quant_linear(child, block_size=block_size)
                )
                n += 1
    return n


__all__ = [
    "NBitsLinear",
    "check_nbits",
    "extension",
    "gemm_w8a8",
    "matmul_nbits",
    "on_kernels",
    "to_kernel_modules",
    "w8_rowsum",
]
