"""The pruning stage (`edgec prune`, recipe key ``prune``): prune a fine-tuned model, fine-tune
it under distillation from the unpruned teacher, and score it against the teacher on the dev
split (the task's metric, label and probability loyalty).

- structured: heads and FFN neurons by importance (:mod:`toolchain.prune.structured`);
- unstructured: global magnitude pruning (:mod:`toolchain.prune.unstructured`).

The KD fine-tuning is the distillation trainer of :mod:`toolchain.distill.trainer` with layer i of
the pruned model matched to layer i of the teacher (same depth, same width), logit KD plus hidden
state MSE, and the best validation checkpoint kept.

Example::

    stage = prune_stage(teacher_dir="runs/teacher", spec=get_task("sst2"), data_dir=data,
                        cfg=PruneConfig(method="structured", sparsity=0.4), data_cfg=DataConfig())
    run_single(stage, Path("runs/pruned"))
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from toolchain.config import DataConfig, DistillConfig, PruneConfig
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.errors import ConfigError
from toolchain.evaluate.trivial import TrivialBaseline
from toolchain.models.teacher import teacher_inputs
from toolchain.pipeline import Stage, StageContext

log = logging.getLogger(__name__)


def prune_stage(
    *,
    teacher_dir: str,
    spec: TaskSpec,
    data_dir,
    cfg: PruneConfig,
    data_cfg: DataConfig,
    model_dir: str | None = None,
    device: str | None = None,
    name: str = "prune",
) -> Stage:
    """A pipeline stage that prunes ``model_dir`` (default: the teacher itself) and fine-tunes it
    under distillation from ``teacher_dir``."""
    if spec.kind not in ("classification", "regression", "token-classification"):
        raise ConfigError(
            f"pruning supports classification, regression and token tasks, not {spec.kind} "
            f"({spec.name}): distil a truncated student instead (edgec distill)"
        )
    config = {
        "teacher": teacher_dir,
        "model": model_dir,
        "task": spec.name,
        "task_spec": spec,
        "prune": cfg,
        "data": data_cfg,
    }

    def run(ctx: StageContext) -> dict:
        return run_prune(
            ctx,
            teacher_dir=teacher_dir,
            model_dir=model_dir or teacher_dir,
            spec=spec,
            data_dir=data_dir,
            cfg=cfg,
            data_cfg=data_cfg,
            device=device,
        )

    inputs = teacher_inputs(teacher_dir, spec, data_dir)
    if model_dir is not None:
        inputs = (*inputs, Path(model_dir))
    return Stage(name, run, config=config, inputs=inputs, distributed=True)


def finetune_config(cfg: PruneConfig) -> DistillConfig:
    """The distillation settings of the KD fine-tuning after pruning."""
    return DistillConfig(
        init="truncation",
        mapping="uniform" if cfg.hidden_weight > 0 else "none",
        temperature=cfg.temperature,
        kd_weight=cfg.kd_weight,
        hidden_weight=cfg.hidden_weight,
        attention_weight=0.0,  # pruned layers have fewer heads than the teacher's
        steps=max(cfg.steps, 1),
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_seq_len=cfg.max_seq_len,
        eval_every=min(cfg.eval_every, max(cfg.steps, 1)),
        eval_samples=cfg.eval_samples,
    )


def run_prune(
    ctx: StageContext, *, teacher_dir, model_dir, spec, data_dir, cfg: PruneConfig, data_cfg, device
) -> dict:
    from toolchain.distill.stage import _dev_comparison, _load_data
    from toolchain.distill.trainer import distill
    from toolchain.models.finetune import head_for, pick_device
    from toolchain.models.loading import load_model

    device = pick_device(device)
    teacher = load_model(teacher_dir, head=head_for(spec))
    teacher.model.to(device)
    model = load_model(model_dir, head=head_for(spec))
    if model.tokenizer is None:
        model.tokenizer = teacher.tokenizer
    dcfg = finetune_config(cfg)
    if model.hidden_size != teacher.hidden_size or model.num_layers != teacher.num_layers:
        dcfg = replace(dcfg, mapping="none")  # a student of another shape: logit KD only
    train, report, validation = _load_data(spec, data_dir, data_cfg)
    before = model.num_parameters()
    if cfg.method == "structured":
        if getattr(model.config, "pruned_heads", None):
            raise ConfigError(
                f"{model_dir} already has pruned heads: prune the unpruned model again with a "
                "higher sparsity instead",
                key="prune.method",
            )
        prune_report = _structured(model, spec, train, cfg, ctx.seed)
    else:
        from toolchain.prune.unstructured import prune_unstructured

        prune_report = prune_unstructured(model, cfg.sparsity)
    log.info("pruned (%s): %s", cfg.method, _short(prune_report))
    result = {}
    if cfg.steps > 0:
        result = distill(teacher, model, spec, train, validation, dcfg, out_dir=ctx.out_dir,
                         seed=ctx.seed, checkpoint_dir=ctx.checkpoint_dir, device=device,
                         save=False)  # fmt: skip
    if cfg.method == "unstructured":
        from toolchain.prune.unstructured import make_permanent

        prune_report.update(make_permanent(model))
    model.model.to("cpu")
    model.tokenizer = teacher.tokenizer
    model.save(ctx.out_dir)
    metrics = {
        "task": spec.name,
        "teacher": str(teacher_dir),
        "pruned": str(model_dir),
        "method": cfg.method,
        "prune": prune_report,
        "parameters_before": before,
        "parameters": model.num_parameters(),
        "finetune": result,
        "cleaning": report.as_dict(),
    }
    if "dev" in spec.files:
        model.model.to(device)
        metrics["dev"] = _dev_comparison(teacher, model, spec, data_dir, dcfg)
        trivial = TrivialBaseline.fit(spec, train)
        if trivial is not None:  # the constant answer, beside the pruned model and the teacher
            labels = [ex.label for ex in load_split(spec, "dev", data_dir)]
            metrics["dev"]["trivial"] = trivial.scores(spec, labels)
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _structured(model, spec, train, cfg: PruneConfig, seed: int) -> dict:
    from toolchain.distill.stage import _importance
    from toolchain.prune.structured import prune_structured

    scores = _importance(model, spec, train, cfg, seed)  # importance_samples, max_seq_len
    head = cfg.sparsity if cfg.head_sparsity is None else cfg.head_sparsity
    ffn = cfg.sparsity if cfg.ffn_sparsity is None else cfg.ffn_sparsity
    return prune_structured(model, scores, head_sparsity=head, ffn_sparsity=ffn)


def _short(report: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in report.items() if k not in ("pruned_heads", "note"))
