"""Export: every format passes parity on a tiny packed checkpoint; auto picks the fastest that
passes (fake timings); bad inputs get clear errors."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from toy import write_toy_table

from toolchain.config import ExportConfig
from toolchain.data.tasks import TaskSpec
from toolchain.export.lowbit import to_matmul_nbits
from toolchain.export.onnx import ExportError, export_float, load_for_export, session
from toolchain.export.stage import candidates, export_model
from toolchain.quantize.calibrate import calibrate
from toolchain.quantize.convert import save_quantized
from toolchain.quantize.modules import plan_modules, quantize_modules


@pytest.fixture
def toy_task(tmp_path) -> TaskSpec:
    write_toy_table(tmp_path / "dev.tsv", 64, 1)
    return TaskSpec(
        name="toy",
        kind="classification",
        folder="",
        format="tsv",
        files={"dev": str(tmp_path / "dev.tsv")},
        text_columns=("text",),
        label_column="label",
        labels=("neg", "pos"),
    )


def _classifier(tiny_bert_dir, tmp):
    from toy import TOY_SPEC, toy_examples
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from toolchain.config import TeacherConfig
    from toolchain.models.adapters import adapter_for
    from toolchain.models.finetune import finetune

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=80,
        max_position_embeddings=64,
    )
    model = BertForSequenceClassification(config)
    adapter = adapter_for(model, BertTokenizerFast.from_pretrained(str(tiny_bert_dir)))
    # trained on the toy task, so its labels carry real margins (a random head's do not)
    cfg = TeacherConfig(
        learning_rate=1e-3, batch_size=16, max_seq_len=16, max_steps=120, eval_every=120
    )
    finetune(adapter, TOY_SPEC, toy_examples(400, 0), toy_examples(50, 1), cfg, out_dir=tmp)
    adapter.model.eval()
    return adapter


@pytest.fixture
def packed_dir(tiny_bert_dir, tmp_path):
    """A tiny W4/W2 packed checkpoint with 8-bit activations (K = 48 and 80, block 32)."""
    adapter = _classifier(tiny_bert_dir, tmp_path / "train")
    plan = plan_modules(adapter.model, weight_bits=4, overrides={"*intermediate*": 2})
    quantize_modules(adapter.model, plan, act_bits=8)
    tok = adapter.tokenizer(
        ["the movie was good", "a bad world is awful"] * 4, padding=True, return_tensors="pt"
    )
    calibrate(adapter.model, [dict(tok)])
    adapter.model.eval()
    return save_quantized(adapter, tmp_path / "packed", block_size=32)


@pytest.fixture
def float_dir(tiny_bert_dir, tmp_path):
    adapter = _classifier(tiny_bert_dir, tmp_path / "train")
    adapter.save(tmp_path / "float")
    return tmp_path / "float"


@pytest.mark.parametrize("fmt", ("fp32", "fp16", "int8-dynamic", "int8-qdq", "nbits"))
@pytest.mark.parametrize("level", (0, 4))
def test_every_format_passes_parity(packed_dir, toy_task, tmp_path, fmt, level):
    if fmt != "nbits" and level:
        pytest.skip("accuracy_level applies to nbits only")
    out = tmp_path / "out"
    report = export_model(
        packed_dir, out, fmt=fmt, spec=toy_task, cfg=ExportConfig(accuracy_level=level)
    )
    assert report["format"] == fmt and report["parity"]["label_agreement"] >= 0.995
    assert report["parity"]["max_abs_diff"] <= report["tolerance"]
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    if fmt == "nbits":
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        assert len(nbits) == 2 * 6 + 1  # every quantized Linear, the pooler's Gemm included
        bits = sorted({a.i for n in nbits for a in n.attribute if a.name == "bits"})
        assert bits == [2, 4]
    if fmt == "int8-qdq":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert json.loads((out / "export.json").read_text())["format"] == fmt
    assert (out / "tokenizer.json").is_file()


def test_nbits_weights_are_the_packed_buffers(packed_dir, tmp_path):
    from onnx import numpy_helper
    from safetensors.torch import load_file

    twin, _ = load_for_export(packed_dir)
    float_onnx = export_float(twin, tmp_path / "f.onnx")
    to_matmul_nbits(float_onnx, tmp_path / "n.onnx", packed_dir)
    inits = {
        i.name: numpy_helper.to_array(i)
        for i in onnx.load(str(tmp_path / "n.onnx")).graph.initializer
    }
    tensors = load_file(str(packed_dir / "model.safetensors"))
    name = "bert.encoder.layer.1.intermediate.dense"
    assert (inits[f"{name}.qweight"] == tensors[f"{name}.qweight"].numpy()).all()


@pytest.mark.parametrize(
    ("fake", "expected"),
    [
        (
            {"fp32": 5.0, "fp16": 7.0, "int8-dynamic": 3.0, "int8-qdq": 2.0, "nbits": 9.0},
            "int8-qdq",
        ),
        ({"fp32": 1.0, "fp16": 7.0, "int8-dynamic": 3.0, "int8-qdq": 2.0, "nbits": 9.0}, "fp32"),
        ({"fp32": 5.0, "fp16": 4.5, "int8-dynamic": 4.0, "int8-qdq": 6.0, "nbits": 0.5}, "nbits"),
    ],
)
def test_auto_never_picks_a_slower_candidate(packed_dir, toy_task, tmp_path, fake, expected):
    def measure(path, batch):
        return fake[path.stem]

    report = export_model(packed_dir, tmp_path / "o", fmt="auto", spec=toy_task, measure=measure)
    assert report["format"] == expected
    lat = {f: e["latency_ms_b1_s128"] for f, e in report["candidates"].items()}
    assert lat == fake and lat[expected] <= lat["fp32"]


def test_auto_on_a_float_model_has_float_candidates_only(float_dir, toy_task, tmp_path):
    assert candidates("auto", packed=False, act_bits=None) == ["fp32", "fp16", "int8-dynamic"]
    fake = {"fp32": 2.0, "fp16": 3.0, "int8-dynamic": 1.0}
    report = export_model(
        float_dir, tmp_path / "o", fmt="auto", spec=toy_task, measure=lambda p, b: fake[p.stem]
    )
    assert report["format"] == "int8-dynamic"
    with pytest.raises(ExportError, match="--format nbits needs a packed checkpoint"):
        export_model(float_dir, tmp_path / "x", fmt="nbits", spec=toy_task)
    assert not (tmp_path / "x").exists()


def test_a_failed_parity_check_writes_nothing(packed_dir, toy_task, tmp_path, monkeypatch):
    import toolchain.export.stage as stage

    monkeypatch.setitem(stage.TOLERANCE, "nbits", 0.0)
    monkeypatch.setattr(stage, "check_parity", _strict_parity)
    with pytest.raises(ExportError, match="parity with PyTorch failed"):
        export_model(packed_dir, tmp_path / "o", fmt="nbits", spec=toy_task)
    assert not (tmp_path / "o").exists()


def _strict_parity(path, reference, batches, *, tolerance, min_label_agreement):
    from toolchain.export.onnx import check_parity

    return check_parity(
        path, reference, batches, tolerance=-1.0, min_label_agreement=min_label_agreement
    )


def test_missing_or_corrupt_onnx_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="ONNX file not found: .*missing.onnx"):
        session(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="bad.onnx: ONNX Runtime cannot load it"):
        session(bad)


def test_edgec_export_cli(edgec, packed_dir, toy_task, tmp_path):
    from toolchain.export.tensorrt import availability

    # where TensorRT is absent, --tensorrt still writes the TensorRT-bound copy and says so
    trt_flag = () if availability()[0] else ("--tensorrt",)
    out = tmp_path / "cli"
    write_toy_table(tmp_path / "train.tsv", 64, 0)
    args = (
        "export",
        str(packed_dir),
        "--train-file",
        str(tmp_path / "train.tsv"),
        "--dev-file",
        toy_task.files["dev"],
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--format",
        "nbits",
        *trt_flag,
        "-o",
        str(out),
    )
    proc = edgec(*args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "exported as nbits" in proc.stdout and "label agreement 1.0000" in proc.stdout
    if trt_flag:
        assert "TensorRT: engine.plan NOT built: TensorRT is not installed here" in proc.stdout
        assert "TensorRT-bound copy model.trt.onnx: " in proc.stdout
        assert "MatMulNBits node(s) with B as an int32 view" in proc.stdout
        assert (out / "model.trt.onnx").is_file()
    again = edgec(*args, timeout=300)
    assert "up to date (cached)" in again.stdout
    bad = edgec("export", str(tmp_path), "--task", "sst2", "-o", str(tmp_path / "b"))
    assert (
        bad.returncode == 1
        and "is not a Hugging Face model directory: config.json is missing" in bad.stderr
    )


def test_tensorrt_absence_is_said_plainly(packed_dir, toy_task, tmp_path):
    from toolchain.export.tensorrt import availability, build_engine

    ok, why = availability()
    if ok:
        pytest.skip("tensorrt is installed here; see the tensorrt-marked test")
    assert "TensorRT is not installed here" in why
    with pytest.raises(ExportError, match="TensorRT is not installed here"):
        build_engine(tmp_path / "m.onnx", tmp_path / "engine.plan")
    report = export_model(packed_dir, tmp_path / "o", fmt="fp32", spec=toy_task, tensorrt=True)
    assert report["tensorrt"] == {"built": False, "why": why}
    assert not (tmp_path / "o" / "engine.plan").exists()


def test_a_missing_tensorrt_plugin_library_is_refused_up_front(packed_dir, toy_task, tmp_path):
    from toolchain.export.stage import export_stage

    with pytest.raises(ExportError, match=r"nope\.so: no such file .*kernels/tensorrt/README"):
        export_stage(
            model_dir=str(packed_dir),
            fmt="nbits",
            spec=toy_task,
            tensorrt=True,
            plugin_libs=(str(tmp_path / "nope.so"),),
        )


@pytest.mark.cuda
def test_tensorrt_engine_from_qdq(packed_dir, toy_task, tmp_path):
    pytest.importorskip("tensorrt")
    report = export_model(packed_dir, tmp_path / "o", fmt="int8-qdq", spec=toy_task, tensorrt=True)
    assert report["tensorrt"]["built"] and (tmp_path / "o" / "engine.plan").stat().st_size > 0


@pytest.fixture
def packed_with_tables(tiny_bert_dir, tmp_path):
    """Every Linear and every embedding table at 2 bits (tables stored in the 4-bit container)."""
    adapter = _classifier(tiny_bert_dir, tmp_path / "train")
    plan = plan_modules(adapter.model, weight_bits=2, quantize_embeddings=True)
    quantize_modules(adapter.model, plan, act_bits=8)
    tok = adapter.tokenizer(
        ["the movie was good", "a bad world"] * 4, padding=True, return_tensors="pt"
    )
    calibrate(adapter.model, [dict(tok)])
    adapter.model.eval()
    return save_quantized(adapter, tmp_path / "packed-tables", block_size=16)


@pytest.mark.parametrize("fmt", ("nbits", "int8-qdq"))
def test_quantized_tables_stay_quantized_in_onnx(packed_with_tables, toy_task, tmp_path, fmt):
    out = tmp_path / fmt
    report = export_model(packed_with_tables, out, fmt=fmt, spec=toy_task)
    assert report["parity"]["label_agreement"] >= 0.995
    graph = onnx.load(str(out / "model.onnx")).graph
    float_tables = [i.name for i in graph.initializer if i.name.endswith("embeddings.weight")]
    assert float_tables == []  # no float copy of any table is left
    if fmt == "nbits":
        gbq = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
        assert len(gbq) == 3 and {a.i for n in gbq for a in n.attribute if a.name == "bits"} == {4}
    else:
        assert "bert.embeddings.word_embeddings.w_int8" in {i.name for i in graph.initializer}


def test_tensorrt_bound_copy_keeps_the_bytes_and_the_outputs(
    packed_with_tables, toy_task, tmp_path
):
    """model.trt.onnx: B as an int32 view of the same packed bytes (the plugin reads it in place)
    and the quantized tables as fp16 Gathers; viewed back to uint8 it computes what model.onnx
    does (tables rounded to fp16)."""
    import numpy as np
    from onnx import numpy_helper

    out = tmp_path / "o"
    report = export_model(packed_with_tables, out, fmt="nbits", spec=toy_task, tensorrt=True)
    trt_report = report["tensorrt"]
    if not trt_report["built"]:
        assert "TensorRT is not installed here" in trt_report["why"]
    assert trt_report["onnx"] == "model.trt.onnx"
    original, bound = (onnx.load(str(out / f)) for f in ("model.onnx", "model.trt.onnx"))
    count = sum(n.op_type == "MatMulNBits" for n in original.graph.node)
    assert count > 10
    assert trt_report["notes"][0].startswith(f"{count} MatMulNBits node(s) with B as an int32 view")
    assert "3 quantized embedding table(s) dequantized to fp16" in trt_report["notes"][1]
    before = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in bound.graph.initializer}
    nbits = [n for n in bound.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == count
    for node in nbits:
        b, words = before[node.input[1]], after[node.input[1]]
        assert words.dtype == np.int32 and words.shape == (*b.shape[:2], b.shape[2] // 4)
        assert words.tobytes() == b.tobytes()
    assert not [n for n in bound.graph.node if n.op_type == "GatherBlockQuantized"]
    # each fp16 table is the checkpoint's table (its own 2-bit packing, not the export's 4-bit)
    from toolchain.export.lowbit import _dequantized, _packed

    qc, tensors = _packed(packed_with_tables)
    tables = dict(_dequantized(qc, tensors, "embedding"))
    assert len(tables) == 3
    for name, w in tables.items():
        half = after[f"{name}.gbq.fp16_table"]
        assert half.dtype == np.float16 and half.shape == w.shape
        np.testing.assert_allclose(half.astype(np.float32), w, rtol=1e-3, atol=1e-6)
    # view B back to uint8 so ONNX Runtime can run the copy, and compare the logits
    for node in nbits:
        raw = after[node.input[1]].view(np.uint8).reshape(before[node.input[1]].shape)
        init = next(i for i in bound.graph.initializer if i.name == node.input[1])
        init.CopyFrom(numpy_helper.from_array(raw, node.input[1]))
    onnx.save(bound, str(tmp_path / "back.onnx"))
    feeds = {"input_ids": np.array([[2, 5, 7, 9, 3]]), "attention_mask": np.ones((1, 5), np.int64)}
    feeds["token_type_ids"] = np.zeros((1, 5), np.int64)
    logits = [
        session(p).run(None, {k: v for k, v in feeds.items() if k in _inputs(p)})[0]
        for p in (out / "model.onnx", tmp_path / "back.onnx")
    ]
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-3, atol=1e-3)


def test_an_nbits_engine_without_the_plugin_is_refused_before_the_build(
    packed_dir, toy_task, tmp_path, monkeypatch
):
    """Where TensorRT imports, an nbits export with no --plugin-lib stops with the fix."""
    import toolchain.export.tensorrt as trt_mod

    monkeypatch.setattr(trt_mod, "availability", lambda: (True, "10.3.0"))
    monkeypatch.setattr(trt_mod, "build_engine", lambda *a, **k: pytest.fail("build attempted"))
    with pytest.raises(
        ExportError, match=r"MatMulNBits nodes.*libedgec_trt_plugin\.so.*--plugin-lib"
    ):
        export_model(packed_dir, tmp_path / "o", fmt="nbits", spec=toy_task, tensorrt=True)


def _inputs(path) -> set[str]:
    return {i.name for i in onnx.load(str(path)).graph.input}


def test_an_export_without_low_bit_ops_gets_no_tensorrt_copy(packed_dir, toy_task, tmp_path):
    from toolchain.export.tensorrt import for_tensorrt

    report = export_model(packed_dir, tmp_path / "o", fmt="int8-qdq", spec=toy_task)
    assert for_tensorrt(tmp_path / "o" / "model.onnx", tmp_path / "x.onnx") is None
    assert not (tmp_path / "x.onnx").exists() and report["format"] == "int8-qdq"


def test_token_classification_export_compares_real_tokens(tiny_bert_dir, tmp_path):
    """A token classifier: logits per token, compared over real (unpadded) tokens only."""
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    from toolchain.models.adapters import adapter_for

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    tok = BertTokenizerFast.from_pretrained(str(tiny_bert_dir))
    adapter_for(BertForTokenClassification(config).eval(), tok).save(tmp_path / "tagger")
    lines = ["-DOCSTART- -X- -X- O", ""]
    for words in (["the", "movie", "was", "good"], ["hello", "world"]) * 4:
        lines += [f"{w} X X {'B-MISC' if w in ('movie', 'world') else 'O'}" for w in words] + [""]
    (tmp_path / "dev.txt").write_text("\n".join(lines) + "\n")
    spec = TaskSpec(
        name="toy-ner",
        kind="token-classification",
        folder="",
        format="conll",
        files={"dev": str(tmp_path / "dev.txt")},
        label_column="3",
        labels=("O", "B-MISC", "I-MISC"),
    )
    report = export_model(tmp_path / "tagger", tmp_path / "o", fmt="fp32", spec=spec)
    assert report["parity"]["max_abs_diff"] < 1e-4
    assert report["parity"]["n"] > 8  # counted per real token, not per sentence
    out = onnx.load(str(tmp_path / "o" / "model.onnx")).graph.output[0]
    assert [d.dim_param for d in out.type.tensor_type.shape.dim[:2]] == ["batch", "sequence"]
