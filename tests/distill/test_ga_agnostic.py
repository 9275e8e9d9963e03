"""toolchain/distill/ga_agnostic.py: the task-agnostic GA search of the layer mapping (proxy
distillation on unlabelled text, fitness from representative tasks) and its mapping reused by
the distillation of other tasks without a search."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import write_tiny_bert
from toy import TOY_SPEC, toy_examples, write_toy_table

from toolchain.config import DataConfig, DistillConfig, GAConfig, TeacherConfig
from toolchain.distill.ga_agnostic import distill_hidden, load_mapping, search_agnostic_mapping
from toolchain.distill.init import init_student
from toolchain.distill.stage import distill_stage
from toolchain.errors import ConfigError
from toolchain.models.adapters import Shape
from toolchain.models.finetune import finetune
from toolchain.models.loading import load_model
from toolchain.pipeline import run_single

GA = GAConfig(population=2, generations=1, proxy_steps=3, proxy_sentences=64, task_steps=2,
              task_train_samples=32, task_val_samples=16, tasks=("sst2", "cola"),
              text=("wikitext",))  # fmt: skip


def test_hidden_distillation_through_a_mapping_lowers_its_loss(tmp_path):
    base = load_model(str(write_tiny_bert(tmp_path / "base")), head="base")
    student = init_student(base, Shape(1, 32, 4, 64), "random", seed=0)
    texts = ["the movie was good", "a bad movie", "hello world is great"] * 10
    losses = distill_hidden(student, base, texts, [1], steps=30, batch_size=8, max_len=16,
                            learning_rate=1e-2)  # fmt: skip
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_the_agnostic_search_writes_a_mapping_that_other_tasks_reuse(tmp_path, shared_data):
    base = write_tiny_bert(tmp_path / "base")
    out = tmp_path / "mapping.json"
    report = search_agnostic_mapping(str(base), Shape(1, 32, 4, 64), GA, data_dir=shared_data,
                                     out=out)  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["mapping"] == report["mapping"] and saved["mapping"] in ([0], [1])
    assert saved["tasks"] == ["sst2", "cola"] and saved["evaluations"] == 2  # both mappings
    assert set(saved["fitness"]) == {"0", "1"} and saved["sentences"] == 64
    mapping, _ = load_mapping(out, teacher_layers=2, student_layers=1)
    assert mapping == saved["mapping"]

    # two tasks distil with it: no search, the file's mapping, recorded
    teacher = load_model(str(base), head="sequence-classification", num_labels=2)
    for task, seed in (("one", 0), ("two", 7)):
        files = {"train": write_toy_table(tmp_path / f"{task}-train.tsv", 80, seed),
                 "validation": write_toy_table(tmp_path / f"{task}-valid.tsv", 20, seed + 1),
                 "dev": write_toy_table(tmp_path / f"{task}-dev.tsv", 20, seed + 2)}  # fmt: skip
        spec = replace(TOY_SPEC, name=task, files={k: str(v) for k, v in files.items()})
        tcfg = TeacherConfig(learning_rate=3e-3, batch_size=16, max_seq_len=16, max_steps=10,
                             eval_every=10, early_stopping_patience=0)  # fmt: skip
        finetune(teacher, spec, toy_examples(80, seed), toy_examples(20, seed + 1), tcfg,
                 out_dir=tmp_path / f"teacher-{task}")  # fmt: skip
        cfg = DistillConfig(student_shape="L1:H32:A4:F64", init="truncation", mapping="ga",
                            steps=4, eval_every=2, batch_size=8, max_seq_len=16,
                            ga=replace(GA, mapping_file=str(out)))  # fmt: skip
        stage = distill_stage(teacher_dir=str(tmp_path / f"teacher-{task}"), spec=spec,
                              data_dir=None, cfg=cfg, data_cfg=DataConfig(),
                              name=f"student-{task}")  # fmt: skip
        m = run_single(stage, tmp_path / f"student-{task}", seed=0).record["metrics"]
        assert m["mapping"] == mapping
        assert m["ga"]["mapping_file"] == str(out) and m["ga"]["evaluations"] == 0


def test_a_mapping_for_other_layer_counts_or_no_mapping_file_is_refused(tmp_path):
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps({"mapping": [0, 2, 4]}))
    with pytest.raises(ConfigError, match="not one of 2 student layers onto 6"):
        load_mapping(path, teacher_layers=6, student_layers=2)
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a layer-mapping file"):
        load_mapping(path, teacher_layers=6, student_layers=3)
