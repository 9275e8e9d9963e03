"""`edgec profile --import-trtexec`: trtexec's performance summary read as measured figures and
judged against the device's budgets; logs without a summary or a shape get clear errors."""

from __future__ import annotations

import json

import pytest

from toolchain.cli.main import main
from toolchain.devices.profiles import get_profile
from toolchain.profile.trtexec import TrtexecError, import_trtexec, parse

# the layout of TensorRT 10's trtexec (times made up, shapes those of the jetson budgets)
LOG = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v100300] [b17] # /usr/src/tensorrt/bin/trtexec --onnx=model.onnx --shapes=input_ids:1x128,attention_mask:1x128,token_type_ids:1x128 --int8 --fp16
[12/01/2026-10:00:00] [I] === Device Information ===
[12/01/2026-10:00:00] [I] Selected Device: Orin
[12/01/2026-10:00:01] [I] [MemUsageChange] Init CUDA: CPU +2, GPU +0, now: CPU 40, GPU 3740 (MiB)
[12/01/2026-10:00:09] [I] [MemUsageChange] TensorRT-managed allocation in building engine: CPU +0, GPU +12, now: CPU 612, GPU 3911 (MiB)
[12/01/2026-10:00:40] [I] === Performance summary ===
[12/01/2026-10:00:40] [I] Throughput: 1550.2 qps
[12/01/2026-10:00:40] [I] Latency: min = 0.60 ms, max = 0.91 ms, mean = 0.64 ms, median = 0.63 ms, percentile(90%) = 0.66 ms, percentile(95%) = 0.70 ms, percentile(99%) = 0.81 ms
[12/01/2026-10:00:40] [I] Enqueue Time: min = 0.01 ms, max = 0.05 ms, mean = 0.01 ms, median = 0.01 ms, percentile(90%) = 0.02 ms, percentile(95%) = 0.02 ms, percentile(99%) = 0.03 ms
[12/01/2026-10:00:40] [I] GPU Compute Time: min = 0.55 ms, max = 0.85 ms, mean = 0.59 ms, median = 0.58 ms, percentile(90%) = 0.61 ms, percentile(95%) = 0.65 ms, percentile(99%) = 0.76 ms
&&&& PASSED TensorRT.trtexec [TensorRT v100300] [b17]
"""  # noqa: E501


def test_the_summary_becomes_a_measured_row():
    out = parse(LOG, source="b1.log")
    r = out["row"]
    assert (r["batch"], r["seq"]) == (1, 128)
    assert (r["p50_ms"], r["p90_ms"], r["p99_ms"]) == (0.63, 0.66, 0.81)
    assert r["gpu_compute"]["p50_ms"] == 0.58 and r["throughput_per_s"] == 1550.2
    assert r["device_memory_mb"] == 3911.0
    assert out["trtexec_device"] == "Orin" and out["tensorrt"] == "100300"


def test_budgets_are_judged_on_the_imported_figures(tmp_path):
    (tmp_path / "b1.log").write_text(LOG)
    profile = get_profile("jetson")
    report = import_trtexec([tmp_path / "b1.log"], profile)
    assert report["label"].startswith("measured on jetson-orin-nano-8gb (Orin) by trtexec")
    verdicts = {b["budget"]: b for b in report["budgets"]}
    # p90 0.66 ms: over the 0.58 ms tight budget, within 1.1 ms; 3911 MB of device memory is over
    # every budget's memory (TensorRT's process view on a shared-memory Jetson)
    assert verdicts["tight"]["latency_ms"] == 0.66
    assert all(v["verdict"] == "missed" for v in verdicts.values())
    assert all(v["memory_kind"] == "device" for v in verdicts.values())


def test_without_memory_lines_only_latency_is_judged_and_p99_stands_in_for_p90(tmp_path):
    text = "\n".join(
        ln.replace(", percentile(90%) = 0.66 ms, percentile(95%) = 0.70 ms", "")
        for ln in LOG.splitlines()
        if "MemUsageChange" not in ln
    )
    (tmp_path / "b1.log").write_text(text)
    report = import_trtexec([tmp_path / "b1.log"], get_profile("jetson"))
    row = report["results"][0]
    assert row["p90_ms"] == 0.81 and "upper bound" in row["p90_note"]
    verdicts = {b["budget"]: b["verdict"] for b in report["budgets"]}
    assert verdicts == {
        "tight": "missed (latency)",
        "balanced": "latency met, memory not measured",
        "relaxed": "latency met, memory not measured",
    }


def test_a_log_without_a_summary_or_a_shape_is_a_clear_error(tmp_path):
    with pytest.raises(TrtexecError, match="no trtexec performance summary"):
        parse("[I] Building engine...\n", source="x.log")
    no_shape = LOG.replace("--shapes=input_ids:1x128,attention_mask:1x128,token_type_ids:1x128", "")
    with pytest.raises(TrtexecError, match="--batch B --seq S"):
        parse(no_shape, source="x.log")
    assert parse(no_shape, source="x.log", shape=(8, 64))["row"]["batch"] == 8


def test_the_cli_prints_and_writes_json(tmp_path, capsys):
    (tmp_path / "b1.log").write_text(LOG)
    args = ["profile", "--import-trtexec", str(tmp_path / "b1.log"), "--device", "jetson"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "by trtexec" in out and "budget tight: missed: p90 0.66 ms > 0.58 ms" in out
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["measured"] is True
    assert main(["profile", "--import-trtexec", str(tmp_path / "none.log"), "--device", "jetson"])
    assert "trtexec log not found" in capsys.readouterr().err
