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

from toolchain import distributed as dist
from toolchain.config import DataConfig, TeacherConfig
from toolchain.data.readers import load_split, resolve_data_dir, split_path
from toolchain.data.tasks import TaskSpec
from toolchain.errors import EdgecError
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

    return Stage(
        name, run, config=config, inputs=teacher_inputs(model, spec, data_dir), distributed=True
    )


def run_teacher(ctx: StageContext, *, model, spec, data_dir, cfg, data_cfg, device) -> dict:
    from toolchain.data.clean import clean
    from toolchain.evaluate.evaluate import evaluate
    from toolchain.models.finetune import finetune, head_for, seed_everything
    from toolchain.models.loading import load_model

    seed_everything(ctx.seed)  # the new classification head is drawn from the stage's seed
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

    def train_round(r: int) -> dict:
        if r and dist.is_main():
            (ctx.checkpoint_dir / f"round-{r}").mkdir(parents=True, exist_ok=True)
        return finetune(
            adapter,
            spec,
            train,
            validation,
            cfg,
            out_dir=ctx.out_dir,
            seed=ctx.seed + r,
            checkpoint_dir=ctx.checkpoint_dir / f"round-{r}" if r else ctx.checkpoint_dir,
            device=device,
        )

    result, gate = _train_until_above_trivial(
        adapter, spec, train, validation, cfg, train_round, ctx.out_dir
    )
    metrics = {"task": spec.name, "model": model, **result, "cleaning": report.as_dict()}
    if gate is not None:
        metrics["gate"] = gate
    if "dev" in spec.files:
        dev = load_split(spec, "dev", data_dir)
        metrics["dev"] = evaluate(adapter, spec, dev, max_len=cfg.max_seq_len, desc="dev")
        log.info("%s dev: %s", spec.name, _fmt(metrics["dev"]))
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


class TeacherBelowTrivial(EdgecError):
    """The fine-tuned teacher is not clearly better than always giving the same answer."""


def _train_until_above_trivial(adapter, spec, train, validation, cfg, train_round, out_dir):
    """Fine-tune (round 0); while the teacher is not clearly above the trivial baseline on the
    validation split, train another round from the current weights if validation improved and
    the time budget (``cfg.time_budget_s``) holds another round of the same length; the best
    round's weights are kept. Returns (the fine-tuning metrics, the gate record or None).

    Raises:
        TeacherBelowTrivial: still not clearly above, and ``cfg.require_above_trivial``.
    """
    import time

    from toolchain.evaluate.trivial import TrivialBaseline

    started = time.perf_counter()
    result = train_round(0)
    trivial = TrivialBaseline.fit(spec, train)
    if trivial is None:
        return result, None
    gain = _validation_gain(adapter, spec, validation, trivial, cfg)
    rounds = [{"round": 0, **gain.to_dict(), "wall_s": result["wall_s"]}]
    r = 0
    while not gain.clearly_above and cfg.time_budget_s:
        elapsed = time.perf_counter() - started
        if elapsed + result["wall_s"] > cfg.time_budget_s:
            log.warning("teacher: no time left for another round (%.0f s of %.0f s used)",
                        elapsed, cfg.time_budget_s)  # fmt: skip
            break
        r += 1
        log.warning(
            "the teacher is not clearly above the trivial baseline on validation: %s; training "
            "round %d from its current weights",
            gain.describe(),
            r,
        )
        kept = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
        more = train_round(r)
        better = _validation_gain(adapter, spec, validation, trivial, cfg)
        rounds.append({"round": r, **better.to_dict(), "wall_s": more["wall_s"]})
        if better.model <= gain.model:  # validation stopped improving: keep the earlier weights
            adapter.model.load_state_dict(kept)
            log.info("teacher round %d did not improve validation %s: stopping", r, gain.metric)
            break
        result = {**more, "steps": result["steps"] + more["steps"]}
        gain = better
    if r:
        adapter.save(out_dir)  # the kept weights (a later round may have saved worse ones)
    record = {
        "trivial": {"description": trivial.describe(spec, [ex.label for ex in validation])},
        "validation": gain.to_dict(),
        "rounds": rounds,
        "time_budget_s": cfg.time_budget_s,
    }
    if not gain.clearly_above:
        message = (
            f"the fine-tuned teacher is not clearly better than a trivial model on {spec.name}'s "
            f"validation split: {gain.describe()}; the trivial model "
            f"{trivial.describe(spec, [ex.label for ex in validation])}. "
            "No student distilled from it would be worth shipping. What to do: `--preset "
            "standard` (all the training data, longer fine-tuning), more training data, or a "
            "larger teacher (`--model DIR`; `edgec build` searches BERT-family teachers, while "
            "`edgec teacher --model mpnet-base` fine-tunes all-mpnet-base-v2 for `edgec "
            "distill`); or accept it knowingly with "
            "`--set teacher_finetune.require_above_trivial=false`"
        )
        if cfg.require_above_trivial:
            raise TeacherBelowTrivial(message)
        log.warning("%s (going on: require_above_trivial is false)", message)
    return result, record


def _validation_gain(adapter, spec, validation, trivial, cfg):
    """The teacher's predictions on ``validation`` against the trivial baseline."""
    import numpy as np
    import torch

    from toolchain.data.encode import encode
    from toolchain.evaluate.evaluate import pad_id_of, predict
    from toolchain.evaluate.trivial import predictions_of

    encoded = encode(spec, validation, adapter.tokenizer, cfg.max_seq_len)
    with torch.no_grad():
        pred = predict(
            adapter.model,
            spec,
            encoded,
            pad_id=pad_id_of(adapter.tokenizer),
            device=next(adapter.model.parameters()).device,
            desc="validation vs trivial",
        )
    preds = predictions_of(spec, np.stack(pred["logits"]))
    labels = [ex.label for ex in validation]
    return trivial.compare(spec, labels, preds, confidence=cfg.gate_confidence)


def _fmt(metrics: dict) -> str:
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
    )
