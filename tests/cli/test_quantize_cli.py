"""`edgec quantize` end to end on a tiny model, its cache, and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from toy import write_toy_table


@pytest.fixture
def data_args(tmp_path):
    write_toy_table(tmp_path / "train.tsv", 200, 0)
    write_toy_table(tmp_path / "dev.tsv", 40, 1)
    return [
        "--train-file",
        str(tmp_path / "train.tsv"),
        "--dev-file",
        str(tmp_path / "dev.tsv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--no-clean",
    ]


def test_help(edgec):
    proc = edgec("quantize", "--help")
    assert proc.returncode == 0
    assert "--w-bits" in proc.stdout and "--avg-bits" in proc.stdout and "--teacher" in proc.stdout


def test_kdlsq_end_to_end_then_cached(edgec, tiny_bert_dir, data_args, tmp_path):
    out = tmp_path / "w2"
    args = (
        "quantize",
        str(tiny_bert_dir),
        *data_args,
        "--w-bits",
        "2",
        "--a-bits",
        "8",
        "--embeddings",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "8",
        "-o",
        str(out),
    )
    proc = edgec(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "quantized (kdlsq W2A8" in proc.stdout and "x smaller than fp32" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["act_bits"] == 8 and {e["bits"] for e in qc["modules"].values()} == {2}
    assert "bert.embeddings.word_embeddings" in qc["modules"] and "classifier" not in qc["modules"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 4 and metrics["reload_max_abs_diff"] <= 1e-4
    assert 0 <= metrics["dev"]["label_loyalty"] <= 1
    assert metrics["bytes"] == (out / "model.safetensors").stat().st_size

    from toolchain.quantize.convert import load_quantized

    model = load_quantized(out)
    ids = model.tokenizer(["the movie was good"], return_tensors="pt")
    with torch.no_grad():
        assert model.model(**ids).logits.shape == (1, 2)

    again = edgec(*args, timeout=600)
    assert again.returncode == 0 and "up to date (cached)" in again.stdout


def test_rtn_mixed_precision(edgec, tiny_bert_dir, data_args, tmp_path):
    out = tmp_path / "mixed"
    proc = edgec(
        "quantize",
        str(tiny_bert_dir),
        *data_args,
        "--method",
        "rtn",
        "--avg-bits",
        "3",
        "--batch-size",
        "8",
        "--json",
        "-o",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["method"] == "rtn" and "training" not in m
    assert m["mixed"]["stored_bits_per_weight"] <= 3.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--w-bits", "9"], "quantize.weight_bits: must be in [2, 8], got 9"),
        (["--override", "dense"], "--override expects GLOB=BITS"),
        (["--override", "*nothing*=4"], "match no Linear or Embedding module"),
        (["--size-from", "jetson-nano-9000"], "unknown device 'jetson-nano-9000'"),
        (["--avg-bits", "3", "--size-mb", "4"], "not allowed with argument"),
    ],
)
def test_bad_input_gets_a_clear_error(edgec, tiny_bert_dir, data_args, tmp_path, extra, message):
    out = tmp_path / "bad"
    proc = edgec("quantize", str(tiny_bert_dir), *data_args, *extra, "-o", str(out), timeout=300)
    assert proc.returncode in (1, 2)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_size_budget_from_a_device_profile():
    from toolchain.cli.quantize import _size_from
    from toolchain.devices.profiles import get_profile

    profile = get_profile("jetson")
    assert _size_from("jetson") == profile.budgets[0].memory_mb
    assert _size_from("jetson:balanced") == profile.budget("balanced").memory_mb
    with pytest.raises(Exception, match="has no budget 'roomy'; its budgets: tight"):
        _size_from("jetson:roomy")
