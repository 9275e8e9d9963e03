"""`edgec search` end to end on a tiny teacher and the toy task, its cache, and its errors."""

from __future__ import annotations

import json

import pytest
from toy import write_toy_table


@pytest.fixture
def teacher_dir(tmp_path):
    """A tiny random BERT classifier with room for the host budgets' 128 tokens."""
    from conftest import write_tiny_bert

    return write_tiny_bert(tmp_path / "teacher", classifier=True, positions=160)


@pytest.fixture
def predictors(tmp_path):
    """A made-up fitted law for this host: 1 ms + 1.5 ms per layer, 60 MB + the weights."""
    from conftest import write_fake_predictor

    return write_fake_predictor(tmp_path / "predictors")


def test_search_end_to_end_then_cached(edgec, teacher_dir, predictors, tmp_path):
    write_toy_table(tmp_path / "train.tsv", 160, 0)
    write_toy_table(tmp_path / "dev.tsv", 40, 1)
    out = tmp_path / "search"
    args = (
        "search",
        "--teacher",
        str(teacher_dir),
        "--train-file",
        str(tmp_path / "train.tsv"),
        "--dev-file",
        str(tmp_path / "dev.tsv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--no-clean",
        "--device",
        "host",
        "--budget",
        "tight",
        "--budget",
        "balanced",
        "--predictors",
        str(predictors),
        "--steps",
        "6",
        "--sandwich",
        "2",
        "--batch-size",
        "8",
        "--population",
        "6",
        "--generations",
        "2",
        "--eval-samples",
        "16",
        "--measure-top-k",
        "1",
        "--train-device",
        "cpu",
        "-o",
        str(out),
    )
    proc = edgec(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "searched on x86-64-host" in proc.stdout
    result = json.loads((out / "search.json").read_text())
    tight, balanced = result["budgets"]["tight"], result["budgets"]["balanced"]
    # the law allows one layer under 3 ms, two under 6 ms
    assert tight["predicted"]["latency_ms"] <= 3.0 and tight["shape"].startswith("L1:")
    assert balanced["predicted"]["latency_ms"] <= 6.0
    assert all(c["predicted"]["latency_ms"] <= 3.0 for c in tight["candidates"])
    assert tight["measured"]["label"].startswith("measured on x86-64-host")
    assert result["pruning"] is not None and result["supernet"]["steps"] == 6
    config = json.loads((out / "subnets" / "tight" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["num_hidden_layers"] == 1
    assert (out / "subnets" / "tight" / "tokenizer.json").is_file()
    assert (out / "supernet" / "supernet.json").is_file()
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["front"] and len(pareto["points"]) >= len(pareto["front"])
    # the subnet is a plain model the other verbs take: export it
    exported = edgec(
        "export",
        str(out / "subnets" / "tight"),
        *("--train-file", str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv")),
        *("--text-column", "text"),
        *("--label-column", "label", "--format", "fp32", "-o", str(tmp_path / "x")),
    )
    assert exported.returncode == 0, exported.stderr
    again = edgec(*args, timeout=600)
    assert again.returncode == 0 and "up to date (cached)" in again.stdout


def test_search_errors(edgec, tiny_bert_dir, predictors, tmp_path):
    write_toy_table(tmp_path / "train.tsv", 40, 0)
    base = (
        "search",
        "--teacher",
        str(tiny_bert_dir),
        "--train-file",
        str(tmp_path / "train.tsv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--predictors",
        str(predictors),
        "-o",
        str(tmp_path / "out"),
    )
    proc = edgec(*base, "--device", "host", "--budget", "instant")
    assert proc.returncode != 0
    assert "x86-64-host has no budget 'instant'; its budgets: tight, balanced, relaxed" in (
        proc.stderr
    )
    proc = edgec(*base, "--device", "jetsn")
    assert proc.returncode != 0 and "jetson" in proc.stderr and "Traceback" not in proc.stderr
    # the tiny teacher holds 64 positions; the host budgets are measured at 128 tokens
    proc = edgec(*base, "--device", "host", "--budget", "tight", "--no-clean", "--steps", "2")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "beyond the teacher's 64 positions" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_trained_supernet_is_reused_from_the_cache(teacher_dir, predictors, tmp_path):
    from dataclasses import replace

    from toy import TOY_SPEC

    from toolchain.config import SearchConfig
    from toolchain.nas.stage import search_stage
    from toolchain.pipeline import run_single
    from toolchain.target import DeviceTarget

    write_toy_table(tmp_path / "train.tsv", 120, 0)
    write_toy_table(tmp_path / "validation.tsv", 40, 1)
    cfg = SearchConfig(
        supernet_steps=4,
        sandwich=2,
        batch_size=8,
        population=4,
        generations=1,
        eval_samples=16,
        measure_top_k=0,
        shrink_evaluations=4,
    )
    files = {"train": str(tmp_path / "train.tsv"), "validation": str(tmp_path / "validation.tsv")}
    common = dict(
        teacher_dir=str(teacher_dir),
        spec=replace(TOY_SPEC, files=files),
        data_dir=tmp_path,
        target=DeviceTarget.resolve("host", predictors_dir=predictors),
        budgets=("balanced",),
        cfg=cfg,
        torch_device="cpu",
        supernet_cache=tmp_path / "supernets",
    )
    first = run_single(search_stage(**common, name="a"), tmp_path / "a").record["metrics"]
    assert "cached" not in first["supernet"]
    [kept] = list((tmp_path / "supernets").iterdir())
    second = run_single(search_stage(**common, name="b"), tmp_path / "b").record["metrics"]
    assert second["supernet"]["cached"] == str(kept) and second["supernet"]["train_s"] == 0
    assert second["budgets"]["balanced"]["subnet"] == first["budgets"]["balanced"]["subnet"]
    assert second["space"] == first["space"]  # the pruned space came back with it
    # another device: pruning compared MACs, not this device's latency, so the same supernet
    jetson = {**common, "target": DeviceTarget.resolve("jetson-orin-nano-8gb")}
    third = run_single(search_stage(**jetson, name="j"), tmp_path / "j").record["metrics"]
    assert third["supernet"]["cached"] == str(kept) and third["space"] == first["space"]
    # other training settings: another supernet, trained anew
    more_steps = {**common, "cfg": replace(cfg, supernet_steps=5)}
    other = run_single(search_stage(**more_steps, name="c"), tmp_path / "c").record["metrics"]
    assert "cached" not in other["supernet"] and len(list((tmp_path / "supernets").iterdir())) == 2
