"""The quantization stage: KDLSQ checkpoints its step sizes and resumes after a failure."""

from __future__ import annotations

import json

import pytest
from toy import write_toy_table

from toolchain.config import DataConfig, QuantizeConfig
from toolchain.data.tasks import TaskSpec
from toolchain.errors import StageError
from toolchain.pipeline import run_single
from toolchain.quantize.stage import kd_config, quantize_stage


def toy_spec(tmp_path) -> TaskSpec:
    write_toy_table(tmp_path / "train.tsv", 160, 0)
    write_toy_table(tmp_path / "dev.tsv", 30, 1)
    return TaskSpec(
        name="toy",
        kind="classification",
        folder="",
        format="tsv",
        files={"train": str(tmp_path / "train.tsv"), "dev": str(tmp_path / "dev.tsv")},
        text_columns=("text",),
        label_column="label",
        labels=("neg", "pos"),
    )


def test_kdlsq_resumes_inside_the_stage_after_a_failure(tiny_bert_dir, tmp_path, monkeypatch):
    import toolchain.distill.trainer as trainer

    spec = toy_spec(tmp_path)
    cfg = QuantizeConfig(weight_bits=3, steps=4, eval_every=2, batch_size=8)
    stage = quantize_stage(
        model_dir=str(tiny_bert_dir),
        spec=spec,
        data_dir=None,
        cfg=cfg,
        data_cfg=DataConfig(clean=False),
        name="q",
    )
    evaluated: list[int] = []
    real_eval, real_save = trainer._evaluate, trainer.save_checkpoint

    def spy_eval(model, spec, val, enc_val, pad_id, device):
        evaluated.append(len(evaluated))
        return real_eval(model, spec, val, enc_val, pad_id, device)

    def failing_save(ckpt, module, *args):
        real_save(ckpt, module, *args)
        steps = [k for k in module.state_dict() if k.endswith("weight_quant.step")]
        assert steps, "the checkpoint must hold the learned step sizes"
        raise RuntimeError("killed after the first checkpoint")

    monkeypatch.setattr(trainer, "_evaluate", spy_eval)
    monkeypatch.setattr(trainer, "save_checkpoint", failing_save)
    out = tmp_path / "q"
    with pytest.raises(StageError, match="killed after the first checkpoint"):
        run_single(stage, out)
    assert len(evaluated) == 1 and not out.exists()
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    result = run_single(stage, out)
    assert len(evaluated) == 2  # the second attempt resumed at step 2: one evaluation more
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["training"]["history"]] == [2, 4]
    assert result.record["metrics"]["w_bits"] == 3


def test_kd_config_maps_layers_one_to_one():
    cfg = kd_config(QuantizeConfig(steps=50, eval_every=200), teacher_layers=3, student_layers=3)
    assert cfg.mapping == "uniform" and cfg.eval_every == 50 and cfg.kd_weight == 1.0
    assert kd_config(QuantizeConfig(), teacher_layers=2, student_layers=3).mapping == "none"
