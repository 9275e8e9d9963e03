"""The one low-bit weight layout of edgec, in plain torch: the specification that the ONNX export,
the CUDA kernels and the TensorRT plugin follow, and that their tests compare against.

Layout (ONNX Runtime ``com.microsoft::MatMulNBits``):

* A weight ``W`` of shape (N, K) (N output channels, K input features) is split along K into
  ``k_blocks = ceil(K / block_size)`` blocks. A last, partial block is padded with the zero
  point (so it dequantizes to 0).
* Codes are unsigned integers of ``container`` bits (2, 4 or 8), packed little-endian, LSB first,
  contiguously along K: byte ``j`` of a block holds codes ``j*per .. j*per+per-1`` with
  ``per = 8 // container``, code ``i`` at bit offset ``(i % per) * container``.
  Packed shape: (N, k_blocks, block_size * container // 8), dtype uint8.
* ``W[n, k] = (code[n, k] - zero_point) * scale[n, k // block_size]``; the zero point defaults to
  ``2 ** (container - 1)``.

A width without its own container is stored in the next one up (3 -> 4, 5..7 -> 8). Symmetric
signed LSQ codes ``q`` in ``[-2**(bits-1), 2**(bits-1) - 1]`` are stored as
``q + 2**(container-1)``, so the default zero point applies and no zero-point tensor is needed;
the per-channel LSQ step is the scale of every block of its row.

Example::

    packed = pack(codes, bits=4, block_size=32)            # codes: (N, K) uint8 in [0, 16)
    w = dequantize(packed, scales, bits=4, k=K, block_size=32)
    y = matmul_nbits(x, packed, scales, bits=4, k=K, block_size=32)   # x @ w.T
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CONTAINERS = (2, 4, 8)
BLOCK_SIZES = (16, 32, 64, 128, 256)


def container_bits(bits: int) -> int:
    """The storage width of a code width: 2 -> 2, 3..4 -> 4, 5..8 -> 8."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"weight bits must be an integer in 2..8, got {bits!r}")
    return next(c for c in CONTAINERS if c >= bits)


def signed_range(bits: int) -> tuple[int, int]:
    """``(qn, qp)``: signed codes lie in ``[-qn, qp]`` (``qn = 2**(bits-1)``, ``qp = qn - 1``)."""
    return 2 ** (bits - 1), 2 ** (bits - 1) - 1


def zero_point(bits: int) -> int:
    """The default zero point of the container that holds ``bits``-bit codes."""
    return 2 ** (container_bits(bits) - 1)


def k_blocks(k: int, block_size: int) -> int:
    return math.ceil(k / block_size)


def packed_shape(n: int, k: int, *, bits: int, block_size: int) -> tuple[int, int, int]:
    """(N, k_blocks, block_size * container // 8)."""
    check_block_size(block_size)
    return n, k_blocks(k, block_size), block_size * container_bits(bits) // 8


def check_block_size(block_size: int) -> None:
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size}")


def to_unsigned(q: Tensor, bits: int) -> Tensor:
    """Signed codes (any integer or float dtype holding integers) -> stored uint8 codes."""
    qn, qp = signed_range(bits)
    if q.numel() and (q.min() < -qn or q.max() > qp):
        raise ValueError(f"{bits}-bit signed codes must lie in [{-qn}, {qp}]")
    return (q.to(torch.int16) + zero_point(bits)).to(torch.uint8)


def to_signed(codes: Tensor, bits: int) -> Tensor:
    """Stored uint8 codes -> signed int8 codes."""
    return (codes.to(torch.int16) - zero_point(bits)).to(torch.int8)


def pack(codes: Tensor, *, bits: int, block_size: int) -> Tensor:
    """Pack unsigned codes (N, K) into the MatMulNBits layout (N, k_blocks, blob) uint8.

    Args:
        codes: (N, K) integer codes in ``[0, 2**container)``.
        bits: the code width (2..8); the container is ``container_bits(bits)``.
        block_size: codes per block along K (16..256, a power of two).
    """
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (N, K), got shape {tuple(codes.shape)}")
    cbits = container_bits(bits)
    n, k = codes.shape
    _, kb, blob = packed_shape(n, k, bits=bits, block_size=block_size)
    c = codes.to(torch.int32)
    if c.numel() and (c.min() < 0 or c.max() >= 2**cbits):
        raise ValueError(f"codes must lie in [0, {2**cbits}) for a {cbits}-bit container")
    padded = torch.full((n, kb * block_size), zero_point(bits), dtype=torch.int32)
    padded[:, :k] = c
    per = 8 // cbits
    groups = padded.view(n, -1, per)  # (N, bytes, codes per byte)
    shifts = torch.arange(per, dtype=torch.int32) * cbits
    packed = (groups << shifts).sum(-1)
    return packed.to(torch.uint8).view(n, kb, blob)


def unpack(packed: Tensor, *, bits: int, k: int) -> Tensor:
    """The inverse of :func:`pack`: (N, k_blocks, blob) uint8 -> (N, K) uint8 codes."""
    if packed.ndim != 3 or packed.dtype != torch.uint8:
        raise ValueError(
            f"packed weights must be 3-D uint8 (N, k_blocks, blob), got {packed.dtype} "
            f"{tuple(packed.shape)}"
        )
    cbits = container_bits(bits)
    n, kb, blob = packed.shape
    per = 8 // cbits
    if kb * blob * per < k:
        raise ValueError(f"packed weights hold {kb * blob * per} codes per row, fewer than K={k}")
    shifts = torch.arange(per, dtype=torch.int32, device=packed.device) * cbits
    codes = (packed.to(torch.int32).view(n, -1, 1) >> shifts) & (2**cbits - 1)
    return codes.view(n, -1)[:, :k].to(torch.uint8)


def block_scales(channel_scales: Tensor, k: int, block_size: int) -> Tensor:
    """Per-channel steps (N,) -> per-block scales (N, k_blocks), each row its channel's step."""
    return channel_scales.reshape(-1, 1).expand(-1, k_blocks(k, block_size)).contiguous()


def dequantize(
    packed: Tensor,
    scales: Tensor,
    *,
    bits: int,
    k: int,
    block_size: int,
    zero_points: Tensor | None = None,
) -> Tensor:
    """(N, K) float32 weights from packed codes.

    Args:
        packed: (N, k_blocks, blob) uint8.
        scales: (N, k_blocks) per-block scales, or (N,) per-channel steps.
        zero_points: (N, k_blocks) unsigned zero points; default ``2**(container-1)``.
    """
    codes = unpack(packed, bits=bits, k=k).to(torch.float32)
    n, kb = packed.shape[0], packed.shape[1]
    if scales.ndim == 1:
        scales = block_scales(scales, k, block_size)
    if tuple(scales.shape) != (n, kb):
        raise ValueError(f"scales must have shape ({n}, {kb}) or ({n},), got {tuple(scales.shape)}")
    zp = (
        torch.full((n, kb), float(zero_point(bits)), device=packed.device)
        if zero_points is None
        else zero_points.to(torch.float32).reshape(n, kb)
    )
    per_k = torch.arange(k, device=packed.device) // block_size
    return (codes - zp[:, per_k]) * scales.to(device=packed.device, dtype=torch.float32)[:, per_k]


def matmul_nbits(
    x: Tensor,
    packed: Tensor,
    scales: Tensor,
    *,
    bits: int,
    k: int,
    block_size: int,
    zero_points: Tensor | None = None,
) -> Tensor:
    """The reference GEMM: ``x @ dequantize(packed, scales).T``, accumulated in float32.

    x: (..., K) · packed: (N, k_blocks, blob) uint8 · scales: (N, k_blocks) or (N,)
    -> (..., N) in ``x.dtype``.
    """
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} features, the weights expect K={k}")
    w = dequantize(packed, scales, bits=bits, k=k, block_size=block_size, zero_points=zero_points)
    return (x.to(torch.float32) @ w.T).to(x.dtype)


def packed_bytes(n: int, k: int, *, bits: int, block_size: int) -> int:
    """Bytes of the packed codes of an (N, K) weight."""
    rows, kb, blob = packed_shape(n, k, bits=bits, block_size=block_size)
    return rows * kb * blob
