"""The measurement protocol, runners and `edgec profile` on this host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolchain.api import profile as profile_model
from toolchain.config import BudgetSpec
from toolchain.profile.local import budget_verdicts
from toolchain.profile.protocol import measure, percentile, summarize
from toolchain.profile.runners import ProfileError, runner_for

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Each run() advances time by the next of ``durations`` (ms); sync() is counted."""

    def __init__(self, durations):
        self.now, self.durations, self.i, self.syncs = 0.0, list(durations), 0, 0

    def __call__(self):
        return self.now

    def run(self):
        self.now += self.durations[self.i % len(self.durations)] / 1000
        self.i += 1

    def sync(self):
        self.syncs += 1


def test_statistics_from_known_timings():
    clock = FakeClock([1.0] * 2 + [float(v) for v in range(1, 11)])  # 2 warm-up, then 1..10 ms
    stats = measure(clock.run, warmup=2, iterations=10, batch=4, sync=clock.sync, clock=clock)
    assert stats["n"] == 10 and stats["min_ms"] == pytest.approx(1) and stats["max_ms"] == 10
    assert stats["p50_ms"] == pytest.approx(5.5) and stats["p90_ms"] == pytest.approx(9.1)
    assert stats["mean_ms"] == pytest.approx(5.5)
    assert stats["throughput_per_s"] == pytest.approx(4 * 1000 / 5.5, rel=1e-3)
    assert clock.syncs == 11  # after the warm-up and after every timed call


def test_repeats_report_the_spread_of_p50():
    clock = FakeClock([10.0] * 5 + [12.0] * 5)  # repeat 1 at 10 ms, repeat 2 at 12 ms
    stats = measure(clock.run, warmup=0, iterations=5, repeats=2, clock=clock)
    assert stats["repeat_p50_ms"] == [10.0, 12.0]
    assert stats["p50_spread_pct"] == pytest.approx(100 * 2 / 11, rel=1e-4)
    assert percentile([1.0, 2.0, 3.0, 4.0], 25) == pytest.approx(1.75)
    assert summarize([3.0])["p99_ms"] == 3.0
    with pytest.raises(ValueError, match="need iterations >= 1"):
        measure(clock.run, warmup=0, iterations=0)


def test_peak_memory_sees_a_known_allocation():
    code = (
        "from toolchain.profile.protocol import peak_rss_mb\n"
        "before = peak_rss_mb()\n"
        "block = bytearray(300 * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])\n"
        "print(before, peak_rss_mb())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    before, after = (float(v) for v in out.stdout.split())
    assert 290 <= after - before <= 330


def test_budget_verdicts():
    budgets = [
        BudgetSpec(name="tight", latency_ms=2.0, memory_mb=100, percentile=90),
        BudgetSpec(name="roomy", latency_ms=20.0, memory_mb=1000, percentile=99),
        BudgetSpec(name="big", latency_ms=20.0, memory_mb=1000, batch=32),
    ]
    results = [{"batch": 1, "seq": 128, "p90_ms": 3.0, "p99_ms": 5.0, "peak_rss_mb": 150.0}]
    verdicts = {v["budget"]: v for v in budget_verdicts(budgets, results)}
    assert verdicts["tight"]["verdict"] == "missed" and verdicts["tight"]["latency_ms"] == 3.0
    assert verdicts["roomy"]["verdict"] == "met" and verdicts["roomy"]["latency_ms"] == 5.0
    assert verdicts["big"]["verdict"] == "not measured"
    assert verdicts["roomy"]["memory_kind"] == "peak RSS"
    # a GPU runtime's row carries the device memory it uses: that is what the budget holds
    gpu = [{**results[0], "p99_ms": 1.0, "device_memory_mb": 1200.0}]
    verdict = budget_verdicts(budgets[1:2], gpu)[0]
    assert verdict["verdict"] == "missed" and verdict["memory_kind"] == "device"
    assert verdict["peak_memory_mb"] == 1200.0


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from toolchain.export.onnx import export_float
    from toolchain.models.adapters import adapter_for

    tmp = tmp_path_factory.mktemp("profile")
    (tmp / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "an", "example", "another", "sentence"])
        + "\n"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=160,
    )
    adapter = adapter_for(
        BertForSequenceClassification(config).eval(),
        BertTokenizerFast(vocab_file=str(tmp / "vocab.txt")),
    )
    return export_float(adapter, tmp / "model.onnx")


def test_profile_measures_every_budget_shape(tiny_onnx):
    report = profile_model(
        tiny_onnx, device="host", shapes=[(2, 16)], warmup=1, iterations=5, repeats=2
    )
    shapes = {(r["batch"], r["seq"]) for r in report["results"]}
    assert (2, 16) in shapes and (1, 128) in shapes
    assert report["label"].startswith("measured on x86-64-host")
    assert {v["verdict"] for v in report["budgets"]} <= {"met", "missed"}
    r = report["results"][0]
    assert 0 < r["p50_ms"] <= r["p99_ms"] and r["peak_rss_mb"] > report["rss_before_load_mb"]
    assert report["environment"]["runtime"] == "onnxruntime"


def test_another_device_cannot_be_measured_here(tiny_onnx):
    with pytest.raises(ProfileError, match="is not this machine .* never reported as the device's"):
        profile_model(tiny_onnx, device="jetson")
    with pytest.raises(ProfileError, match="unknown runtime 'tvm'"):
        runner_for(tiny_onnx, "tvm")
    with pytest.raises(ProfileError, match="not an ONNX file, bundle or export folder"):
        runner_for(REPO, "onnxruntime")


def test_tensorrt_targets_are_engines(tiny_onnx, tmp_path):
    from toolchain.export.tensorrt import availability
    from toolchain.profile.runners import engine_of

    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"not an engine")
    assert engine_of(plan) == plan and engine_of(tmp_path) == plan
    with pytest.raises(ProfileError, match="no TensorRT engine .* `edgec export --tensorrt`"):
        engine_of(tiny_onnx)
    ok, why = availability()
    if not ok:  # here: the reason, never a figure
        with pytest.raises(ProfileError, match="TensorRT is not installed here"):
            runner_for(plan, "tensorrt")
    else:  # where tensorrt imports: a corrupt engine is refused with the fix
        with pytest.raises(ProfileError, match="cannot deserialize it"):
            runner_for(plan, "tensorrt")


def test_edgec_profile_cli(edgec, tiny_onnx):
    proc = edgec(
        "profile",
        str(tiny_onnx),
        "--device",
        "host",
        "--batch",
        "1,2",
        "--seq",
        "8",
        "--warmup",
        "1",
        "--iterations",
        "3",
        "--repeats",
        "2",
        "--json",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {(r["batch"], r["seq"]) for r in report["results"]} >= {(1, 8), (2, 8)}
    bad = edgec("profile", str(tiny_onnx), "--device", "jetson-nano-9000")
    assert bad.returncode == 1 and "unknown device 'jetson-nano-9000'" in bad.stderr


def test_profile_predict_labels_the_calibrated_model(edgec, tmp_path):
    proc = edgec(
        "profile",
        "--device",
        "jetson",
        "--predict",
        "L6:H384:A12:F1536",
        "--precision",
        "int8",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    assert row["label"].startswith("predicted (calibrated on MLPerf BERT-99 anchors of")
    assert row["latency_lo_ms"] <= row["latency_ms"] <= row["latency_hi_ms"]
    assert row["source"] == "calibrated" and "TOPS" in row["assumed"]
    missing = edgec("profile", "--device", "host")
    assert (
        missing.returncode == 1 and "give a TARGET to measure, or --predict SHAPE" in missing.stderr
    )


def test_calibrate_then_predict_with_the_fitted_predictor(edgec, tmp_path):
    env = {"EDGEC_HOME": str(tmp_path)}
    proc = edgec(
        "profile", "--device", "host", "--calibrate", "10", "--rounds", "1", env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "predictors" / "x86-64-host.json").is_file()
    pred = edgec("profile", "--device", "host", "--predict", "L2:H128:A2:F512", "--json", env=env)
    row = json.loads(pred.stdout)["rows"][0]
    assert row["label"].startswith("predicted (fitted on 10 shapes measured on x86-64-host; p90 ")
    assert row["source"] == "fitted" and row["latency_ms"] <= row["latency_hi_ms"]
    few = edgec("profile", "--device", "host", "--calibrate", "3", env=env)
    assert few.returncode == 1 and "--calibrate needs at least 10 shapes" in few.stderr
    refused = edgec("profile", "--device", "jetson", "--calibrate", "10", env=env)
    assert refused.returncode == 1 and "--calibrate measures this machine" in refused.stderr


def test_a_relative_target_is_relative_to_the_working_directory(tiny_onnx, monkeypatch):
    # the worker process runs from the package's parent folder: the path must not move with it
    monkeypatch.chdir(tiny_onnx.parent)
    report = profile_model(
        Path(tiny_onnx.name), device="host", shapes=[(1, 16)], warmup=1, iterations=3, repeats=1
    )
    assert report["label"].startswith("measured on x86-64-host")
    assert any((r["batch"], r["seq"]) == (1, 16) for r in report["results"])
