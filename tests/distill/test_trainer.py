"""toolchain/distill/trainer.py and stage.py: tiny end-to-end distillations."""

from __future__ import annotations

import pytest
from toy import TOY_SPEC, toy_examples, write_toy_table

from toolchain.config import DataConfig, DistillConfig, TeacherConfig
from toolchain.data.tasks import table_task
from toolchain.distill.init import init_student
from toolchain.distill.trainer import distill
from toolchain.evaluate.evaluate import evaluate
from toolchain.models.adapters import Shape
from toolchain.models.finetune import finetune
from toolchain.models.loading import load_model


@pytest.fixture
def teacher(tiny_bert_dir, tmp_path):
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    cfg = TeacherConfig(
        learning_rate=3e-3,
        batch_size=16,
        max_seq_len=16,
        max_steps=60,
        eval_every=30,
        early_stopping_patience=0,
    )
    finetune(
        adapter,
        TOY_SPEC,
        toy_examples(400, 0),
        toy_examples(100, 1),
        cfg,
        out_dir=tmp_path / "teacher",
    )
    return load_model(str(tmp_path / "teacher"), head="sequence-classification")


def dcfg(**kw) -> DistillConfig:
    base = dict(
        student_shape="L1:H16:A2:F32",
        steps=60,
        batch_size=16,
        learning_rate=3e-3,
        max_seq_len=16,
        eval_every=30,
        temperature=2.0,
    )
    return DistillConfig(**{**base, **kw})


def test_distillation_beats_the_untrained_student(teacher, tmp_path):
    val = toy_examples(100, 1)
    assert evaluate(teacher, TOY_SPEC, val)["accuracy"] > 0.95
    student = init_student(teacher, Shape.parse("L1:H16:A2:F32"), "random", seed=0)
    student.tokenizer = teacher.tokenizer
    before = evaluate(student, TOY_SPEC, val)["accuracy"]
    result = distill(
        teacher,
        student,
        TOY_SPEC,
        toy_examples(400, 2),
        val,
        dcfg(mapping="uniform", steps=150, eval_every=75),
        out_dir=tmp_path / "s",
    )
    after = result["best_validation"]["accuracy"]
    assert after > max(before + 0.2, 0.85), (before, after, result["history"])
    reloaded = load_model(str(tmp_path / "s"), head="sequence-classification")
    assert evaluate(reloaded, TOY_SPEC, val)["accuracy"] == pytest.approx(after)
    assert [h["step"] for h in result["history"]] == [75, 150]
    assert set(result["history"][0]["losses"]) == {"hard", "kd", "hidden"}


@pytest.mark.parametrize(
    "kw",
    [
        {"mapping": "none"},
        {"mapping": "last", "init": "etd-rand"},
        {"mapping": "rail", "rail_variant": "layer"},
        {"mapping": "rail", "rail_variant": "concat"},
        {"mapping": "uniform", "attention_weight": 1.0, "embedding_weight": 1.0},
        {"mapping": "uniform", "grad_accumulation": 2, "logit_loss": "mse"},
    ],
)
def test_every_mapping_and_loss_runs(teacher, tmp_path, kw):
    init = kw.pop("init", "random")
    cfg = dcfg(steps=6, eval_every=3, student_shape="L2:H16:A2:F32", **kw)
    student = init_student(teacher, Shape.parse(cfg.student_shape), init, seed=0)
    result = distill(
        teacher,
        student,
        TOY_SPEC,
        toy_examples(120, 2),
        toy_examples(40, 1),
        cfg,
        out_dir=tmp_path / "s",
    )
    assert result["steps"] == 6 and len(result["history"]) == 2
    losses = result["history"][-1]["losses"]
    assert ("hidden" in losses) == (cfg.mapping != "none")
    assert ("attention" in losses) == (cfg.attention_weight > 0)


def test_ga_mapping_needs_genome_and_uses_it(teacher, tmp_path):
    student = init_student(teacher, Shape.parse("L1:H16:A2:F32"), "random", seed=0)
    result = distill(
        teacher,
        student,
        TOY_SPEC,
        toy_examples(60, 2),
        toy_examples(20, 1),
        dcfg(steps=2, eval_every=2, mapping="ga"),
        out_dir=tmp_path / "g",
        genome=[0],
    )
    assert result["mapping"] == [0]


def test_distill_stage_end_to_end_with_ga_and_loyalty(teacher, tmp_path):
    from toolchain.distill.stage import distill_stage
    from toolchain.pipeline import RunDir

    teacher.save(tmp_path / "teacher-dir")
    write_toy_table(tmp_path / "train.tsv", 300, 3)
    write_toy_table(tmp_path / "dev.tsv", 60, 4)
    spec = table_task(
        {"train": tmp_path / "train.tsv", "dev": tmp_path / "dev.tsv"},
        text_columns=("text",),
        label_column="label",
        labels=("0", "1"),
    )
    cfg = dcfg(
        student_shape="L1:H32:A4:F64",
        init="etd-impt",
        mapping="ga",
        steps=20,
        eval_every=10,
        importance_samples=32,
    )
    cfg = DistillConfig(
        **{
            **cfg.__dict__,
            "ga": type(cfg.ga)(population=3, generations=2, proxy_steps=3, proxy_fraction=0.3),
        }
    )
    stage = distill_stage(
        teacher_dir=str(tmp_path / "teacher-dir"),
        spec=spec,
        data_dir=None,
        cfg=cfg,
        data_cfg=DataConfig(clean=False),
        name="student",
    )
    with RunDir(tmp_path / "run") as run:
        (res,) = run.run([stage])
        again = run.run([stage])[0]
    m = res.record["metrics"]
    assert m["student_shape"] == "L1:H32:A4:F64" and m["init"] == "etd-impt"
    assert m["ga"]["evaluations"] >= 1 and m["mapping"] == m["ga"]["best"]
    dev_m = m["dev"]
    assert 0 <= dev_m["label_loyalty"] <= 1 and 0 <= dev_m["prob_loyalty"] <= 1
    assert dev_m["student"]["n"] == dev_m["teacher"]["n"] == 60
    assert again.status == "skipped"


def test_attention_kd_compares_probabilities_without_dropout(tiny_bert_dir):
    """HF models return attention probabilities after dropout; with attention KD on, the
    student's attention dropout is switched off, so a perfect student's attention loss is only
    what hidden-state dropout leaves (tiny) rather than the dropped probabilities (large)."""
    import copy

    import torch

    from toolchain.distill import losses as L
    from toolchain.distill.trainer import _no_attention_dropout

    teacher = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    student = copy.deepcopy(teacher)
    student.model.train()
    ids = torch.randint(5, 16, (4, 12))

    def attention_loss():
        with torch.no_grad():
            t = teacher.forward(ids, output_attentions=True).attentions
            s = student.forward(ids, output_attentions=True).attentions
        return sum(L.attention_kl(a, b) for a, b in zip(s, t, strict=True)).item()

    torch.manual_seed(0)
    assert attention_loss() > 0.1  # dropped probabilities: a biased target
    _no_attention_dropout(student.model)
    assert attention_loss() < 1e-3
    dropouts = {n: m.p for n, m in student.model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert dropouts["bert.encoder.layer.0.attention.self.dropout"] == 0.0
    assert dropouts["bert.encoder.layer.0.output.dropout"] == 0.1  # hidden dropout untouched


def test_accumulation_that_does_not_divide_the_epoch_still_finishes(teacher, tmp_path):
    """120 examples in batches of 16 are 8 micro-batches: with ``grad_accumulation`` 3 an epoch
    is 3 optimizer steps (3 + 3 + the last 2). The loop used to count 3 but take 2, and then
    waited for ever for a group that could not fill; a bounded step count proves it ends."""
    import signal

    def _hung(*_):
        raise TimeoutError("distillation did not finish: the epoch's step count is wrong")

    cfg = dcfg(steps=7, eval_every=7, student_shape="L1:H16:A2:F32", grad_accumulation=3)
    student = init_student(teacher, Shape.parse(cfg.student_shape), "random", seed=0)
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(120)
    try:
        result = distill(
            teacher,
            student,
            TOY_SPEC,
            toy_examples(120, 2),
            toy_examples(40, 1),
            cfg,
            out_dir=tmp_path / "s",
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result["steps"] == 7 and [h["step"] for h in result["history"]] == [7]
