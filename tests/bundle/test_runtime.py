"""BundleRunner: runs what was verified (the bytes hashed are the bytes loaded, so a file
swapped after verification is refused or has no effect), and a model whose logits do not fit
the manifest's labels is a BundleError naming the mismatch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_bundle import rewrite, tiny_onnx, tiny_tokenizer, write_runnable_bundle

from toolchain.bundle import runtime
from toolchain.bundle.manifest import BundleError, read_listed
from toolchain.bundle.runtime import BundleRunner

ROWS = [{"text": "good movie"}, {"text": "bad"}]  # input_ids sums: 2 + 4 = 6, 3


@pytest.fixture
def bundle(tmp_path) -> Path:
    return write_runnable_bundle(tmp_path / "toy.edgec")


def test_a_runnable_bundle_predicts(bundle, tmp_path):
    rows = BundleRunner(bundle).predict(ROWS)
    assert [r["label"] for r in rows] == ["pos", "pos"]
    assert rows[0]["scores"]["pos"] == pytest.approx(1 / (1 + 2.718281828**-12), abs=1e-5)
    regression = write_runnable_bundle(tmp_path / "reg.edgec", classes=1)
    assert BundleRunner(regression).predict(ROWS) == [{"score": 6.0}, {"score": 3.0}]


@pytest.mark.parametrize(
    ("name", "swapped"),
    [("model.onnx", tiny_onnx(classes=1)), ("tokenizer.json", tiny_tokenizer().encode())],
)
def test_a_file_swapped_after_verification_is_refused(monkeypatch, bundle, name, swapped):
    """Whoever can write the folder replaces a file between verify() and the load by another
    that loads fine: the bytes loaded are hashed again, and the swap is caught."""
    verify = runtime.verify
    (bundle / "tokenizer.json").write_text(tiny_tokenizer().replace("movie", "film"))
    rewrite(bundle)

    def verify_then_swap(folder, **kwargs):
        manifest = verify(folder, **kwargs)
        (folder / name).write_bytes(swapped)
        return manifest

    monkeypatch.setattr(runtime, "verify", verify_then_swap)
    with pytest.raises(BundleError, match=f"{name} changed after it was verified"):
        BundleRunner(bundle)


def test_a_file_swapped_after_it_was_read_has_no_effect(monkeypatch, bundle):
    """The model is loaded from the bytes that were hashed, never reopened by path."""

    def read_then_swap(folder, manifest, rel):
        data = read_listed(folder, manifest, rel)
        (folder / rel).write_bytes(b"not a model, not a tokenizer\n")
        return data

    monkeypatch.setattr(runtime, "read_listed", read_then_swap)
    rows = BundleRunner(bundle).predict(ROWS)
    assert [r["label"] for r in rows] == ["pos", "pos"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_file_replaced_by_a_fifo_is_refused_without_blocking(monkeypatch, bundle):
    verify = runtime.verify

    def verify_then_fifo(folder, **kwargs):
        manifest = verify(folder, **kwargs)
        (folder / "model.onnx").unlink()
        os.mkfifo(folder / "model.onnx")
        return manifest

    monkeypatch.setattr(runtime, "verify", verify_then_fifo)
    with pytest.raises(BundleError, match="model.onnx is not a plain file"):
        BundleRunner(bundle)


def test_labels_that_do_not_fit_the_logits_are_named(bundle):
    rewrite(bundle, lambda m: m.update(labels=["neg", "neutral", "pos"]))
    runner = BundleRunner(bundle)
    with pytest.raises(BundleError, match=r"logits have shape \(2, 2\) for 2 inputs, but the "):
        runner.predict(ROWS)
    (bundle / "model.onnx").write_bytes(tiny_onnx(classes=1))
    rewrite(bundle, lambda m: m["task"].update(kind="regression"))
    assert BundleRunner(bundle).predict(ROWS)[0] == {"score": 6.0}
    (bundle / "model.onnx").write_bytes(tiny_onnx(classes=2))
    rewrite(bundle)
    with pytest.raises(BundleError, match=r"manifest lists 1 score \(regression\): expected"):
        BundleRunner(bundle).predict(ROWS)
