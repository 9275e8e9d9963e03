"""toolchain/kinds/victims.py: attacks run against a model directory, an export folder and a
bundle alike; the seeded sample is fixed; `edgec eval --attack` prints the figures."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from toy import TOY_SPEC, toy_examples, write_toy_table

from toolchain.errors import EdgecError
from toolchain.kinds.victims import attack_sample, robustness, suite, victim_for


@pytest.fixture
def model(tmp_path):
    from conftest import write_tiny_bert

    return write_tiny_bert(tmp_path / "model", classifier=True)


def test_a_model_and_its_export_are_the_same_victim(model, tmp_path):
    from toolchain.export.stage import export_model

    spec = replace(TOY_SPEC, files={"dev": str(write_toy_table(tmp_path / "dev.tsv", 20, 1))})
    export_model(model, tmp_path / "onnx", fmt="fp32", spec=spec)
    examples = toy_examples(12, 3)
    torch_victim, what = victim_for(model, spec)
    onnx_victim, what_onnx = victim_for(tmp_path / "onnx", spec)
    assert "PyTorch" in what and "model.onnx" in what_onnx
    a, b = torch_victim(examples), onnx_victim(examples)
    assert a.shape == (12, 2)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_victims_are_refused_for_other_kinds_and_other_folders(model, tmp_path):
    with pytest.raises(EdgecError, match="classification"):
        victim_for(model, replace(TOY_SPEC, kind="regression"))
    with pytest.raises(EdgecError, match="not a bundle"):
        victim_for(tmp_path, TOY_SPEC)


def test_the_sample_is_fixed_by_the_seed_and_keeps_split_order():
    items = list(range(100))
    a, b = attack_sample(items, 10, 7), attack_sample(items, 10, 7)
    assert a == b == sorted(a) and len(a) == 10
    assert attack_sample(items, 10, 8) != a
    assert attack_sample(items[:5], 10, 7) == items[:5]


def test_the_suite_counts_an_example_broken_by_any_attack():
    s = suite([["success", "failure", "skipped", "failure"], ["failure", "success", "skipped",
                                                                "failure"]])  # fmt: skip
    assert s["accuracy"] == 0.75 and s["accuracy_under_attack"] == 0.25
    assert s["attack_success"] == round(2 / 3, 4)


def test_robustness_of_a_model_reports_each_attack_and_the_suite(model, tmp_path):
    examples = toy_examples(8, 0)
    r = robustness(model, TOY_SPEC, examples, attacks=("char", "word"), n=6, seed=1)
    assert r["n"] == 6 and "seed 1" in r["protocol"]
    for name in ("char", "word", "suite"):
        assert r[name]["n"] == 6
    assert r["suite"]["accuracy_under_attack"] <= min(
        r["char"]["accuracy_under_attack"], r["word"]["accuracy_under_attack"]
    )
    assert "MiniLM" in r["word"]["attack"]


def test_edgec_eval_attack_prints_json(edgec, model, tmp_path):
    dev = write_toy_table(tmp_path / "dev.tsv", 20, 1)
    proc = edgec("eval", str(model), "--dev-file", str(dev), "--text-column", "text",
                 "--label-column", "label", "--attack", "deepwordbug", "--n", "5",
                 "--json", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n"] == 5 and out["char"]["n"] == 5 and "word" not in out
    bad = edgec("eval", str(model), "--dev-file", str(dev), "--text-column", "text",
                "--label-column", "label", "--attack", "char", "--n", "0")  # fmt: skip
    assert bad.returncode != 0 and "--n" in bad.stderr


def test_a_model_is_fully_loyal_to_itself(model):
    from toolchain.evaluate.evaluate import compare
    from toolchain.models.loading import load_model

    adapter = load_model(str(model), head="sequence-classification")
    out = compare(adapter, adapter, TOY_SPEC, toy_examples(30, 2), max_len=16)
    assert out["label_loyalty"] == 1.0 and out["prob_loyalty"] == pytest.approx(1.0, abs=1e-6)


def test_without_the_word_resources_the_word_attack_says_why(model, monkeypatch):
    import toolchain.kinds.victims as victims

    def missing():
        raise EdgecError("all-MiniLM-L6-v2 is not installed")

    monkeypatch.setattr(victims, "word_resources", missing)
    r = robustness(model, TOY_SPEC, toy_examples(6, 0), attacks=("char", "word"), n=4, seed=0)
    assert r["char"]["n"] == 4 and "suite" not in r
    assert r["word"].startswith("not measured") and "not installed" in r["word"]
