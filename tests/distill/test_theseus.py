"""toolchain/distill/theseus.py: the replacement schedule, the mixed stack, and a tiny run whose
saved model holds only the successor layers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from toy import TOY_SPEC, toy_examples, write_toy_table

from toolchain.config import DataConfig, DistillConfig, TeacherConfig, TheseusConfig
from toolchain.distill.stage import distill_stage
from toolchain.distill.theseus import TheseusModel, replace_probability, replacing_steps
from toolchain.errors import ConfigError
from toolchain.models.finetune import finetune
from toolchain.models.loading import load_model
from toolchain.pipeline import run_single


def test_the_replacement_probability_rises_linearly_to_one_then_stays():
    cfg = TheseusConfig(replace_start=0.2, successor_fraction=0.25)
    steps = 100
    assert replacing_steps(steps, cfg) == 75
    p = [replace_probability(t, steps, cfg) for t in range(steps)]
    assert p[0] == pytest.approx(0.2)
    assert all(b >= a for a, b in zip(p, p[1:], strict=False))  # never falls
    assert p[37] == pytest.approx(0.2 + 0.8 * 37 / 75)
    assert all(v == 1.0 for v in p[75:])  # the successors alone at the end


@pytest.fixture
def teacher(tiny_bert_dir):
    # a 4-layer tiny BERT: two blocks of two
    from transformers import BertConfig, BertForSequenceClassification

    from toolchain.models.adapters import adapter_for

    base = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    config = BertConfig(**{**base.config.to_dict(), "num_hidden_layers": 4})
    torch.manual_seed(0)
    return adapter_for(BertForSequenceClassification(config), tokenizer=base.tokenizer)


def test_the_mixed_stack_swaps_blocks_and_the_compact_model_has_only_successors(teacher):
    module = TheseusModel(teacher, 2)
    layers = module.model.bert.encoder.layer
    assert len(layers) == 2 and all(a is b for a, b in zip(layers, module.successors, strict=True))
    module.use([False, True])
    layers = module.model.bert.encoder.layer
    assert len(layers) == 3
    assert layers[0] is module.predecessors[0] and layers[1] is module.predecessors[1]
    assert layers[2] is module.successors[1]
    assert not any(p.requires_grad for p in module.predecessors.parameters())
    assert all(p.requires_grad for p in module.successors.parameters())
    compact = module.compact()
    assert compact.config.num_hidden_layers == 2
    assert len(compact.bert.encoder.layer) == 2
    ids = set(map(id, compact.parameters()))
    assert not ids & set(map(id, module.predecessors.parameters()))  # a copy, no teacher layer


def test_successor_counts_that_do_not_divide_the_teacher_are_refused(teacher):
    with pytest.raises(ConfigError, match="do not divide"):
        TheseusModel(teacher, 3)


def test_a_theseus_run_saves_a_successor_only_model_and_scores_it(teacher, tmp_path):
    files = {
        "train": write_toy_table(tmp_path / "train.tsv", 200, 0),
        "validation": write_toy_table(tmp_path / "valid.tsv", 40, 1),
        "dev": write_toy_table(tmp_path / "dev.tsv", 40, 2),
    }
    spec = replace(TOY_SPEC, files={k: str(v) for k, v in files.items()})
    tcfg = TeacherConfig(learning_rate=3e-3, batch_size=16, max_seq_len=16, max_steps=40,
                         eval_every=40, early_stopping_patience=0)  # fmt: skip
    finetune(teacher, spec, toy_examples(200, 0), toy_examples(40, 1), tcfg,
             out_dir=tmp_path / "teacher")  # fmt: skip
    schedule = TheseusConfig(replace_start=0.5, successor_fraction=0.4)
    cfg = DistillConfig(method="theseus", student_shape="L2:H32:A4:F64", steps=10, eval_every=2,
                        batch_size=8, max_seq_len=16, learning_rate=1e-3,
                        theseus=schedule)  # fmt: skip
    stage = distill_stage(teacher_dir=str(tmp_path / "teacher"), spec=spec, data_dir=None,
                          cfg=cfg, data_cfg=DataConfig(), name="theseus")  # fmt: skip
    m = run_single(stage, tmp_path / "theseus", seed=0).record["metrics"]
    assert m["method"] == "theseus" and m["schedule"]["replacing_steps"] == 6
    ps = [h["p"] for h in m["history"]]
    assert ps == [pytest.approx(replace_probability(h["step"] - 1, 10, cfg.theseus), abs=1e-4)
                  for h in m["history"]]  # fmt: skip
    assert ps[-1] == 1.0
    config = json.loads((tmp_path / "theseus" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    student = load_model(str(tmp_path / "theseus"), head="sequence-classification")
    assert student.num_layers == 2 and m["parameters"] == student.num_parameters()
    assert 0 <= m["dev"]["label_loyalty"] <= 1


def test_theseus_keeps_the_teacher_width(teacher, tmp_path):
    teacher.save(tmp_path / "teacher")
    spec = replace(TOY_SPEC, files={"train": str(write_toy_table(tmp_path / "t.tsv", 50, 0))})
    cfg = DistillConfig(method="theseus", student_shape="L2:H16:A4:F64", steps=2)
    stage = distill_stage(teacher_dir=str(tmp_path / "teacher"), spec=spec, data_dir=None,
                          cfg=cfg, data_cfg=DataConfig(), name="out")  # fmt: skip
    from toolchain.errors import StageError

    with pytest.raises((ConfigError, StageError), match="width"):
        run_single(stage, tmp_path / "out", seed=0)
