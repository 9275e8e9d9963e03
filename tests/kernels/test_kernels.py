"""The kernels' Python side: the shape rules, the reference dispatch, NBitsLinear against the
fake-quant QuantLinear it replaces (CPU, always), and every CUDA kernel against the reference
over widths x shapes (``cuda`` marker: run on a GPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain import kernels as K
from toolchain.lowbit import reference as lb
from toolchain.quantize.modules import QuantLinear


def random_packed(n: int, k: int, bits: int, block_size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    qn, qp = lb.signed_range(bits)
    codes = torch.randint(-qn, qp + 1, (n, k), generator=g)
    packed = lb.pack(lb.to_unsigned(codes, bits), bits=bits, block_size=block_size)
    scales = torch.rand(n, lb.k_blocks(k, block_size), generator=g) * 0.02 + 0.001
    return packed, scales


@pytest.mark.parametrize(
    "shape, rule",
    [
        ((1, 64, 40, 4, 32), "K must be a multiple of 16"),
        ((1, 64, 64, 9, 32), "weight bits must be in 2..8"),
        ((1, 64, 64, 4, 48), "block_size must be one of"),
        ((0, 64, 64, 4, 32), "M, N and K must be positive"),
    ],
)
def test_odd_shapes_are_refused_with_the_rule(shape, rule):
    assert rule in K.check_nbits(*shape)
    m, n, k, bits, block = shape
    if m and bits <= 8 and block in lb.BLOCK_SIZES:
        packed, scales = random_packed(n, 64, bits, block)
        with pytest.raises(ValueError, match=rule):
            K.matmul_nbits(
                torch.randn(max(m, 1), k), packed, scales, bits=bits, k=k, block_size=block
            )


def test_a_packed_tensor_of_the_wrong_shape_is_refused():
    packed, scales = random_packed(32, 64, 4)
    with pytest.raises(ValueError, match=r"needs uint8 \(32, 2, 8\)"):
        K.matmul_nbits(torch.randn(2, 64), packed, scales, bits=2, k=64, block_size=32)
    with pytest.raises(ValueError, match="the weights expect K=64"):
        K.matmul_nbits(torch.randn(2, 48), packed, scales, bits=4, k=64, block_size=32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_cpu_dispatch_is_the_reference(bits):
    packed, scales = random_packed(48, 96, bits)
    x, bias = torch.randn(3, 5, 96), torch.randn(48)
    y = K.matmul_nbits(x, packed, scales, bits=bits, k=96, block_size=32, bias=bias)
    w = lb.dequantize(packed, scales, bits=bits, k=96, block_size=32)
    torch.testing.assert_close(y, x @ w.T + bias, rtol=1e-5, atol=1e-5)
    assert not K.on_kernels(x)


def test_w8a8_reference_is_exact_in_integers_and_matches_the_float_formula():
    packed, _ = random_packed(40, 128, 8)
    w_scale = torch.rand(40) * 0.01 + 1e-3
    u = torch.randint(0, 256, (6, 128))  # an unsigned activation quantizer's codes
    a = (u - 128).to(torch.int8)
    ints = K.gemm_w8a8(a, 0.05, 128, packed, w_scale, k=128, block_size=32, out_dtype=torch.int32)
    w = lb.to_signed(lb.unpack(packed, bits=8, k=128), 8).to(torch.int64)
    assert torch.equal(ints.to(torch.int64), u @ w.T)  # the zero-point correction is exact
    assert torch.equal(K.w8_rowsum(packed, k=128).to(torch.int64), w.sum(1))
    y = K.gemm_w8a8(a, 0.05, 128, packed, w_scale, k=128, block_size=32, out_dtype=torch.float32)
    torch.testing.assert_close(
        y,
        (u.double() * 0.05) @ (w.double() * w_scale.double()[:, None]).T,
        rtol=1e-6,
        atol=1e-6,
        check_dtype=False,
    )
    with pytest.raises(ValueError, match="int8 codes"):
        K.gemm_w8a8(u, 0.05, 0, packed, w_scale, k=128, block_size=32)


@pytest.mark.parametrize("w_bits, a_bits", [(4, None), (2, 8), (8, 8), (8, None)])
def test_nbits_linear_equals_the_quant_linear_it_replaces(w_bits, a_bits):
    torch.manual_seed(w_bits)
    model = nn.Sequential(QuantLinear(nn.Linear(64, 48), w_bits, a_bits))
    x = torch.randn(4, 7, 64)
    q = model[0]
    q.weight_quant.init_from(q.weight.detach())
    if q.act_quant is not None:
        q.act_quant.init_from(x)
    expected = model(x)
    assert K.to_kernel_modules(model, block_size=32) == 1
    assert isinstance(model[0], K.NBitsLinear)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


# -- GPU: every kernel against the reference -----------------------------------------------------
SHAPES = [(384, 1536), (1536, 384), (768, 3072), (3072, 768), (768, 2304), (4096, 4096)]
MS = [1, 3, 8, 17, 128, 512]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("k, n", SHAPES)
def test_matmul_nbits_kernel_matches_the_reference(k, n, bits, dtype):
    if K.extension()[0] is None:
        pytest.fail(K.extension()[1])  # a GPU without the extension is a broken install
    if dtype == torch.bfloat16 and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 tensor cores need sm_80")
    packed, scales = random_packed(n, k, bits, seed=k + n + bits)
    w = lb.dequantize(packed, scales, bits=bits, k=k, block_size=32).cuda()
    for m in MS:
        x = torch.randn(m, k, device="cuda").to(dtype)
        y = K.matmul_nbits(x, packed.cuda(), scales.cuda(), bits=bits, k=k, block_size=32)
        ref = x.float() @ w.T
        rel = (y.float() - ref).norm() / ref.norm()
        tol = 1e-3 if dtype == torch.float16 else 8e-3  # bf16 keeps 8 mantissa bits
        assert rel < tol, f"M={m} K={k} N={n} W{bits} {dtype}: relative error {rel:.2e}"


@pytest.mark.cuda
@pytest.mark.parametrize("block_size", [16, 64, 128, 256])
@pytest.mark.parametrize("bits", [2, 4])
def test_every_block_size_and_the_bias_on_the_gpu(block_size, bits):
    if K.extension()[0] is None:
        pytest.fail(K.extension()[1])
    k, n = 1152, 384  # 1152 = 4.5 x 256: with block 256 the last block is padded
    packed, scales = random_packed(n, k, bits, block_size, seed=block_size)
    w = lb.dequantize(packed, scales, bits=bits, k=k, block_size=block_size).cuda()
    bias = torch.randn(n, device="cuda").half()
    for m in (1, 5, 17, 130):
        x = torch.randn(m, k, device="cuda").half()
        y = K.matmul_nbits(
            x, packed.cuda(), scales.cuda(), bits=bits, k=k, block_size=block_size, bias=bias
        )
        ref = x.float() @ w.T + bias.float()
        rel = (y.float() - ref).norm() / ref.norm()
        assert rel < 1e-3, f"M={m} block {block_size} W{bits}: relative error {rel:.2e}"


@pytest.mark.cuda
def test_views_off_the_vector_boundary_give_the_same_results():
    """A contiguous view starting 1 element into its storage (2 bytes for x, 1 for int8 codes):
    the binding copies it to an aligned tensor instead of faulting on the vector loads."""
    if K.extension()[0] is None:
        pytest.fail(K.extension()[1])
    k, n = 768, 256
    packed, scales = random_packed(n, k, 4)
    packed, scales = packed.cuda(), scales.cuda()
    x = torch.randn(3 * k + 1, device="cuda").half()[1:].view(3, k)
    assert x.data_ptr() % 16 and x.is_contiguous()
    y = K.matmul_nbits(x, packed, scales, bits=4, k=k, block_size=32)
    assert torch.equal(y, K.matmul_nbits(x.clone(), packed, scales, bits=4, k=k, block_size=32))
    p8, _ = random_packed(n, k, 8)
    a = torch.randint(-128, 128, (20 * k + 1,), dtype=torch.int8, device="cuda")[1:].view(20, k)
    args = dict(k=k, block_size=32, out_dtype=torch.int32)
    ints = K.gemm_w8a8(a, 0.1, 0, p8.cuda(), torch.ones(n, device="cuda"), **args)
    assert torch.equal(ints.cpu(), K.gemm_w8a8(a.cpu(), 0.1, 0, p8, torch.ones(n), **args))


@pytest.mark.cuda
@pytest.mark.parametrize("k, n", SHAPES)
def test_w8a8_kernel_is_bit_exact_in_integers(k, n):
    if K.extension()[0] is None:
        pytest.fail(K.extension()[1])
    packed, _ = random_packed(n, k, 8, seed=k * n)
    w_scale = torch.rand(n) * 0.01 + 1e-3
    for m in MS:
        for zero in (0, 128):
            a = torch.randint(-128, 128 - zero, (m, k), dtype=torch.int8)
            args = dict(k=k, block_size=32)
            gpu = K.gemm_w8a8(
                a.cuda(), 0.02, zero, packed.cuda(), w_scale.cuda(), **args, out_dtype=torch.int32
            )
            cpu = K.gemm_w8a8(a, 0.02, zero, packed, w_scale, **args, out_dtype=torch.int32)
            assert torch.equal(gpu.cpu(), cpu), f"M={m} K={k} N={n} zero {zero}"
            y = K.gemm_w8a8(
                a.cuda(), 0.02, zero, packed.cuda(), w_scale.cuda(), **args, out_dtype=torch.float16
            )
            ref = cpu.double() * 0.02 * w_scale.double()
            rel = (y.double().cpu() - ref).norm() / ref.norm()
            assert rel < 1e-3, f"M={m} K={k} N={n}: relative error {rel:.2e}"


@pytest.mark.cuda
def test_a_packed_checkpoint_runs_through_the_kernels_on_the_gpu():
    torch.manual_seed(0)
    model = nn.Sequential(
        QuantLinear(nn.Linear(768, 3072), 4, None),
        nn.GELU(),
        QuantLinear(nn.Linear(3072, 768), 8, 8),
    ).cuda()
    x = torch.randn(2, 128, 768, device="cuda")
    for q in (model[0], model[2]):
        q.weight_quant.init_from(q.weight.detach())
    model[2].act_quant.init_from(model[1](model[0](x)))
    expected = model(x)
    assert K.to_kernel_modules(model) == 2
    y = model.half()(x.half())
    rel = (y.float() - expected).norm() / expected.norm()
    assert rel < 1e-2 and K.on_kernels(x.half())
