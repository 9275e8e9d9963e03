"""Tiny bundles for the bundle and agent tests, built without torch: the manifest of the real
schema over a few small files, with a real (one-node) ONNX model where it must be measured, and
the ways tests tamper with them."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from toolchain.bundle.manifest import MANIFEST, SCHEMA_VERSION, file_table, write_manifest


def tiny_onnx(classes: int = 1) -> bytes:
    """logits (batch, 1) = the sum s of input_ids (batch, seq) as float: enough to be measured;
    with ``classes=2``, logits (batch, 2) = [-s, s]."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids", "axes"], ["sum"], keepdims=1),
    ]
    if classes == 1:
        nodes.append(helper.make_node("Identity", ["sum"], ["logits"]))
    else:
        nodes.append(helper.make_node("Neg", ["sum"], ["neg"]))
        nodes.append(helper.make_node("Concat", ["neg", "sum"], ["logits"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def write_fake_bundle(folder: Path, *, onnx: bool = False) -> Path:
    """``folder`` (NAME.edgec) holding model.onnx, tokenizer.json, vocab/labels files and the
    manifest listing them; model.onnx is a real tiny model when ``onnx``."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(tiny_onnx() if onnx else b"not really onnx\n")
    (folder / "tokenizer.json").write_text('{"model": {"vocab": {"[PAD]": 0}}}\n')
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("a file in a sub-folder\n")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model": {"architecture": "Fake", "source": "nowhere", "format": "fp32", "precision": {}},
        "task": {"name": "toy", "kind": "classification"},
        "labels": ["neg", "pos"],
        "target": {
            "device": "x86-64-host",
            "requested": "host",
            "budget": {"name": "fast", "latency_ms": 10.0, "memory_mb": 100},
        },
        "metrics": {"main_metric": "accuracy", "parity": None},
        "latency": {"status": "not measured", "label": "not measured"},
        "provenance": {"edgec": "test", "created": "2025-01-01T00:00:00Z"},
        "runtime": {
            "model": "model.onnx",
            "tokenizer": "tokenizer.json",
            "max_seq_len": 128,
            "pad_id": 0,
            "pad_token": "[PAD]",
            "providers": ["CPUExecutionProvider"],
        },
        "files": file_table(folder),
    }
    write_manifest(folder, manifest)
    return folder


def tiny_tokenizer() -> str:
    """A word-level ``tokenizers`` JSON: [PAD]=0, [UNK]=1, good=2, bad=3, movie=4."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "good", "bad", "movie"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


def write_runnable_bundle(folder: Path, *, classes: int = 2) -> Path:
    """The fake bundle with a real tokenizer and a tiny model BundleRunner can run: ``classes``
    logits, labels neg/pos (2) or a regression score (1)."""
    write_fake_bundle(folder)
    (folder / "model.onnx").write_bytes(tiny_onnx(classes))
    (folder / "tokenizer.json").write_text(tiny_tokenizer())
    if classes == 1:
        rewrite(folder, lambda m: m.update(labels=[], task={"name": "toy", "kind": "regression"}))
    else:
        rewrite(folder)
    return folder


def load_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def rewrite(folder: Path, change=lambda manifest: None) -> dict:
    """What a tamperer who knows the format does: change the manifest, re-hash every file and
    reseal the digest, so that the hashes all match again."""
    manifest = load_manifest(folder)
    manifest["files"] = file_table(folder)
    change(manifest)
    return write_manifest(folder, manifest)


def tar_gz(archive: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """An archive of ``(name, data)`` members (``None``: a folder), as any tar tool writes."""
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return archive


def members_of(folder: Path, prefix: str) -> list[tuple[str, bytes | None]]:
    """A bundle folder's files as ``tar_gz`` members under ``prefix`` (``./`` or ``NAME/``)."""
    out: list[tuple[str, bytes | None]] = [(prefix.rstrip("/") or ".", None)]
    for path in sorted(folder.rglob("*")):
        name = prefix + path.relative_to(folder).as_posix()
        out.append((name, None if path.is_dir() else path.read_bytes()))
    return out
