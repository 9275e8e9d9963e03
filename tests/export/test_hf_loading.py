"""Outputs load where users expect: export folders and bundles with optimum's ORTModelFor...
classes; a packed checkpoint through transformers only with its remote code (right weights), and
otherwise a clear refusal, never a float model with random weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_export import _classifier, packed_dir, toy_task  # noqa: F401  (fixtures)

from toolchain.errors import EdgecError
from toolchain.export.stage import export_model
from toolchain.quantize.convert import load_quantized

SENTENCES = ["the movie was good", "a bad world is awful", "good good movie", "bad"]


def _torch_logits(model, tok) -> np.ndarray:
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


def test_transformers_refuses_a_packed_checkpoint_without_its_remote_code(packed_dir):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    config = json.loads((packed_dir / "config.json").read_text())
    assert config["model_type"] == "edgec_lsq" and config["base_model_type"] == "bert"
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(str(packed_dir))


def test_a_packed_checkpoint_loads_its_quantized_weights_through_transformers(packed_dir):  # noqa: F811
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ours = load_quantized(packed_dir)
    theirs = AutoModelForSequenceClassification.from_pretrained(
        str(packed_dir), trust_remote_code=True
    )
    tok = AutoTokenizer.from_pretrained(str(packed_dir))
    expected = _torch_logits(ours.model, ours.tokenizer)
    np.testing.assert_allclose(_torch_logits(theirs, tok), expected, atol=1e-6)
    # a float model of the family, built from the config alone, gives other logits: the weights
    # really come from the packed codes
    from toolchain.models.loading import read_config

    torch.manual_seed(1)
    fresh = AutoModelForSequenceClassification.from_config(read_config(packed_dir)).eval()
    assert np.abs(_torch_logits(fresh, tok) - expected).max() > 1e-3


def test_load_model_refuses_a_packed_checkpoint_naming_the_loader(packed_dir):  # noqa: F811
    from toolchain.models.loading import load_model

    with pytest.raises(EdgecError, match="packed .*load_quantized"):
        load_model(str(packed_dir), head="sequence-classification")


@pytest.mark.parametrize("fmt", ("fp32", "int8-qdq", "nbits"))
def test_an_export_folder_loads_with_optimum(packed_dir, toy_task, tmp_path, fmt):  # noqa: F811
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    out = tmp_path / "onnx"
    export_model(packed_dir, out, fmt=fmt, spec=toy_task)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and "quantization_config" not in config
    model = ORTModelForSequenceClassification.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    reference = load_quantized(packed_dir)
    got = model(**tok(SENTENCES, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(got, _torch_logits(reference.model, tok), atol=0.3)
    assert (got.argmax(-1) == _torch_logits(reference.model, tok).argmax(-1)).all()
    labels = {
        p["label"] for p in pipeline("text-classification", model=model, tokenizer=tok)(SENTENCES)
    }
    assert labels <= set(config["id2label"].values())


def test_a_bundle_loads_with_optimum(tiny_bundle):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    from toolchain.bundle.runtime import BundleRunner

    folder, manifest = tiny_bundle
    assert "config.json" in manifest["files"]
    model = ORTModelForSequenceClassification.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    out = pipeline("text-classification", model=model, tokenizer=tok, top_k=None)(["good movie"])
    ours = BundleRunner(folder).predict([{"text": "good movie"}])[0]["scores"]
    assert {p["label"]: p["score"] for p in out[0]} == pytest.approx(ours, abs=1e-5)


def test_export_opset_and_atol_reach_the_report(packed_dir, toy_task, tmp_path):  # noqa: F811
    import onnx

    from toolchain.config import ExportConfig
    from toolchain.export.onnx import ExportError

    out = tmp_path / "o"
    report = export_model(
        packed_dir, out, fmt="fp32", spec=toy_task, cfg=ExportConfig(opset=18, atol=0.5)
    )
    assert report["tolerance"] == 0.5
    opsets = {o.domain: o.version for o in onnx.load(str(out / "model.onnx")).opset_import}
    assert opsets[""] == 18
    with pytest.raises(ExportError, match="parity"):
        export_model(packed_dir, tmp_path / "x", fmt="int8-qdq", spec=toy_task,
                     cfg=ExportConfig(atol=1e-9))  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_every_cli_format_is_a_recipe_format():
    import typing

    from toolchain.config import ExportConfig
    from toolchain.export import FORMATS

    assert set(typing.get_args(typing.get_type_hints(ExportConfig)["format"])) == set(FORMATS)
