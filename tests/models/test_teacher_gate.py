"""The teacher's quality gate (toolchain/models/teacher.py, toolchain/evaluate/trivial.py): a
teacher not clearly above the trivial baseline trains on while validation improves and the time
budget lasts, then stops the build with a message saying what to do; a learnt task passes with
its gate recorded."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from toy import TOY_SPEC, toy_examples, write_toy_table

from toolchain import api
from toolchain.config import DataConfig, TeacherConfig
from toolchain.data.readers import infer_labels
from toolchain.data.tasks import table_task
from toolchain.errors import EdgecError
from toolchain.evaluate.trivial import TrivialBaseline
from toolchain.models.teacher import teacher_stage
from toolchain.pipeline import RunDir


def _noise(path: Path, n: int, seed: int) -> Path:
    """Toy sentences whose labels are coin flips: nothing to learn."""
    rng = random.Random(seed)
    rows = ["text\tlabel"] + [f"{e.text}\t{rng.randint(0, 1)}" for e in toy_examples(n, seed)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _spec(tmp: Path):
    files = {"train": tmp / "train.tsv", "dev": tmp / "dev.tsv"}
    return infer_labels(table_task(files, text_columns=("text",), label_column="label"))


def test_trivial_baseline_and_clear_gain():
    train = toy_examples(300, 0)
    trivial = TrivialBaseline.fit(TOY_SPEC, train)
    majority = max((0, 1), key=lambda c: sum(e.label == c for e in train))
    assert trivial.prediction == majority
    labels = np.array([e.label for e in toy_examples(400, 1)])
    # the constant answer is the best one on the scored examples, whatever train's majority
    best = max((labels == 0).mean(), (labels == 1).mean())
    assert trivial.scores(TOY_SPEC, labels)["accuracy"] == pytest.approx(best)
    assert trivial.scores(TOY_SPEC, 1 - labels)["accuracy"] == pytest.approx(best)
    assert "best constant answer" in trivial.describe(TOY_SPEC, labels)
    perfect = trivial.compare(TOY_SPEC, labels, labels)
    assert perfect.clearly_above and perfect.gain > 0.3
    coin = trivial.compare(TOY_SPEC, labels, np.random.default_rng(0).integers(0, 2, len(labels)))
    assert not coin.clearly_above and coin.lower < 0


def test_a_teacher_that_cannot_beat_the_trivial_baseline_stops_with_what_to_do(tmp_path):
    from conftest import write_tiny_bert

    _noise(tmp_path / "train.tsv", 200, 0)
    _noise(tmp_path / "dev.tsv", 40, 1)
    model = write_tiny_bert(tmp_path / "model", positions=64)
    cfg = TeacherConfig(max_steps=10, batch_size=8, learning_rate=3e-3, eval_every=5,
                        max_seq_len=32, time_budget_s=60)  # fmt: skip
    stage = teacher_stage(model=str(model), spec=_spec(tmp_path), data_dir=None, cfg=cfg,
                          data_cfg=DataConfig())  # fmt: skip
    with pytest.raises(EdgecError) as info:
        RunDir(tmp_path / "run").run([stage])
    message = str(info.value)
    assert "not clearly better than a trivial model" in message
    assert "--preset standard" in message and "larger teacher" in message
    assert "require_above_trivial=false" in message
    # knowingly accepted: the stage finishes and records the gate
    stage = teacher_stage(model=str(model), spec=_spec(tmp_path), data_dir=None,
                          cfg=TeacherConfig(**{**cfg.__dict__, "require_above_trivial": False}),
                          data_cfg=DataConfig())  # fmt: skip
    (res,) = RunDir(tmp_path / "run2").run([stage])
    gate = res.record["metrics"]["gate"]
    assert gate["validation"]["clearly_above"] is False and len(gate["rounds"]) >= 2


def test_a_build_whose_teacher_is_trivial_stops_before_the_search(tmp_path, monkeypatch):
    from conftest import write_fake_predictor, write_tiny_bert

    _noise(tmp_path / "train.tsv", 200, 0)
    _noise(tmp_path / "dev.tsv", 40, 1)
    write_fake_predictor(tmp_path / "predictors")
    write_tiny_bert(tmp_path / "model", positions=160)
    monkeypatch.chdir(tmp_path)  # relative paths, from the user's working directory
    recipe = api.build_recipe(
        None,
        preset="quick",
        overrides={
            "device": "host",
            "teacher": "model",
            "teacher_finetune.max_steps": 10,
            "teacher_finetune.batch_size": 8,
            "teacher_finetune.max_seq_len": 32,
            "teacher_finetune.eval_every": 5,
            "teacher_finetune.time_budget_s": 30,
        },
    )
    with pytest.raises(EdgecError, match="not clearly better than a trivial model"):
        api.build(recipe, "run", task=_spec(tmp_path), predictors="predictors",
                  teacher_cache="teachers")  # fmt: skip
    assert not (tmp_path / "run" / "search").exists()  # nothing after the teacher ran
    assert not list((tmp_path / "run").glob("bundle-*"))


def test_a_learnable_task_passes_the_gate(tmp_path):
    from conftest import write_tiny_bert

    write_toy_table(tmp_path / "train.tsv", 200, 0)
    write_toy_table(tmp_path / "dev.tsv", 40, 1)
    model = write_tiny_bert(tmp_path / "model", positions=64)
    cfg = TeacherConfig(max_steps=40, batch_size=8, learning_rate=3e-3, eval_every=20,
                        max_seq_len=32)  # fmt: skip
    stage = teacher_stage(model=str(model), spec=_spec(tmp_path), data_dir=None, cfg=cfg,
                          data_cfg=DataConfig())  # fmt: skip
    (res,) = RunDir(tmp_path / "run").run([stage])
    gate = res.record["metrics"]["gate"]
    assert gate["validation"]["clearly_above"] and len(gate["rounds"]) == 1
