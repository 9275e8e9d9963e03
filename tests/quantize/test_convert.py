"""Fake-quant modules, packed checkpoints and their reload (tiny models with awkward shapes)."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from toolchain.errors import ConfigError
from toolchain.models.adapters import adapter_for
from toolchain.quantize.calibrate import calibrate, rtn, weight_sqnr_db
from toolchain.quantize.convert import (
    QuantFormatError,
    load_quantized,
    model_bytes,
    read_quantization_config,
    save_quantized,
)
from toolchain.quantize.modules import (
    QuantEmbedding,
    QuantLinear,
    plan_modules,
    quantize_modules,
    quantized_modules,
)


@pytest.fixture
def tiny_classifier(tiny_bert_dir):
    """A 2-layer BERT classifier with hidden 48 and FFN 80 (K not a multiple of the block)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=80,
        max_position_embeddings=32,
        num_labels=3,
    )
    tok = BertTokenizerFast.from_pretrained(str(tiny_bert_dir))
    return adapter_for(BertForSequenceClassification(config).eval(), tok)


def batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 16, (4, 11), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 7:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def quantized(adapter, plan, act_bits=8, init="mse"):
    quantize_modules(adapter.model, plan, act_bits=act_bits)
    calibrate(adapter.model, batches(), weight_init=init, act_init=init)
    return adapter


def test_plan_excludes_the_classifier_and_honours_overrides(tiny_classifier):
    model = tiny_classifier.model
    plan = plan_modules(model, weight_bits=4)
    assert "classifier" not in plan and "bert.pooler.dense" in plan
    assert not any("embeddings" in n for n in plan)
    assert len(plan) == 2 * 6 + 1 and set(plan.values()) == {4}
    plan = plan_modules(
        model,
        weight_bits=4,
        quantize_embeddings=True,
        overrides={"*.output.dense": 8, "*layer.1.output.dense": 3, "classifier": 8},
    )
    assert plan["bert.embeddings.word_embeddings"] == 4
    assert plan["bert.encoder.layer.0.output.dense"] == 8
    assert plan["bert.encoder.layer.1.output.dense"] == 3  # the later pattern wins
    assert plan["classifier"] == 8
    with pytest.raises(ConfigError, match=r"pattern\(s\) \['\*nothing\*'\] match no Linear"):
        plan_modules(model, weight_bits=4, overrides={"*nothing*": 2})


def test_quant_linear_computes_quantized_inputs_times_quantized_weights(tiny_classifier):
    q = quantized(tiny_classifier, {"bert.encoder.layer.0.intermediate.dense": 3})
    m = q.model.bert.encoder.layer[0].intermediate.dense
    assert isinstance(m, QuantLinear) and m.act_quant.bits == 8
    x = torch.randn(2, 5, 48)
    expected = torch.nn.functional.linear(m.act_quant(x), m.weight_quant(m.weight), m.bias)
    torch.testing.assert_close(m(x), expected)
    codes = m.weight_quant.codes(m.weight)
    assert codes.min() >= -4 and codes.max() <= 3  # 3-bit signed


@pytest.mark.parametrize("act_bits", (8, None))
def test_convert_then_reload_gives_equal_logits(tiny_classifier, tmp_path, act_bits):
    """Every width 2..8 (so every container), embeddings included, K = 48 and 80 with block 32."""
    names = list(plan_modules(tiny_classifier.model, weight_bits=4, quantize_embeddings=True))
    plan = {n: 2 + i % 7 for i, n in enumerate(names)}
    q = quantized(tiny_classifier, plan, act_bits=act_bits)
    save_quantized(q, tmp_path / "packed", block_size=32)
    qc = read_quantization_config(tmp_path / "packed")
    assert qc["act_bits"] == act_bits and qc["block_size"] == 32
    assert {e["bits"] for e in qc["modules"].values()} == set(range(2, 9))
    entry = qc["modules"]["bert.encoder.layer.0.attention.self.query"]
    assert entry["container_bits"] == {2: 2, 3: 4, 4: 4}.get(entry["bits"], 8)
    back = load_quantized(tmp_path / "packed")
    assert set(quantized_modules(back.model)) == set(plan)
    assert isinstance(back.model.bert.embeddings.word_embeddings, QuantEmbedding)
    with torch.no_grad():
        for b in batches(seed=1):
            a, r = q.model(**b).logits, back.model(**b).logits
            torch.testing.assert_close(r, a, rtol=0, atol=1e-5)


def test_model_bytes_is_the_file_size_less_its_header(tiny_classifier, tmp_path):
    plan = plan_modules(tiny_classifier.model, weight_bits=2, quantize_embeddings=True)
    priced = model_bytes(tiny_classifier.model, block_size=32, plan=plan)
    q = quantized(tiny_classifier, plan)
    assert model_bytes(q.model, block_size=32) == priced
    path = save_quantized(q, tmp_path / "p", block_size=32) / "model.safetensors"
    data = path.read_bytes()
    header = struct.unpack("<Q", data[:8])[0]
    assert len(data) - 8 - header == priced


def test_gpt2_conv1d_and_tied_head_round_trip(tiny_gpt2, tmp_path):
    plan = plan_modules(tiny_gpt2.model, weight_bits=4)
    assert "transformer.h.0.attn.c_attn" in plan and "lm_head" not in plan
    q = quantized(tiny_gpt2, plan)
    q.model.eval()
    save_quantized(q, tmp_path / "g", block_size=16)
    back = load_quantized(tmp_path / "g")
    assert back.model.lm_head.weight is back.model.transformer.wte.weight
    ids = torch.randint(1, 28, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(back.model(ids).logits, q.model(ids).logits, rtol=0, atol=1e-5)


def test_tied_head_and_quantized_table_are_refused(tiny_gpt2):
    with pytest.raises(ConfigError, match="lm_head shares its weight with transformer.wte"):
        plan_modules(tiny_gpt2.model, weight_bits=4, quantize_embeddings=True)


def test_rtn_and_sqnr(tiny_classifier):
    plan = plan_modules(tiny_classifier.model, weight_bits=8)
    quantize_modules(tiny_classifier.model, plan, act_bits=8)
    rtn(tiny_classifier.model, batches())
    m = tiny_classifier.model.bert.pooler.dense
    torch.testing.assert_close(m.weight_quant.step, m.weight.abs().amax(1) / 127)
    sqnr = weight_sqnr_db(tiny_classifier.model)
    assert min(sqnr.values()) > 30  # 8-bit max-abs on Gaussian weights: ~40 dB


def _edit_config(path, change):
    cfg = json.loads((path / "config.json").read_text())
    change(cfg["quantization_config"])
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda qc: qc.update(quant_method="gptq"), "quant_method must be 'edgec-lsq', got 'gptq'"),
        (lambda qc: qc.update(format_version=9), r"format_version must be 1 \(upgrade edgec\)"),
        (lambda qc: qc.update(block_size=48), "block_size must be one of"),
        (lambda qc: qc.update(modules={}), "modules must be a non-empty object"),
        (
            lambda qc: qc["modules"]["bert.pooler.dense"].update(bits=9),
            "modules.bert.pooler.dense.bits must be an integer in 2..8, got 9",
        ),
        (
            lambda qc: qc["modules"]["bert.pooler.dense"].update(container_bits=2),
            "modules.bert.pooler.dense.container_bits must be 4, got 2",
        ),
        (
            lambda qc: qc["modules"]["bert.pooler.dense"].update(bits=2, container_bits=2),
            r"bert.pooler.dense has qweight \(48, 2, 16\) .* needs \(48, 2, 8\)",
        ),
        (lambda qc: qc.pop("quant_method"), "quant_method must be 'edgec-lsq', got None"),
    ],
)
def test_malformed_quantization_config_is_refused(tiny_classifier, tmp_path, change, message):
    q = quantized(tiny_classifier, plan_modules(tiny_classifier.model, weight_bits=4))
    path = save_quantized(q, tmp_path / "p", block_size=32)
    _edit_config(path, change)
    with pytest.raises(QuantFormatError, match=message):
        load_quantized(path)


def test_float_model_and_bad_json_are_refused(tiny_bert_dir, tmp_path):
    with pytest.raises(QuantFormatError, match="has no quantization_config: a float model"):
        read_quantization_config(tiny_bert_dir)
    (tmp_path / "config.json").write_text("{\n  'bad': 1\n}")
    with pytest.raises(QuantFormatError, match="invalid JSON at line 2"):
        read_quantization_config(tmp_path)
