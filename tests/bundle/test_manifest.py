"""Manifests: every path they name is a listed file inside the bundle, every value the runtime
reads has its type (a wrong one is named), and the manifest is covered by its own digest."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from fake_bundle import load_manifest, rewrite, write_fake_bundle

from toolchain.bundle.build import set_latency
from toolchain.bundle.manifest import (
    MANIFEST,
    BundleError,
    canonical,
    digest,
    verify,
    verify_bundle,
)


@pytest.fixture
def bundle(tmp_path) -> Path:
    return write_fake_bundle(tmp_path / "toy.edgec")


def test_the_digest_is_the_sha256_of_the_canonical_manifest(bundle):
    checked = verify_bundle(bundle)
    manifest = load_manifest(bundle)
    assert checked.digest == manifest["digest"] == digest(manifest)
    assert checked.key_id is None and checked.trusted is False
    body = json.loads(canonical(manifest))
    assert "digest" not in body and body["files"] == manifest["files"]
    assert canonical(manifest) == canonical(json.loads(json.dumps(manifest, indent=4)))
    (bundle / "model.onnx").write_bytes(b"other model\n")
    assert digest(rewrite(bundle)) != checked.digest  # the digest covers every file's hash


def test_verify_prints_the_digest(edgec, bundle):
    proc = edgec("bundle", "verify", str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert f"digest: {load_manifest(bundle)['digest']}" in proc.stdout
    assert "signature: none" in proc.stdout


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model", "/etc/passwd", "runtime.model: unsafe path '/etc/passwd' (absolute"),
        ("model", "../../x.onnx", "runtime.model: unsafe path '../../x.onnx' ('..' leads outside"),
        ("model", "extra/../../x.onnx", "unsafe path 'extra/../../x.onnx' ('..'"),
        ("model", "C:\\x.onnx", "unsafe path 'C:\\\\x.onnx' (a backslash or drive letter"),
        ("model", "other.onnx", "runtime.model 'other.onnx' is not a file listed in the manifest"),
        ("model", "extra", "runtime.model 'extra' is not a file listed in the manifest"),
        ("tokenizer", "/tmp/tok.json", "runtime.tokenizer: unsafe path '/tmp/tok.json'"),
        ("engine", "../engine.plan", "runtime.engine: unsafe path '../engine.plan'"),
    ],
)
def test_paths_outside_the_bundle_are_refused(bundle, tmp_path, key, value, message):
    outside = tmp_path / "x.onnx"
    outside.write_bytes(b"the file an escape would load")

    def escape(manifest):
        manifest["runtime"][key] = value

    rewrite(bundle, escape)  # hashes and digest consistent: only the path is wrong
    with pytest.raises(BundleError, match=_literal(message)):
        verify(bundle)


def _literal(text: str) -> str:
    return re.escape(text)


def test_every_flipped_bit_in_the_manifest_is_caught(bundle):
    """A flip that changes what the manifest says fails verify (its own digest no longer
    matches, or it is no longer JSON); the only flips that pass leave its meaning unchanged."""
    original = (bundle / MANIFEST).read_bytes()
    meaning = json.loads(original)
    passed = 0
    for i in range(len(original)):
        flipped = bytearray(original)
        flipped[i] ^= 1 << (i % 8)
        (bundle / MANIFEST).write_bytes(bytes(flipped))
        try:
            verify(bundle)
        except BundleError:
            continue
        passed += 1
        assert json.loads(bytes(flipped)) == meaning, f"byte {i} flipped and verify passed"
    assert passed < len(original) // 100


def test_a_flipped_value_names_the_digest(bundle):
    text = (bundle / MANIFEST).read_text().replace('"neg"', '"nag"')
    (bundle / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match="does not match its own digest"):
        verify(bundle)


def _set(path: str | tuple, value):
    """Set ``a/b/c`` (or the keys of a tuple, for names holding a slash) to ``value``."""

    def change(manifest):
        *parents, last = path.split("/") if isinstance(path, str) else path
        node = manifest
        for p in parents:
            node = node[p]
        node[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("files", []), "files must be a non-empty object, got []"),
        (_set("files", {}), "files must be a non-empty object, got {}"),
        (_set("files/model.onnx", "x"), "files['model.onnx'] must be an object {bytes, sha256}"),
        (_set("files/model.onnx/bytes", "16"), "files['model.onnx'].bytes must be an integer >= 0"),
        (_set("files/model.onnx/bytes", True), "files['model.onnx'].bytes must be an integer"),
        (_set("files/model.onnx/bytes", -1), "files['model.onnx'].bytes must be an integer >= 0"),
        (_set("files/model.onnx/sha256", 7), "files['model.onnx'].sha256 must be 64 lowercase hex"),
        (_set("files/model.onnx/sha256", "A" * 64), "files['model.onnx'].sha256 must be 64"),
        (_set(("files", "../x"), {"bytes": 1, "sha256": "0" * 64}), "files: unsafe path '../x'"),
        (_set(("files", "manifest.json"), {"bytes": 1, "sha256": "0" * 64}), "files must be other"),
        (_set("runtime", ["model.onnx"]), "runtime must be an object"),
        (_set("runtime/model", 5), "runtime.model must be a path in the bundle, got 5"),
        (_set("runtime/max_seq_len", "128"), "runtime.max_seq_len must be an integer from 1 to"),
        (_set("runtime/max_seq_len", 0), "runtime.max_seq_len must be an integer from 1 to 65536"),
        (_set("runtime/max_seq_len", 2**64), "max_seq_len must be an integer from 1 to 65536, got"),
        (
            _set("runtime/pad_id", 1.5),
            "runtime.pad_id must be an integer from 0 to 2147483647, got",
        ),
        (_set("runtime/pad_id", -1), "runtime.pad_id must be an integer from 0 to 2147483647"),
        (_set("runtime/pad_id", 2**31), "runtime.pad_id must be an integer from 0 to 2147483647"),
        (_set("runtime/pad_token", None), "runtime.pad_token must be a string, got None"),
        (_set("runtime/providers", "CPU"), "runtime.providers must be a list of strings"),
        (_set("labels", "neg,pos"), "labels must be a list of strings, got 'neg,pos'"),
        (_set("task", ["toy"]), "task must be an object, got ['toy']"),
        (_set("task/kind", 1), "task.kind must be a string, got 1"),
        (_set("schema_version", "2"), "schema_version '2'; this edgec reads (1, 2)"),
        (_set("schema_version", 3), "schema_version 3; this edgec reads (1, 2) (a newer bundle"),
    ],
)
def test_wrong_types_are_named(bundle, change, message):
    rewrite(bundle, change)
    with pytest.raises(BundleError, match=_literal(message)):
        verify(bundle)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"a": 1, "a": 2}', "key 'a' appears twice"),
        (b"{\xff}", "not UTF-8 text"),
        (b'{"schema_version": 2', "invalid JSON at line 1"),
        (b'{"schema_version": 2}', "missing key(s) model, task, labels"),
        (b"[" * 100_000 + b"]" * 100_000, "unreadable JSON (RecursionError"),
        (b'{"a": ' + b"9" * 5000 + b"}", "unreadable JSON (ValueError: Exceeds the limit"),
    ],
)
def test_malformed_manifests_are_refused(bundle, text, message):
    (bundle / MANIFEST).write_bytes(text)
    with pytest.raises(BundleError, match=_literal(message)):
        verify(bundle)


def test_a_schema_2_manifest_needs_its_digest(bundle):
    manifest = load_manifest(bundle)
    del manifest["digest"]
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="digest must be 'sha256:' and 64 hex digits, got None"):
        verify(bundle)


def test_a_schema_1_manifest_without_digest_still_verifies(bundle):
    manifest = load_manifest(bundle)
    del manifest["digest"]
    manifest["schema_version"] = 1
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    assert verify_bundle(bundle).digest == digest(manifest)


def test_links_in_a_bundle_folder_are_refused(bundle, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((bundle / "model.onnx").read_bytes())
    (bundle / "model.onnx").unlink()
    os.symlink(outside, bundle / "model.onnx")
    with pytest.raises(BundleError, match="model.onnx is a link; a bundle holds plain files"):
        verify(bundle)
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").write_bytes(outside.read_bytes())
    verify(bundle)
    os.symlink(outside, bundle / "extra" / "more.onnx")  # any link, named or not
    with pytest.raises(BundleError, match="extra/more.onnx is a link"):
        verify(bundle)


def test_set_latency_reseals_the_manifest_and_drops_a_stale_signature(bundle, tmp_path):
    from toolchain.bundle.sign import generate_keys, sign_bundle

    generate_keys(tmp_path / "k")
    sign_bundle(bundle, tmp_path / "k")
    before = load_manifest(bundle)["digest"]
    label = "measured on x86-64-host"
    latency = {"status": "measured", "label": label, "p50_ms": 1, "p90_ms": 1, "p99_ms": 2}
    latency.update(batch=1, seq_len=8, peak_rss_mb=10)
    set_latency(bundle, latency)
    checked = verify_bundle(bundle)
    assert checked.manifest["latency"]["label"] == label and checked.digest != before
    assert checked.key_id is None and not (bundle / "signature.json").exists()
