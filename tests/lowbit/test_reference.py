"""The low-bit layout: bit-exact pack/unpack, dequantize and GEMM, and agreement with ONNX
Runtime's MatMulNBits (the layout is the same buffers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolchain.lowbit import reference as lb

WIDTHS = range(2, 9)
AWKWARD_K = (1, 17, 31, 32, 33, 100, 257)


def random_codes(n: int, k: int, bits: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed codes, stored uint8 codes) of an (n, k) weight."""
    g = torch.Generator().manual_seed(seed)
    qn, qp = lb.signed_range(bits)
    q = torch.randint(-qn, qp + 1, (n, k), generator=g)
    return q, lb.to_unsigned(q, bits)


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("k", AWKWARD_K)
@pytest.mark.parametrize("block_size", (16, 32, 128))
def test_pack_unpack_bit_exact(bits, k, block_size):
    _, codes = random_codes(3, k, bits, seed=bits * 1000 + k)
    packed = lb.pack(codes, bits=bits, block_size=block_size)
    assert packed.dtype == torch.uint8
    assert tuple(packed.shape) == lb.packed_shape(3, k, bits=bits, block_size=block_size)
    torch.testing.assert_close(lb.unpack(packed, bits=bits, k=k), codes, rtol=0, atol=0)


def test_container_widths():
    assert [lb.container_bits(b) for b in WIDTHS] == [2, 4, 4, 8, 8, 8, 8]
    assert lb.zero_point(3) == 8 and lb.zero_point(2) == 2 and lb.zero_point(6) == 128


def test_layout_is_lsb_first_along_k():
    codes = torch.tensor([[1, 2, 3, 4]], dtype=torch.uint8)
    assert lb.pack(codes, bits=4, block_size=16)[0, 0, :2].tolist() == [0x21, 0x43]
    two = torch.tensor([[1, 2, 3, 0]], dtype=torch.uint8)
    assert lb.pack(two, bits=2, block_size=16)[0, 0, 0].item() == 1 | 2 << 2 | 3 << 4 | 0 << 6
    # the padded tail of the block holds the zero point (dequantizes to 0)
    assert lb.pack(codes, bits=4, block_size=16)[0, 0, 2:].tolist() == [0x88] * 6


@pytest.mark.parametrize("bits", WIDTHS)
def test_dequantize_and_gemm_match_the_formula(bits):
    n, k, block = 5, 45, 16
    q, codes = random_codes(n, k, bits)
    steps = torch.rand(n) + 0.1
    packed = lb.pack(codes, bits=bits, block_size=block)
    expected = q.float() * steps[:, None]
    w = lb.dequantize(packed, steps, bits=bits, k=k, block_size=block)
    torch.testing.assert_close(w, expected, rtol=0, atol=0)
    blocks = lb.block_scales(steps, k, block)
    assert blocks.shape == (n, 3)
    torch.testing.assert_close(lb.dequantize(packed, blocks, bits=bits, k=k, block_size=block), w)
    for m in (1, 3, 17):
        x = torch.randn(m, k)
        y = lb.matmul_nbits(x, packed, steps, bits=bits, k=k, block_size=block)
        torch.testing.assert_close(y, x @ expected.T, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_refused_with_the_rule():
    with pytest.raises(ValueError, match="weight bits must be an integer in 2..8"):
        lb.container_bits(9)
    with pytest.raises(ValueError, match="block_size must be one of"):
        lb.pack(torch.zeros(2, 8, dtype=torch.uint8), bits=4, block_size=48)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        lb.pack(torch.full((1, 4), 4, dtype=torch.uint8), bits=2, block_size=16)
    with pytest.raises(ValueError, match="signed codes must lie in"):
        lb.to_unsigned(torch.tensor([[8]]), 4)
    packed = lb.pack(torch.zeros(2, 8, dtype=torch.uint8), bits=4, block_size=16)
    with pytest.raises(ValueError, match=r"scales must have shape \(2, 1\) or \(2,\)"):
        lb.dequantize(packed, torch.ones(3), bits=4, k=8, block_size=16)
    with pytest.raises(ValueError, match="x has 7 features, the weights expect K=8"):
        lb.matmul_nbits(torch.ones(1, 7), packed, torch.ones(2), bits=4, k=8, block_size=16)


@pytest.mark.parametrize("bits", (2, 4, 8))
@pytest.mark.parametrize("k", (64, 100))
def test_onnxruntime_matmulnbits_reads_the_same_buffers(bits, k):
    """A stock ONNX Runtime MatMulNBits node fed our packed codes and block scales computes the
    reference GEMM (default zero point, no zero-point input)."""
    pytest.importorskip("onnxruntime")
    from ort_nbits import matmul_nbits_session

    n, m, block = 24, 5, 32
    _, codes = random_codes(n, k, bits, seed=k)
    steps = torch.rand(n) * 0.1 + 0.01
    packed = lb.pack(codes, bits=bits, block_size=block)
    scales = lb.block_scales(steps, k, block)
    sess = matmul_nbits_session(packed, scales, k=k, n=n, bits=bits, block_size=block)
    x = torch.randn(m, k)
    got = sess.run(None, {"A": x.numpy()})[0]
    ref = lb.matmul_nbits(x, packed, scales, bits=bits, k=k, block_size=block).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
