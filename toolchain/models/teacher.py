"""The teacher stage: clean the training data, fine-tune the teacher, score it on the dev split.

Runs as a pipeline stage, so its output (a Hugging Face directory plus ``metrics.json``) is cached
by its record: ``edgec build`` and a repeated ``edgec teacher`` never fine-tune twice.

Example::

    stage = teacher_stage(model="default", spec=get_task("sst2"), data_dir="../shared/data",
                          cfg=TeacherConfig(epochs=1), data_cfg=DataConfig())
    RunDir("runs/sst2").run([stage])
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from toolchain.config import DataConfig, TeacherConfig
from toolchain.data.readers import load_split, resolve_data_dir, split_path
from toolchain.data.tasks import TaskSpec
from toolchain.pipeline import Stage, StageContext

log = logging.getLogger(__name__)


def teacher_inputs(model: str, spec: TaskSpec, data_dir) -> tuple[Path, ...]:
    """Files whose content identifies a teacher run: the model and the task's data files."""
    from toolchain.models.loading import resolve_model_path

    inputs = []
    resolved = resolve_model_path(model)
    if isinstance(resolved, Path):
        inputs.append(resolved)
    folder = resolve_data_dir(data_dir) if spec.folder else None
    if folder is not None or not spec.folder:
        for split in ("train", "validation", "dev"):
            if split in spec.files:
                path = split_path(spec, split, folder)
                if path.is_file():
                    inputs.append(path)
    return tuple(dict.fromkeys(inputs))


def teacher_stage(
    *,
    model: str,
    spec: TaskSpec,
    data_dir,
    cfg: TeacherConfig,
    data_cfg: DataConfig,
    device: str | None = None,
    name: str = "teacher",
) -> Stage:
    """A pipeline :class:`~toolchain.pipeline.Stage` that fine-tunes ``model`` on ``spec``."""
    config = {
        "model": model,
        "task": spec.name,
        "task_spec": spec,
        "finetune": cfg,
        "data": data_cfg,
    }

    def run(ctx: StageContext) -> dict:
        return run_teacher(
            ctx,
            model=model,
            spec=spec,
            data_dir=data_dir,
            cfg=cfg,
            data_cfg=data_cfg,
            device=device,
        )

    return Stage(name, run, config=config, inputs=teacher_inputs(model, spec, data_dir))


def run_teacher(ctx: StageContext, *, model, spec, data_dir, cfg, data_cfg, device) -> dict:
    from toolchain.data.clean import clean
    from toolchain.evaluate.evaluate import evaluate
    from toolchain.models.finetune import finetune, head_for
    from toolchain.models.loading import load_model

    train = load_split(spec, "train", data_dir)
    validation = load_split(spec, "validation", data_dir)
    train, report = clean(train, data_cfg)
    log.info("%s: %s", spec.name, report.summary())
    adapter = load_model(
        model,
        head=head_for(spec),
        num_labels=spec.num_labels if spec.kind != "language-modeling" else None,
        problem_type="regression" if spec.kind == "regression" else None,
        id2label=dict(enumerate(spec.labels)) if spec.labels else None,
    )
    result = finetune(
        adapter,
        spec,
        train,
        validation,
        cfg,
        out_dir=ctx.out_dir,
        seed=ctx.seed,
        checkpoint_dir=ctx.checkpoint_dir,
        device=device,
    )
    metrics = {"task": spec.name, "model": model, **result, "cleaning": report.as_dict()}
    if "dev" in spec.files:
        dev = load_split(spec, "dev", data_dir)
        metrics["dev"] = evaluate(adapter, spec, dev, max_len=cfg.max_seq_len, desc="dev")
        log.info("%s dev: %s", spec.name, _fmt(metrics["dev"]))
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _fmt(metrics: dict) -> str:
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
    )
