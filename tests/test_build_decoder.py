"""`edgec build` for decoder LMs (toolchain.plan_decoder): tiny Llama and GPT-2 teachers through
the whole build on CPU (candidates, KD, KDLSQ, KV-cache export, LM bundles), bundles that
generate what transformers generates, generation budgets and their checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from toolchain import api
from toolchain.config import BudgetSpec
from toolchain.errors import ConfigError

SMALL = {
    "distill.steps": 4,
    "distill.eval_every": 2,
    "distill.eval_samples": 4,
    "distill.batch_size": 2,
    "distill.max_seq_len": 32,
    "distill.importance_samples": 8,
    "quantize.steps": 2,
    "quantize.eval_every": 2,
    "quantize.eval_samples": 2,
    "quantize.batch_size": 2,
    "quantize.max_seq_len": 32,
    "quantize.calibration_batches": 1,
    "quality.max_distilled": 2,
    "search.finalists": 1,
}


@pytest.fixture
def lm_data(shared_data, tmp_path) -> Path:
    """A small WikiText-2 folder: the first lines of the real files."""
    src, dst = shared_data / "wikitext-2", tmp_path / "data" / "wikitext-2"
    dst.mkdir(parents=True)
    for name, n in (("valid.txt", 300), ("wiki.test.raw", 60)):
        dst.joinpath(name).write_text("\n".join((src / name).read_text().splitlines()[:n]))
    return dst.parent


def _tokenizer(shared_data):
    from transformers import PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_file=str(shared_data / "tokenizers" / "gpt2" / "tokenizer.json"),
        eos_token=eos, bos_token=eos, pad_token=eos,
    )  # fmt: skip


def _tiny(family: str, shared_data, folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from toolchain.models.adapters import adapter_for

    tok = _tokenizer(shared_data)
    torch.manual_seed(0)
    if family == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=512, tie_word_embeddings=True,
                          eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)  # fmt: skip
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=4, n_head=4, n_positions=512,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)  # fmt: skip
        model = GPT2LMHeadModel(cfg)
    adapter_for(model, tok).save(folder)
    return folder


def _build(teacher: Path, data: Path, out: Path, device: str, **extra) -> dict:
    overrides = {"device": device, "teacher": str(teacher), "task": "wikitext2",
                 "data_dir": str(data), **SMALL, **extra}  # fmt: skip
    recipe = api.build_recipe(None, preset="quick", overrides=overrides)
    return api.build(recipe, out, teacher_cache=out.parent / "cache", predictors=None)


def test_tiny_llama_builds_measured_lm_bundles_that_generate(shared_data, lm_data, tmp_path):
    from toolchain.bundle.generator import GeneratorRunner

    teacher = _tiny("llama", shared_data, tmp_path / "teacher")
    s = _build(teacher, lm_data, tmp_path / "out", "host")
    assert s["kind"] == "language-modeling" and s["precision"] == "int4"
    assert {c["init"] for c in s["candidates"]} == {"truncation", "etd-impt"}
    assert all(b["built"] for b in s["bundles"]), s["bundles"]
    row = s["bundles"][0]
    assert row["format"] == "nbits" and row["latency"]["status"] == "measured"
    assert row["latency"]["ttft_ms"] > 0 and row["latency"]["decode_tok_s"] > 0
    assert row["dev"]["perplexity"] > 0 and 0 <= row["dev"]["next_token_agreement"] <= 1
    assert "blocks of 256 tokens" in s["protocol"]
    assert s["trivial"]["perplexity"] > 0 and s["baseline"]["dev"]["perplexity"] > 0
    assert "removed" in s["teacher"]["cleaning"]  # per-rule counts of the cleaning
    manifest = json.loads((Path(row["bundle"]) / "manifest.json").read_text())
    assert manifest["task"]["kind"] == "language-modeling"
    assert manifest["target"]["budget"]["decode_tok_s"] == row["decode_budget_tok_s"]
    run = GeneratorRunner(row["bundle"]).generate("The tower", max_new_tokens=5)
    assert run.text() and run.stats["new_tokens"] == 5
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Candidates" in report and row["key"] in report


def test_gpt2_fp32_bundle_generates_transformers_greedy_tokens(shared_data, lm_data, tmp_path):
    """Predicted for the Jetson (no timing here); unquantized so the bundle can be compared with
    the distilled student in transformers, token for token."""
    from transformers import AutoModelForCausalLM

    from toolchain.bundle.generator import GeneratorRunner

    teacher = _tiny("gpt2", shared_data, tmp_path / "teacher")
    s = _build(teacher, lm_data, tmp_path / "out", "jetson", **{"quantize.method": "none"})
    row = next(b for b in s["bundles"] if b.get("built"))
    assert row["latency"]["status"] == "predicted" and "predicted" in row["verdict"]
    assert "Conv1D" not in row["shape"]  # GPT-2's Conv1D layout went through extraction
    runner = GeneratorRunner(row["bundle"])
    prompt = "The history of the castle"
    ids = runner.encode(prompt)
    got = runner.generate(prompt, max_new_tokens=8)
    text = got.text()
    student = AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "out" / f"distill-{row['key']}")
    ).eval()
    ref = student.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                           pad_token_id=0, eos_token_id=None)[0, len(ids):]  # fmt: skip
    assert text == runner.decode(ref.tolist())


def test_candidate_grid_truncates_and_extracts():
    from toolchain.models.adapters import Shape
    from toolchain.plan_decoder import candidate_grid

    grid = candidate_grid(Shape(30, 576, 9, 1536, kv_heads=3))
    keys = [c["key"] for c in grid]
    assert keys == ["trunc-L15", "trunc-L10", "trunc-L6", "etd-L10-F1024", "etd-L6-F1024"]
    assert all(c["shape"].kv_heads == 3 for c in grid)


def test_generation_prediction_orders_shapes_and_fits_checks_the_slow_end():
    from toolchain.devices.generation import decoder_shape, predict_generation
    from toolchain.devices.latency import model_for
    from toolchain.devices.profiles import get_profile
    from toolchain.models.adapters import Shape
    from toolchain.plan_decoder import fits

    model = model_for(get_profile("jetson"), "int4")
    figs = [predict_generation(model, decoder_shape(Shape(n, 576, 9, 1536, kv_heads=3),
                                                    vocab=49152), prompt=128, context=256)
            for n in (30, 10)]  # fmt: skip
    assert figs[1]["ttft_hi_ms"] < figs[0]["ttft_hi_ms"]
    assert figs[1]["decode_tok_s"] > figs[0]["decode_tok_s"]
    assert figs[0]["kv_cache_mb"] == pytest.approx(4 * 2 * 30 * 256 * 192 / 2**20, rel=1e-3)
    fig = {"status": "predicted", **figs[1]}
    loose = BudgetSpec("b", latency_ms=fig["ttft_hi_ms"] + 1, memory_mb=1e5,
                       decode_tok_s=fig["decode_tok_s_lo"] - 1, context_len=256)  # fmt: skip
    assert fits(fig, loose)[0]
    # between the point and the slow end: a prediction does not fit
    mid = BudgetSpec("b", latency_ms=fig["ttft_ms"] + 1e-3, memory_mb=1e5,
                     decode_tok_s=1, context_len=256)  # fmt: skip
    ok, why = fits(fig, mid)
    assert not ok and "TTFT" in why and "predicted" in why


def test_generation_budgets_are_checked():
    with pytest.raises(ConfigError, match="context_len"):
        BudgetSpec("g", latency_ms=10, memory_mb=100, decode_tok_s=5)
    with pytest.raises(ConfigError, match="context_len"):
        BudgetSpec("g", latency_ms=10, memory_mb=100, decode_tok_s=5, seq_len=64, context_len=32)
    from toolchain.devices.budgets import resolve_budgets
    from toolchain.devices.profiles import get_profile

    jetson = get_profile("jetson")
    assert all(b.generation for b in resolve_budgets(jetson, generation=True))
    with pytest.raises(ConfigError, match="generation budget"):
        resolve_budgets(jetson, [jetson.budgets[0]], generation=True)
    with pytest.raises(ConfigError, match="no generation budgets"):
        resolve_budgets(get_profile("raspberry-pi-4"), generation=True)


def test_lm_build_refuses_an_encoder_teacher_before_training(tiny_bert_dir, tmp_path):
    recipe = api.build_recipe(None, overrides={"teacher": str(tiny_bert_dir), "task": "wikitext2",
                                               "device": "host"})  # fmt: skip
    with pytest.raises(ConfigError, match="decoder LMs"):
        api.build(recipe, tmp_path / "out", teacher_cache=None, predictors=None)
    assert not (tmp_path / "out").exists()


def test_cli_run_prompt_streams_and_checks_its_options(shared_data, lm_data, tmp_path, edgec):
    from toolchain.export.stage import export_model

    teacher = _tiny("llama", shared_data, tmp_path / "teacher")
    from toolchain.data.tasks import get_task
    from toolchain.target import DeviceTarget

    export_model(teacher, tmp_path / "onnx", fmt="fp32", spec=get_task("wikitext2"),
                 data_dir=lm_data)  # fmt: skip
    from toolchain.bundle.build import build_bundle

    host = DeviceTarget.resolve("host")
    budget = host.profile.generation_budgets[0]
    build_bundle(tmp_path / "onnx", tmp_path / "lm.edgec", target=host,
                 spec=get_task("wikitext2"), budget=budget, tarball=False)  # fmt: skip
    out = edgec("run", str(tmp_path / "lm.edgec"), "--prompt", "The", "--max-tokens", "4")
    assert out.returncode == 0, out.stderr
    assert "time to first token" in out.stderr and "4 new tokens" in out.stderr
    bad = edgec("run", str(tmp_path / "lm.edgec"), "--prompt", "The", "--top-p", "0")
    assert bad.returncode != 0 and "--top-p" in bad.stderr and "Traceback" not in bad.stderr
    text = edgec("run", str(tmp_path / "lm.edgec"), "--text", "hello")
    assert text.returncode != 0 and "--prompt" in text.stderr
    shutil.rmtree(tmp_path / "onnx")
    np.testing.assert_equal(True, (tmp_path / "lm.edgec" / "generation_config.json").is_file())


def test_agent_request_takes_a_generation_block():
    from toolchain.profile.agent import validate_request

    req = validate_request(
        json.dumps({"shapes": [[1, 16]], "generation": {"prompt": 16, "context": 32}})
    )
    assert req["generation"] == {"prompt": 16, "context": 32, "rounds": 3}
    for bad in ({"prompt": 64, "context": 32}, {"prompt": 0, "context": 8}, {"x": 1}, [1]):
        with pytest.raises(ValueError, match="generation must be"):
            validate_request(json.dumps({"shapes": [[1, 16]], "generation": bad}))


def test_host_measures_a_decoder_generating_in_a_fresh_process(shared_data, lm_data, tmp_path):
    from toolchain.data.tasks import get_task
    from toolchain.export.stage import export_model
    from toolchain.target import DeviceTarget

    teacher = _tiny("llama", shared_data, tmp_path / "teacher")
    export_model(teacher, tmp_path / "onnx", fmt="fp32", spec=get_task("wikitext2"),
                 data_dir=lm_data)  # fmt: skip
    host = DeviceTarget.resolve("host")
    budget = BudgetSpec("g", latency_ms=1e4, memory_mb=1e5, seq_len=16, decode_tok_s=1,
                        context_len=40)  # fmt: skip
    lat = host.measured_generation(tmp_path / "onnx" / "model.onnx", budget, rounds=2)
    assert lat["status"] == "measured" and lat["context"] == 40 and lat["rounds"] == 2
    assert lat["ttft_ms"] > 0 and lat["decode_tok_s"] > 0 and lat["memory_mb"] > 0
    assert lat["torch_loaded"] is False and "measured on" in lat["label"]


def test_gpt2_width_extraction_handles_conv1d_and_fused_qkv(tiny_gpt2):
    from toolchain.distill.init import init_student
    from toolchain.models.adapters import Shape

    teacher = tiny_gpt2
    teacher.model.eval()
    ids = torch.tensor([[3, 9, 1, 27, 5, 2]])
    same = init_student(teacher, teacher.shape, "etd-rand", seed=1)
    diff = (same.model.eval()(ids).logits - teacher.model(ids).logits).abs().max()
    assert float(diff) == 0.0  # full size: the teacher exactly, whichever units were "chosen"
    narrow = init_student(teacher, Shape(1, 24, 3, 64), "etd-rand", seed=1)
    assert str(narrow.shape) == "L1:H24:A3:F64"
    w = narrow.model.transformer.h[0].attn.c_attn.weight
    assert w.shape == (24, 72)  # Conv1D (in, out): Q, K and V of the 3 kept heads
