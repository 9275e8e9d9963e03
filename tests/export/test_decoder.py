"""Decoder export: a tiny GPT-2 with past key values, float and MatMulNBits, prefill and one
decode step checked against PyTorch."""

from __future__ import annotations

import onnx
import pytest
import torch

from toolchain.config import ExportConfig
from toolchain.data.tasks import TaskSpec
from toolchain.export.onnx import ExportError
from toolchain.export.stage import export_model
from toolchain.quantize.calibrate import calibrate
from toolchain.quantize.convert import save_quantized
from toolchain.quantize.modules import plan_modules, quantize_modules


@pytest.fixture
def text_task(tmp_path) -> TaskSpec:
    lines = [
        "the cat sat on the mat",
        "a quick brown fox",
        "jumps over the lazy dog",
        "hello world again",
        "edge devices run small models",
    ] * 4
    (tmp_path / "valid.txt").write_text("\n".join(lines) + "\n")
    return TaskSpec(
        name="toy-lm",
        kind="language-modeling",
        folder="",
        format="text",
        files={"dev": str(tmp_path / "valid.txt")},
    )


@pytest.fixture
def gpt2_dirs(tiny_gpt2, tmp_path):
    tiny_gpt2.model.eval()
    tiny_gpt2.save(tmp_path / "float")
    plan = plan_modules(tiny_gpt2.model, weight_bits=4)
    quantize_modules(tiny_gpt2.model, plan, act_bits=None)
    ids = torch.randint(1, 28, (4, 10))
    calibrate(tiny_gpt2.model, [{"input_ids": ids}])
    tiny_gpt2.model.eval()
    save_quantized(tiny_gpt2, tmp_path / "packed", block_size=16)
    return tmp_path / "float", tmp_path / "packed"


def test_float_decoder_with_past_passes_parity(gpt2_dirs, text_task, tmp_path):
    report = export_model(gpt2_dirs[0], tmp_path / "o", fmt="fp32", spec=text_task)
    assert report["parity"]["max_abs_diff"] < 1e-3 and report["parity"]["label_agreement"] == 1.0
    graph = onnx.load(str(tmp_path / "o" / "model.onnx")).graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    assert {"input_ids", "attention_mask", "past_key_values.0.key"} <= inputs
    assert {"logits", "present.1.value"} <= outputs


def test_packed_decoder_as_matmulnbits(gpt2_dirs, text_task, tmp_path):
    report = export_model(gpt2_dirs[1], tmp_path / "o", fmt="nbits", spec=text_task)
    assert report["parity"]["label_agreement"] >= 0.995
    graph = onnx.load(str(tmp_path / "o" / "model.onnx")).graph
    assert (
        sum(n.op_type == "MatMulNBits" for n in graph.node) == 2 * 4
    )  # c_attn, c_proj, c_fc, c_proj
    with pytest.raises(ExportError, match="fp16 export of decoders is not supported yet"):
        export_model(gpt2_dirs[0], tmp_path / "x", fmt="fp16", spec=text_task)


def tiny_llama_dir(tokenizer, folder):
    """A tiny random Llama (RoPE, grouped KV heads) saved in ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from toolchain.models.adapters import adapter_for

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=28,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    adapter_for(LlamaForCausalLM(config).eval(), tokenizer).save(folder)
    return folder


def test_llama_decoder_with_past(tiny_gpt2, text_task, tmp_path):
    """The Llama family (RoPE, grouped KV heads) through the same route."""
    tiny_llama_dir(tiny_gpt2.tokenizer, tmp_path / "llama")
    report = export_model(tmp_path / "llama", tmp_path / "o", fmt="fp32", spec=text_task)
    assert report["parity"]["max_abs_diff"] < 1e-3 and report["parity"]["label_agreement"] == 1.0
    past = [
        i
        for i in onnx.load(str(tmp_path / "o" / "model.onnx")).graph.input
        if i.name == "past_key_values.0.key"
    ]
    assert past[0].type.tensor_type.shape.dim[1].dim_value == 2  # the grouped KV heads


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_kv_cache_decode_equals_full_recomputation_and_transformers_greedy(
    family, gpt2_dirs, tiny_gpt2, text_task, tmp_path
):
    import numpy as np

    from toolchain.export.decoder import full_logits, greedy_decode
    from toolchain.export.onnx import session
    from toolchain.models.loading import load_model

    folder = gpt2_dirs[0]
    if family == "llama":  # RoPE: the cached steps' positions must continue the prompt's
        folder = tiny_llama_dir(tiny_gpt2.tokenizer, tmp_path / "llama")
    export_model(folder, tmp_path / "o", fmt="fp32", spec=text_task)
    sess = session(tmp_path / "o" / "model.onnx")
    prompt = np.array([[3, 9, 1, 27, 5]], dtype=np.int64)
    tokens, logits = greedy_decode(sess, prompt, 8)
    # full recomputation: the whole sequence at once, no cache; position t predicts t + 1
    seq = np.concatenate([prompt, tokens[None, :-1]], axis=1)
    full = full_logits(sess, seq)[0]
    for step, row in enumerate(logits):
        np.testing.assert_allclose(row, full[prompt.shape[1] - 1 + step], atol=1e-4)
    # and token for token what transformers' own greedy generation gives
    model = load_model(str(folder), head="causal-lm").model.eval()
    ref = model.generate(
        torch.from_numpy(prompt), attention_mask=torch.ones(1, 5, dtype=torch.long),
        max_new_tokens=8, do_sample=False, pad_token_id=0,
    )  # fmt: skip
    assert ref[0, 5:].tolist() == tokens.tolist()


@pytest.mark.parametrize("which", (0, 1))
def test_a_decoder_export_generates_with_optimum(gpt2_dirs, text_task, tmp_path, which):
    """optimum's ORTModelForCausalLM runs the export (float and MatMulNBits) with its KV cache and
    greedily generates what the PyTorch model generates."""
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    from toolchain.quantize.convert import load_any

    src = gpt2_dirs[which]
    fmt = "nbits" if which else "fp32"
    export_model(src, tmp_path / "o", fmt=fmt, spec=text_task, cfg=ExportConfig(accuracy_level=0))
    model = ORTModelForCausalLM.from_pretrained(str(tmp_path / "o"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "o"))
    prompt = tok(["the cat sat"], return_tensors="pt")
    got = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    reference = load_any(src, head="causal-lm").model.eval()
    with torch.no_grad():
        expected = reference.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert got.tolist() == expected.tolist()
