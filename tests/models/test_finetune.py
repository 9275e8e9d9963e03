"""toolchain/models/finetune.py and teacher.py: fine-tuning smoke tests on tiny models."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from toy import TOY_SPEC, toy_examples, write_toy_table

from toolchain.config import DataConfig, TeacherConfig
from toolchain.data.readers import TokenExample
from toolchain.data.tasks import TaskSpec, get_task
from toolchain.errors import EdgecError
from toolchain.evaluate.evaluate import evaluate
from toolchain.models.finetune import finetune, head_for, pick_device
from toolchain.models.loading import load_model


def cfg(**kw) -> TeacherConfig:
    base = dict(
        epochs=1.0,
        learning_rate=3e-3,
        batch_size=16,
        warmup_ratio=0.1,
        max_seq_len=16,
        eval_every=20,
        early_stopping_patience=0,
    )
    return TeacherConfig(**{**base, **kw})


def test_classification_learns_and_reloads(tiny_bert_dir, tmp_path):
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    train, val = toy_examples(400, 0), toy_examples(100, 1)
    before = evaluate(adapter, TOY_SPEC, val)["accuracy"]
    out = tmp_path / "out"
    result = finetune(adapter, TOY_SPEC, train, val, cfg(max_steps=60), out_dir=out)
    assert result["steps"] == 60 and result["train_examples"] == 400
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    best = result["best_validation"]["accuracy"]
    assert best >= 0.95 > before + 0.2, (before, best)
    reloaded = load_model(str(out), head="sequence-classification")
    assert evaluate(reloaded, TOY_SPEC, val)["accuracy"] == pytest.approx(best)
    assert reloaded.tokenizer is not None and (out / "config.json").is_file()


def test_best_weights_are_kept_and_early_stopping(tiny_bert_dir, tmp_path):
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    train, val = toy_examples(400, 0), toy_examples(100, 1)
    # A huge learning rate late in training wrecks the model; early stopping keeps the best.
    result = finetune(
        adapter,
        TOY_SPEC,
        train,
        val,
        cfg(max_steps=200, eval_every=10, early_stopping_patience=2),
        out_dir=tmp_path / "o",
    )
    history = [h["accuracy"] for h in result["history"]]
    assert result["best_validation"]["accuracy"] == max(history)
    reloaded = load_model(str(tmp_path / "o"), head="sequence-classification")
    assert evaluate(reloaded, TOY_SPEC, val)["accuracy"] == max(history)
    if result["steps"] < 200:  # stopped early: the last two evaluations did not improve
        assert history[-1] <= max(history[:-2])


def test_resume_from_checkpoint_continues(tiny_bert_dir, tmp_path):
    train, val = toy_examples(200, 0), toy_examples(50, 1)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    first = finetune(
        adapter,
        TOY_SPEC,
        train,
        val,
        cfg(max_steps=10, eval_every=5),
        out_dir=tmp_path / "a",
        checkpoint_dir=ckpt,
    )
    assert (ckpt / "finetune.pt").is_file()
    fresh = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    again = finetune(
        fresh,
        TOY_SPEC,
        train,
        val,
        cfg(max_steps=10, eval_every=5),
        out_dir=tmp_path / "b",
        checkpoint_dir=ckpt,
    )
    assert again["steps"] == 10 and again["history"] == first["history"]  # nothing re-trained
    a = load_model(str(tmp_path / "a"), head="sequence-classification").model
    b = load_model(str(tmp_path / "b"), head="sequence-classification").model
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_token_classification_learns(tiny_bert_dir, tmp_path):
    spec = TaskSpec(
        name="toy-ner",
        kind="token-classification",
        folder="",
        format="conll",
        files={},
        labels=("O", "B-PER", "I-PER", "B-LOC", "I-LOC"),
        metrics=("span_f1", "accuracy"),
    )
    rng = random.Random(0)

    def sentence():
        words = rng.sample(["the", "movie", "is", "hello", "world", "good"], 4)
        tags = [1 if w == "hello" else 3 if w == "world" else 0 for w in words]
        return TokenExample(tuple(words), tuple(tags))

    train, val = [sentence() for _ in range(300)], [sentence() for _ in range(60)]
    adapter = load_model(
        str(tiny_bert_dir),
        head="token-classification",
        num_labels=5,
        id2label=dict(enumerate(spec.labels)),
    )
    result = finetune(adapter, spec, train, val, cfg(max_steps=60), out_dir=tmp_path / "ner")
    assert result["best_validation"]["span_f1"] > 0.9
    assert head_for(spec) == "token-classification"


def test_language_model_perplexity_drops(tiny_gpt2, tmp_path):
    adapter = tiny_gpt2
    spec = get_task("wikitext2")
    lines = ["abc abc abc abc"] * 40
    before = evaluate(adapter, spec, lines[:5], max_len=32)["perplexity"]
    result = finetune(
        adapter, spec, lines, lines[:5], cfg(max_steps=40, max_seq_len=32), out_dir=tmp_path / "lm"
    )
    assert result["best_validation"]["perplexity"] < before / 3


def test_perplexity_states_its_protocol(tiny_gpt2):
    spec = get_task("wikitext2")
    result = evaluate(tiny_gpt2, spec, ["abc abd abe"] * 20, max_len=16)
    assert "non-overlapping blocks of 16 tokens (stride 16)" in result["protocol"]
    assert result["tokens"] > 0 and result["perplexity"] > 1


def test_teacher_stage_cleans_trains_scores_and_caches(tiny_bert_dir, tmp_path):
    from toolchain.data.tasks import table_task
    from toolchain.models.teacher import teacher_stage
    from toolchain.pipeline import RunDir

    rows = ["text\tlabel"] + [f"{ex.text}\t{ex.label}" for ex in toy_examples(300, 0)]
    (tmp_path / "train.tsv").write_text("\n".join(rows + rows[1:20]) + "\n")  # 19 duplicates
    write_toy_table(tmp_path / "dev.tsv", 50, 2)
    spec = table_task(
        {"train": tmp_path / "train.tsv", "dev": tmp_path / "dev.tsv"},
        text_columns=("text",),
        label_column="label",
        labels=("0", "1"),
    )
    stage = teacher_stage(
        model=str(tiny_bert_dir),
        spec=spec,
        data_dir=None,
        cfg=cfg(max_steps=40),
        data_cfg=DataConfig(),
        name="teacher",
    )
    with RunDir(tmp_path / "run") as run:
        (first,) = run.run([stage])
        (second,) = run.run([stage])
    m = first.record["metrics"]
    assert m["cleaning"]["removed"]["exact_duplicate"] >= 19
    assert m["dev"]["accuracy"] > 0.9 and m["dev"]["n"] == 50
    assert (first.path / "metrics.json").is_file() and (first.path / "config.json").is_file()
    assert second.status == "skipped"


def test_the_teacher_stage_is_reproducible_from_its_seed(tiny_bert_dir, tmp_path):
    """The new classification head is drawn from the stage's seed, not from whatever the
    process's random state happens to be: two runs with one seed give the same weights."""
    from safetensors.torch import load_file

    from toolchain.models.teacher import teacher_stage
    from toolchain.pipeline import RunDir

    write_toy_table(tmp_path / "train.tsv", 120, 0)
    spec = replace(TOY_SPEC, files={"train": str(tmp_path / "train.tsv"),
                                    "dev": str(tmp_path / "train.tsv")})  # fmt: skip
    weights = []
    for i in range(2):
        torch.rand(1000 * (i + 1))  # a different global random state before each run
        stage = teacher_stage(
            model=str(tiny_bert_dir), spec=spec, data_dir=None,
            cfg=cfg(max_steps=4, require_above_trivial=False), data_cfg=DataConfig(),
            name="teacher",
        )  # fmt: skip
        with RunDir(tmp_path / f"run{i}") as run:
            (res,) = run.run([stage], seed=3)
        weights.append(load_file(str(res.path / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_device_selection():
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(EdgecError, match="no CUDA GPU is visible"):
            pick_device("cuda")


def test_empty_training_set_is_refused(tiny_bert_dir, tmp_path):
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    with pytest.raises(EdgecError, match="no training examples"):
        finetune(adapter, TOY_SPEC, [], [], cfg(), out_dir=tmp_path / "x")
