"""edgec's INT2-INT8 CUDA kernels against cuBLAS fp16 and dequantize-then-matmul, on the GPU this
runs on. Writes ``benchmarks/results/kernels.json`` and ``kernels.md``.

    python benchmarks/bench_kernels.py            # needs a GPU and the built edgec_kernels

Per width and shape: the kernel's median time (CUDA events, after warm-up), the bytes it must
move (packed weights, scales, activations, output) over that time as GB/s and as a share of the
GPU's peak DRAM bandwidth (memory clock x bus width, from the driver), and the speed-up over
``torch.matmul`` in fp16 (cuBLAS) and over dequantizing the weights then ``torch.matmul``.
Goals (batch 1, K and N >= 4096): W4 >= 3.3x and W2 >= 6x over fp16, both at >= 75% of peak
bandwidth; the INT8 GEMM >= 1.5x fp16 at M >= 256.

Without a GPU it says so and writes nothing: no figure here is ever estimated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (768, 3072), (3072, 768), (384, 1536)]
MS = [1, 4, 8, 16, 32, 128, 256, 512]


def peak_gbps() -> float:
    """2 x memory clock x bus width: the DRAM's peak, from the CUDA runtime's attributes."""
    import torch

    from toolchain.profile.runners import CudaRuntime

    cuda = CudaRuntime()
    clock, width = cuda.ctypes.c_int(), cuda.ctypes.c_int()
    dev = torch.cuda.current_device()
    cuda.lib.cudaDeviceGetAttribute(cuda.ctypes.byref(clock), 36, dev)  # memory clock, kHz
    cuda.lib.cudaDeviceGetAttribute(cuda.ctypes.byref(width), 37, dev)  # bus width, bits
    return 2 * clock.value * 1e3 * width.value / 8 / 1e9


def timed_us(fn, *args, iters: int = 200, warmup: int = 25, **kwargs) -> float:
    """Median microseconds of ``fn(*args, **kwargs)`` by CUDA events."""
    import torch

    for _ in range(warmup):
        fn(*args, **kwargs)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends, strict=True):
        s.record()
        fn(*args, **kwargs)
        e.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends, strict=True))
    return times[len(times) // 2]


def row(kernel, bits, mkn, us, moved, peak, fp16_us, dequant_us) -> dict:
    """One result row: time, bandwidth achieved (bytes moved / time) and speed-ups."""
    m, k, n = mkn
    gbps = moved / (us * 1e-6) / 1e9
    return {
        "kernel": kernel,
        "bits": bits,
        "M": m,
        "K": k,
        "N": n,
        "us": round(us, 2),
        "gbps": round(gbps, 1),
        "pct_peak": round(100 * gbps / peak, 1),
        "speedup_vs_fp16": round(fp16_us / us, 2),
        "speedup_vs_dequant_matmul": round(dequant_us / us, 2) if dequant_us else None,
    }


def dequant_matmul(x, packed, scales, spec):
    """What a runtime without low-bit kernels does: dequantize the weights, then cuBLAS."""
    import torch

    from toolchain.lowbit import reference as lb

    return torch.matmul(x, lb.dequantize(packed, scales, **spec).to(x.dtype).T)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--block-size", type=int, default=32)
    args = parser.parse_args()
    import torch

    from toolchain import kernels as K
    from toolchain.lowbit import reference as lb

    if not torch.cuda.is_available():
        print("bench_kernels: no GPU visible to torch; nothing measured, nothing written")
        return 2
    if K.extension()[0] is None:
        print(f"bench_kernels: {K.extension()[1]}")
        return 2
    gpu, peak = torch.cuda.get_device_name(), peak_gbps()
    bs = args.block_size
    rows = []
    for k, n in SHAPES:
        w16 = torch.randn(n, k, device="cuda", dtype=torch.float16)
        for bits in (2, 4, 8):
            qn, qp = lb.signed_range(bits)
            codes = torch.randint(-qn, qp + 1, (n, k))
            packed = lb.pack(lb.to_unsigned(codes, bits), bits=bits, block_size=bs).cuda()
            scales = (torch.rand(n, lb.k_blocks(k, bs)) * 0.01 + 1e-3).cuda()
            spec = {"bits": bits, "k": k, "block_size": bs}
            for m in MS:
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                us = timed_us(K.matmul_nbits, x, packed, scales, **spec)
                fp16 = timed_us(torch.matmul, x, w16.T)
                deq = timed_us(dequant_matmul, x, packed, scales, spec) if m == 1 else None
                moved = packed.numel() + scales.numel() * 4 + (m * k + m * n) * 2
                rows.append(row("matmul_nbits", bits, (m, k, n), us, moved, peak, fp16, deq))
        codes8 = lb.to_unsigned(torch.randint(-128, 128, (n, k)), 8)
        w8 = lb.pack(codes8, bits=8, block_size=bs).cuda()
        w_scale = (torch.rand(n) * 0.01 + 1e-3).cuda()
        for m in MS:
            a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device="cuda")
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            us = timed_us(K.gemm_w8a8, a, 0.02, 0, w8, w_scale, k=k, block_size=bs)
            fp16 = timed_us(torch.matmul, x, w16.T)
            moved = w8.numel() + m * k + m * n * 2
            rows.append(row("gemm_w8a8", 8, (m, k, n), us, moved, peak, fp16, None))
    big = [r for r in rows if r["M"] == 1 and r["K"] >= 4096 and r["N"] >= 4096]
    goals = {
        "w4_3.3x_fp16_batch1": all(
            r["speedup_vs_fp16"] >= 3.3
            for r in big
            if r["kernel"] == "matmul_nbits" and r["bits"] == 4
        ),
        "w2_6x_fp16_batch1": all(
            r["speedup_vs_fp16"] >= 6
            for r in big
            if r["kernel"] == "matmul_nbits" and r["bits"] == 2
        ),
        "w2_w4_75pct_peak_batch1": all(
            r["pct_peak"] >= 75
            for r in big
            if r["kernel"] == "matmul_nbits" and r["bits"] in (2, 4)
        ),
        "int8_1.5x_fp16_m256": all(
            r["speedup_vs_fp16"] >= 1.5
            for r in rows
            if r["kernel"] == "gemm_w8a8" and r["M"] >= 256
        ),
    }
    report = {
        "gpu": gpu,
        "peak_gbps": round(peak, 1),
        "block_size": bs,
        "rows": rows,
        "goals": goals,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
    }
    out = Path(args.out)
    (out / "kernels.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# edgec kernels on {gpu} (peak DRAM {peak:.0f} GB/s)",
        "",
        "| kernel | bits | M | K | N | us | GB/s | % peak | x fp16 | x dequant+matmul |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dq = r["speedup_vs_dequant_matmul"]
        lines.append(
            f"| {r['kernel']} | {r['bits']} | {r['M']} | {r['K']} | {r['N']} | "
            f"{r['us']} | {r['gbps']} | {r['pct_peak']} | {r['speedup_vs_fp16']} | "
            f"{dq if dq is not None else ''} |"
        )
    lines += [
        "",
        "Goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items()),
    ]
    (out / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
