"""Bundles: build, verify (tampering named), safe unpacking, and `edgec run` without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toy import TOY_SPEC

from toolchain.bundle.build import build_bundle
from toolchain.bundle.manifest import BundleError, verify
from toolchain.data.tasks import TaskSpec
from toolchain.target import DeviceTarget

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle


def test_manifest_lists_every_file_and_measured_host_latency(bundle):
    folder, manifest = bundle
    assert set(manifest["files"]) == {
        "config.json",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "README.md",
    }
    assert manifest["labels"] == ["neg", "pos"] and manifest["model"]["format"] == "fp32"
    lat = manifest["latency"]
    assert lat["status"] == "measured" and lat["label"].startswith("measured on x86-64-host")
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["torch_loaded"] is False
    assert manifest["metrics"]["parity"]["label_agreement"] == 1.0
    assert verify(folder) == json.loads((folder / "manifest.json").read_text())
    assert verify(folder.with_name("toy.edgec.tar.gz"))["files"] == manifest["files"]


def test_another_device_gets_no_host_latency(bundle, tmp_path):
    folder, _ = bundle
    spec = TaskSpec(
        name="toy",
        kind="classification",
        folder="",
        format="tsv",
        files={},
        text_columns=("text",),
        label_column="label",
        labels=("neg", "pos"),
    )
    manifest = build_bundle(
        folder.parent / "onnx",
        tmp_path / "orin.edgec",
        target=DeviceTarget.resolve("jetson"),
        spec=spec,
        tarball=False,
    )
    assert manifest["target"]["device"] == "jetson-orin-nano-8gb"
    assert manifest["target"]["requested"] == "jetson"  # the alias the user typed
    assert manifest["latency"]["status"] == "not measured"
    assert "never reported as the device's" in manifest["latency"]["label"]
    assert "p50_ms" not in manifest["latency"]


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_one_changed_byte_fails_verify_naming_the_file(bundle, tmp_path):
    copy = _copy(bundle[0], tmp_path)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.onnx does not match its sha256"):
        verify(copy)


def test_added_missing_and_resized_files_fail_verify(bundle, tmp_path):
    copy = _copy(bundle[0], tmp_path)
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="extra.bin is not in the manifest"):
        verify(copy)
    (copy / "extra.bin").unlink()
    (copy / "vocab.txt").unlink()
    with pytest.raises(BundleError, match="vocab.txt is listed in the manifest but missing"):
        verify(copy)
    with pytest.raises(BundleError, match="no manifest.json; not an edgec bundle"):
        verify(tmp_path)


def test_edgec_run_works_where_torch_cannot_be_imported(bundle, tmp_path):
    blocked = tmp_path / "blocked" / "torch"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocked.parent}{os.pathsep}{REPO}"}
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "the movie good"}\n\n{"text": "bad"}\n')
    for source in (["--text", "good movie"], ["--file", str(inputs)]):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "toolchain",
                "run",
                str(bundle[0].with_name("toy.edgec.tar.gz")),
                *source,
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert all(r["label"] in ("neg", "pos") for r in rows)
        assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in rows)
    assert len(rows) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "run", str(bundle[0]), "--file", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "bad.jsonl:1: not JSON" in proc.stderr


def test_the_recipe_bundle_section_is_read(bundle, tmp_path):
    """bundle: {tarball: false, model_card: false} -> no .tar.gz and no README.md, and the
    manifest (which lists every file) still verifies."""
    folder, _ = bundle
    out = tmp_path / "bare.edgec"
    manifest = build_bundle(
        folder.parent / "onnx",
        out,
        target=DeviceTarget.resolve("host"),
        spec=TOY_SPEC,
        tarball=False,
        model_card=False,
    )
    assert "README.md" not in manifest["files"] and not (out / "README.md").exists()
    assert not out.with_name("bare.edgec.tar.gz").exists()
    assert verify(out)["files"] == manifest["files"]


def test_a_signed_bundle_runs_under_trust_and_another_key_is_refused(bundle, tmp_path, edgec):
    from toolchain.bundle.sign import generate_keys, sign_bundle

    copy = _copy(bundle[0], tmp_path)
    generate_keys(tmp_path / "ours")
    generate_keys(tmp_path / "theirs")
    sign_bundle(copy, tmp_path / "ours")
    ok = edgec("run", str(copy), "--trust", str(tmp_path / "ours.pub"), "--text", "good movie")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["label"] in ("neg", "pos")
    refused = edgec("run", str(copy), "--trust", str(tmp_path / "theirs.pub"), "--text", "x")
    assert refused.returncode == 1 and "which is not trusted here" in refused.stderr
    assert refused.stdout == ""


def test_an_export_whose_source_model_moved_still_bundles(bundle, tmp_path):
    import shutil

    export = Path(shutil.copytree(bundle[0].parent / "onnx", tmp_path / "onnx"))
    report = json.loads((export / "export.json").read_text())
    assert Path(report["source"]).is_absolute()  # recorded absolute, whatever the cwd was
    report["source"] = str(tmp_path / "gone")
    (export / "export.json").write_text(json.dumps(report))
    manifest = build_bundle(export, tmp_path / "moved.edgec", target=DeviceTarget.resolve("jetson"),
                            spec=TOY_SPEC, tarball=False)  # fmt: skip
    assert manifest["labels"] == ["neg", "pos"]  # from the task
    assert manifest["model"]["source"] == str(export)
