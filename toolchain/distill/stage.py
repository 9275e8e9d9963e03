"""The distillation stage: initialise the student (random, truncation, ETD-Rand/Impt), search the
layer mapping when asked (GA), distil, and score the student against the teacher (accuracy,
label and probability loyalty) on the dev split.

Example::

    stage = distill_stage(teacher_dir="runs/teacher", spec=get_task("sst2"), data_dir=data,
                          cfg=DistillConfig(student_shape="L3:H384:A12:F1536"),
                          data_cfg=DataConfig())
    RunDir("runs/sst2").run([stage])
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.config import DataConfig, DistillConfig, PruneConfig
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.errors import ConfigError
from toolchain.models.teacher import teacher_inputs
from toolchain.pipeline import Stage, StageContext

if TYPE_CHECKING:  # only for annotations: the models stack is imported lazily, when a stage runs
    from toolchain.models.adapters import ModelAdapter, Shape

log = logging.getLogger(__name__)


def distill_stage(
    *,
    teacher_dir: str,
    spec: TaskSpec,
    data_dir,
    cfg: DistillConfig,
    data_cfg: DataConfig,
    device: str | None = None,
    name: str = "distill",
    init_from: str | None = None,
) -> Stage:
    """A pipeline :class:`~toolchain.pipeline.Stage` that distils a student from ``teacher_dir``.

    ``init_from``: a model directory whose weights start the student (e.g. a searched subnet of
    ``edgec search``); its shape is the student's, and ``cfg.init``/``student_shape`` are unused.
    """
    if init_from is not None:
        if not (Path(init_from) / "config.json").is_file():
            raise ConfigError(f"init_from {init_from}: not a model directory (no config.json)")
        cfg = replace(cfg, student_shape=None)
    elif cfg.student_shape is None and cfg.method == "kd":
        raise ConfigError(
            "distillation needs a student shape (--student-shape L3:H384:A12:F1536)",
            key="distill.student_shape",
        )
    config = {
        "teacher": teacher_dir,
        "task": spec.name,
        "task_spec": spec,
        "distill": cfg,
        "data": data_cfg,
        "init_from": init_from,
    }

    if cfg.method == "theseus" and init_from is not None:
        raise ConfigError(
            "BERT-of-Theseus starts its successors from the teacher's layers: drop --init-from",
            key="distill.method",
        )

    def run(ctx: StageContext) -> dict:
        if cfg.method == "theseus":
            return run_theseus(ctx, teacher_dir=teacher_dir, spec=spec, data_dir=data_dir,
                               cfg=cfg, data_cfg=data_cfg, device=device)  # fmt: skip
        return run_distill(
            ctx,
            teacher_dir=teacher_dir,
            spec=spec,
            data_dir=data_dir,
            cfg=cfg,
            data_cfg=data_cfg,
            device=device,
            init_from=init_from,
        )

    inputs = teacher_inputs(teacher_dir, spec, data_dir)
    if cfg.mapping == "ga" and cfg.ga.mapping_file:  # a changed mapping file re-runs the stage
        inputs = (*inputs, Path(cfg.ga.mapping_file))
    if init_from is not None:
        inputs = (*inputs, Path(init_from))
    # distillation (any mapping, GA included) trains on every rank under torchrun; Theseus's
    # own loop runs on rank 0 alone
    return Stage(name, run, config=config, inputs=inputs, distributed=cfg.method != "theseus")


def run_distill(
    ctx: StageContext,
    *,
    teacher_dir,
    spec,
    data_dir,
    cfg: DistillConfig,
    data_cfg,
    device,
    init_from: str | None = None,
) -> dict:
    from toolchain.distill.trainer import distill
    from toolchain.models.finetune import pick_device

    device = pick_device(device)
    teacher, start, shape = _load_models(teacher_dir, spec, cfg, device, init_from)
    train, report, validation = _load_data(spec, data_dir, data_cfg)
    importance, genome, ga = _importance_and_mapping(
        ctx, teacher, start, shape, spec, train, validation, cfg, device
    )
    from toolchain.distill.init import init_student

    student = start or init_student(teacher, shape, cfg.init, importance=importance, seed=ctx.seed)
    result = distill(
        teacher,
        student,
        spec,
        train,
        validation,
        cfg,
        out_dir=ctx.out_dir,
        seed=ctx.seed,
        genome=genome,
        checkpoint_dir=ctx.checkpoint_dir,
        device=device,
    )
    metrics = {
        "task": spec.name,
        "teacher": teacher_dir,
        "student_shape": str(student.shape),
        "parameters": student.num_parameters(),
        "init": f"from {init_from}" if init_from else cfg.init,
        **result,
        "cleaning": report.as_dict(),
    }
    if ga is not None:
        metrics["ga"] = ga
    if "dev" in spec.files:
        metrics["dev"] = _dev_comparison(teacher, student, spec, data_dir, cfg)
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_theseus(ctx: StageContext, *, teacher_dir, spec, data_dir, cfg: DistillConfig,
                data_cfg, device) -> dict:  # fmt: skip
    """BERT-of-Theseus (:mod:`toolchain.distill.theseus`): successors of ``student_shape``'s
    depth (default half the teacher's), the teacher's width."""
    from toolchain.distill.theseus import theseus
    from toolchain.models.adapters import Shape
    from toolchain.models.finetune import head_for, pick_device
    from toolchain.models.loading import load_model

    device = pick_device(device)
    teacher = load_model(teacher_dir, head=head_for(spec))
    layers = max(1, teacher.num_layers // 2)
    if cfg.student_shape is not None:
        shape = Shape.parse(cfg.student_shape)
        width = (shape.hidden, shape.heads, shape.ffn)
        if width != (teacher.hidden_size, teacher.num_heads, teacher.ffn_size):
            raise ConfigError(
                f"BERT-of-Theseus keeps the teacher's width (H{teacher.hidden_size} "
                f"A{teacher.num_heads} F{teacher.ffn_size}) and changes only the depth; got "
                f"{cfg.student_shape}",
                key="distill.student_shape",
            )
        layers = shape.layers
    train, report, validation = _load_data(spec, data_dir, data_cfg)
    student, result = theseus(teacher, spec, train, validation, cfg, layers=layers,
                              out_dir=ctx.out_dir, seed=ctx.seed,
                              checkpoint_dir=ctx.checkpoint_dir, device=device)  # fmt: skip
    metrics = {
        "task": spec.name,
        "teacher": teacher_dir,
        "student_shape": str(student.shape),
        "parameters": student.num_parameters(),
        "init": "theseus (successor i = teacher layer i)",
        **result,
        "cleaning": report.as_dict(),
    }
    if "dev" in spec.files:
        teacher.model.to(device)
        student.model.to(device)
        metrics["dev"] = _dev_comparison(teacher, student, spec, data_dir, cfg)
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _load_models(
    teacher_dir, spec: TaskSpec, cfg: DistillConfig, device, init_from: str | None
) -> tuple[ModelAdapter, ModelAdapter | None, Shape]:
    """The teacher (on ``device``), the model that starts the student if ``init_from`` is given
    (else None), and the student's shape."""
    from toolchain.models.adapters import Shape
    from toolchain.models.finetune import head_for
    from toolchain.models.loading import load_model

    teacher = load_model(teacher_dir, head=head_for(spec))
    teacher.model.to(device)
    start = load_model(str(init_from), head=head_for(spec)) if init_from else None
    shape = start.shape if start else Shape.parse(cfg.student_shape)
    return teacher, start, shape


def _load_data(spec: TaskSpec, data_dir, data_cfg: DataConfig) -> tuple[list, object, list]:
    """The cleaned training split, the cleaning report, and the validation split."""
    from toolchain.data.clean import clean

    train, report = clean(load_split(spec, "train", data_dir), data_cfg)
    validation = load_split(spec, "validation", data_dir)
    return train, report, validation


def _importance_and_mapping(
    ctx: StageContext,
    teacher: ModelAdapter,
    start: ModelAdapter | None,
    shape: Shape,
    spec: TaskSpec,
    train: list,
    validation: list,
    cfg: DistillConfig,
    device,
) -> tuple[object, list[int] | None, dict | None]:
    """What building and distilling the student need beyond ``cfg``: the teacher's unit
    importance (ETD-Impt on a fresh student only) and the GA-searched mapping with its report
    (``mapping="ga"`` only); None where not asked for."""
    importance = (
        _importance(teacher, spec, train, cfg, ctx.seed)
        if cfg.init == "etd-impt" and start is None
        else None
    )
    genome, ga = None, None
    if cfg.mapping == "ga" and cfg.ga.mapping_file:  # found before (task-agnostic): reused
        from toolchain.distill.ga_agnostic import load_mapping

        genome, report = load_mapping(cfg.ga.mapping_file, teacher_layers=teacher.num_layers,
                                      student_layers=shape.layers)  # fmt: skip
        ga = {"best": genome, "mapping_file": str(cfg.ga.mapping_file),
              "tasks": report.get("tasks"), "evaluations": 0, "search_s": 0.0}  # fmt: skip
    elif cfg.mapping == "ga":
        genome, ga = search_mapping(
            teacher,
            shape,
            spec,
            train,
            validation,
            cfg,
            importance,
            seed=ctx.seed,
            state_dir=ctx.checkpoint_dir,
            device=device,
        )
    return importance, genome, ga


LM_DEV_LINES = 300  # a language model's dev comparison: the first lines (~16k tokens of WikiText)


def _dev_comparison(teacher, student, spec: TaskSpec, data_dir, cfg: DistillConfig) -> dict:
    """Student against teacher on the dev split (accuracy, label and probability loyalty); for a
    language model on its first :data:`LM_DEV_LINES` lines (the whole of wiki.test.raw took
    about 6 minutes per distillation of a SmolLM2 student on 2 cores, teacher included)."""
    from toolchain.evaluate.evaluate import compare

    dev = load_split(spec, "dev", data_dir)
    if spec.kind == "language-modeling":
        dev = dev[:LM_DEV_LINES]
    comparison = compare(teacher, student, spec, dev, max_len=cfg.max_seq_len)
    if spec.kind == "language-modeling":
        comparison["lines"] = len(dev)
    log.info(
        "dev: student %s, teacher %s, label loyalty %s",
        comparison["student"],
        comparison["teacher"],
        comparison.get("label_loyalty"),
    )
    return comparison


def _importance(teacher, spec, train, cfg: DistillConfig | PruneConfig, seed: int):
    from toolchain.distill.importance import importance

    sample = random.Random(seed).sample(train, min(cfg.importance_samples, len(train)))
    return importance(teacher, spec, sample, max_len=cfg.max_seq_len)


def search_mapping(
    teacher,
    shape,
    spec,
    train,
    validation,
    cfg: DistillConfig,
    importance,
    *,
    seed: int,
    state_dir: Path,
    device,
) -> tuple[list[int], dict]:
    """GA search of the layer mapping with the paper's proxy: each genome's fitness is the
    validation score after ``ga.proxy_steps`` of distillation on ``ga.proxy_fraction`` of train.

    Returns:
        ``(best mapping, {"best", "fitness", "history", "evaluations", "search_s"})``.
    """
    import time

    from toolchain.distill.ga import ga_search
    from toolchain.distill.init import init_student
    from toolchain.distill.trainer import distill

    rng = random.Random(seed)
    proxy_train = rng.sample(train, max(1, int(len(train) * cfg.ga.proxy_fraction)))
    proxy_cfg = replace(
        cfg,
        mapping="ga",
        steps=cfg.ga.proxy_steps,
        eval_every=cfg.ga.proxy_steps,
        early_stopping_patience=0,
        eval_samples=min(cfg.eval_samples or 1000, 1000),
    )
    start = time.perf_counter()

    def fitness(genome: list[int]) -> float:
        student = init_student(teacher, shape, cfg.init, importance=importance, seed=seed)
        scratch = Path(tempfile.mkdtemp(prefix="ga-", dir=state_dir))
        try:
            result = distill(
                teacher,
                student,
                spec,
                proxy_train,
                validation,
                proxy_cfg,
                out_dir=scratch,
                seed=seed,
                genome=genome,
                device=device,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return result["best_validation"][spec.main_metric]

    best, state = ga_search(
        fitness,
        teacher_layers=teacher.num_layers,
        student_layers=shape.layers,
        cfg=cfg.ga,
        seed=seed,
        state_path=Path(state_dir) / "ga.json",
    )
    return best, {
        "best": best,
        "fitness": state.fitness,
        "history": state.history,
        "evaluations": len(state.fitness),
        "search_s": round(time.perf_counter() - start, 1),
    }
