"""Quantization of the real MiniLM-L6 on real SST-2 data (slow; the figures are in
benchmarks/bench_quantize.py)."""

from __future__ import annotations

import json

import pytest

from toolchain.models.loading import default_teacher_dir


@pytest.mark.slow
def test_real_minilm_w2_packs_reloads_and_runs_in_onnxruntime(edgec, shared_data, tmp_path):
    out = tmp_path / "minilm-w2"
    proc = edgec(
        "quantize",
        str(default_teacher_dir()),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--w-bits",
        "2",
        "--embeddings",
        "--steps",
        "6",
        "--eval-every",
        "6",
        "--json",
        "-o",
        str(out),
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert len(m["widths"]) == 6 * 6 + 1 + 3  # 6 blocks x 6 Linears, pooler, 3 embedding tables
    assert m["reload_max_abs_diff"] <= 1e-4
    assert m["compression_vs_fp32"] >= 14.9  # 2 bits everywhere but norms, biases, classifier
    assert m["dev"]["float"]["n"] == 872

    # the packed codes and steps of one layer run as-is in ONNX Runtime's MatMulNBits
    import numpy as np
    import torch
    from ort_nbits import matmul_nbits_session
    from safetensors.torch import load_file

    from toolchain.lowbit.reference import block_scales, matmul_nbits

    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    name = "bert.encoder.layer.0.intermediate.dense"
    n, k = qc["modules"][name]["shape"]
    t = load_file(str(out / "model.safetensors"))
    packed, scales = t[f"{name}.qweight"], block_scales(t[f"{name}.w_scale"], k, 32)
    sess = matmul_nbits_session(
        packed,
        scales,
        k=k,
        n=n,
        bits=qc["modules"][name]["container_bits"],
        block_size=qc["block_size"],
    )
    x = torch.randn(4, k)
    ref = matmul_nbits(x, packed, scales, bits=2, k=k, block_size=32).numpy()
    np.testing.assert_allclose(sess.run(None, {"A": x.numpy()})[0], ref, rtol=1e-4, atol=1e-4)
