"""The quantization stage: choose widths (fixed or mixed to a budget), fake-quantize, initialise
the step sizes from data, train weights and steps under distillation from the float model
(KDLSQ) or stop there (RTN), score against the float model, write the packed checkpoint and check
that it reloads to the same logits.

Example::

    stage = quantize_stage(model_dir="runs/student", spec=get_task("sst2"), data_dir=data,
                           cfg=QuantizeConfig(weight_bits=2, quantize_embeddings=True),
                           data_cfg=DataConfig())
    run_single(stage, Path("runs/student-w2a8"))

    # or in one call, as `edgec quantize` does:
    quantize("runs/student", "runs/student-w2a8", spec=get_task("sst2"), data_dir=data,
             cfg=QuantizeConfig(weight_bits=2, quantize_embeddings=True))
"""

from __future__ import annotations

import copy
import json
import logging
import random
from pathlib import Path

import torch

from toolchain.config import DataConfig, DistillConfig, QuantizeConfig
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.errors import ConfigError, StageError
from toolchain.models.teacher import teacher_inputs
from toolchain.pipeline import Stage, StageContext, run_single

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4  # packed reload vs trained fake-quant logits (float32)


def quantize_stage(
    *,
    model_dir: str,
    spec: TaskSpec,
    data_dir,
    cfg: QuantizeConfig,
    data_cfg: DataConfig,
    teacher_dir: str | None = None,
    device: str | None = None,
    name: str = "quantize",
) -> Stage:
    """A pipeline :class:`~toolchain.pipeline.Stage` quantizing ``model_dir`` (a float model)."""
    if cfg.method == "none":
        raise ConfigError("quantize.method is 'none': there is nothing to run", key="method")
    config = {
        "model": model_dir,
        "teacher": teacher_dir,
        "task": spec.name,
        "task_spec": spec,
        "quantize": cfg,
        "data": data_cfg,
    }
    inputs = teacher_inputs(model_dir, spec, data_dir)
    if teacher_dir:
        inputs = (*inputs, *teacher_inputs(teacher_dir, spec, data_dir)[:1])

    def run(ctx: StageContext) -> dict:
        return run_quantize(
            ctx,
            model_dir=model_dir,
            teacher_dir=teacher_dir,
            spec=spec,
            data_dir=data_dir,
            cfg=cfg,
            data_cfg=data_cfg,
            device=device,
        )

    # KDLSQ trains on every rank under torchrun; PTQ methods run on rank 0 alone
    return Stage(name, run, config=config, inputs=tuple(dict.fromkeys(inputs)),
                 distributed=cfg.method == "kdlsq")  # fmt: skip


def quantize(
    model_dir: str,
    out: str | Path,
    *,
    spec: TaskSpec,
    cfg: QuantizeConfig,
    data_dir=None,
    data_cfg: DataConfig | None = None,
    teacher_dir: str | None = None,
    device: str | None = None,
    seed: int = 0,
    force: bool = False,
):
    """Quantize ``model_dir`` into the packed checkpoint ``out`` (what ``edgec quantize`` runs).

    Returns:
        The :class:`~toolchain.pipeline.StageResult` (``.record["metrics"]`` has the figures);
        a second call with the same inputs is served from ``out``.
    """
    out = Path(out).resolve()
    stage = quantize_stage(
        model_dir=model_dir,
        teacher_dir=teacher_dir,
        spec=spec,
        data_dir=data_dir,
        cfg=cfg,
        data_cfg=data_cfg or DataConfig(),
        device=device,
        name=out.name,
    )
    return run_single(stage, out, seed=seed, force=force)


def kd_config(cfg: QuantizeConfig, teacher_layers: int, student_layers: int) -> DistillConfig:
    """The distillation settings of KDLSQ: layer-to-layer hidden and attention KD."""
    mapping = "uniform" if student_layers <= teacher_layers else "none"
    return DistillConfig(
        mapping=mapping,
        temperature=cfg.temperature,
        kd_weight=cfg.kd_weight,
        hidden_weight=cfg.hidden_weight,
        attention_weight=cfg.attention_weight,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_seq_len=cfg.max_seq_len,
        eval_every=min(cfg.eval_every, cfg.steps),
        eval_samples=cfg.eval_samples,
        early_stopping_patience=cfg.early_stopping_patience,
    )


def run_quantize(
    ctx: StageContext,
    *,
    model_dir,
    teacher_dir,
    spec,
    data_dir,
    cfg: QuantizeConfig,
    data_cfg,
    device,
) -> dict:
    from toolchain.data.clean import clean
    from toolchain.models.finetune import pick_device, seed_everything

    device = pick_device(device)
    seed_everything(ctx.seed)
    floating, teacher = _load_models(model_dir, teacher_dir, spec, device)
    train, report = clean(load_split(spec, "train", data_dir), data_cfg)
    calib = _calibration_batches(spec, train, floating.tokenizer, cfg, ctx.seed, device)
    plan, mixed = choose_widths(floating, cfg, calib)
    quant, sqnr = _fake_quantize(floating, plan, cfg, calib)
    training = None
    if cfg.method == "kdlsq":
        training = _train_kdlsq(ctx, teacher, quant, spec, train, data_dir, cfg, device)
    quant.model.eval()
    quant.tokenizer = floating.tokenizer
    metrics = {
        "task": spec.name,
        "model": model_dir,
        "teacher": teacher_dir or model_dir,
        "method": cfg.method,
        "w_bits": cfg.weight_bits if not mixed else None,
        "a_bits": cfg.act_bits,
        "widths": plan,
        "init_sqnr_db": {
            "min": round(min(sqnr.values()), 2),
            "mean": round(sum(sqnr.values()) / len(sqnr), 2),
        },
        "cleaning": report.as_dict(),
    }
    if mixed:
        metrics["mixed"] = mixed
    if training:
        metrics["training"] = {k: v for k, v in training.items() if k != "mapping"}
    metrics.update(_write_and_check(ctx.out_dir, quant, floating, cfg, calib[:2], device))
    if "dev" in spec.files:
        dev = load_split(spec, "dev", data_dir)
        if spec.kind == "language-modeling":  # the first lines, as distillation's comparison
            from toolchain.distill.stage import LM_DEV_LINES

            dev = dev[:LM_DEV_LINES]
        metrics["dev"] = dev_scores(floating, quant, spec, dev, cfg)
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _load_models(model_dir, teacher_dir, spec: TaskSpec, device) -> tuple:
    """``(float model, teacher)`` in eval mode on ``device``; the teacher is the float model
    itself unless ``teacher_dir`` names another."""
    from toolchain.models.finetune import head_for
    from toolchain.models.loading import load_model

    floating = load_model(model_dir, head=head_for(spec))
    floating.model.to(device).eval()
    teacher = load_model(teacher_dir, head=head_for(spec)) if teacher_dir else floating
    teacher.model.to(device).eval()
    return floating, teacher


def _calibration_batches(
    spec: TaskSpec, train: list, tokenizer, cfg: QuantizeConfig, seed: int, device
) -> list[dict]:
    """A seeded sample of ``calibration_batches`` training batches, encoded and on ``device``."""
    from toolchain.data.encode import batches, encode
    from toolchain.evaluate.evaluate import pad_id_of

    sample = random.Random(seed).sample(
        train, min(len(train), cfg.batch_size * cfg.calibration_batches)
    )
    enc = encode(spec, sample, tokenizer, cfg.max_seq_len)
    return [
        {k: v.to(device) for k, v in b.items()}
        for _, b in batches(enc, cfg.batch_size, pad_id=pad_id_of(tokenizer))
    ]


def _fake_quantize(floating, plan: dict, cfg: QuantizeConfig, calib: list[dict]) -> tuple:
    """``(fake-quantized copy of floating, {module: weight SQNR in dB})`` with the step sizes
    initialised from ``calib`` (RTN: from the max, as it is not trained afterwards)."""
    from toolchain.quantize.calibrate import calibrate, weight_sqnr_db
    from toolchain.quantize.modules import quantize_modules

    quant = copy.deepcopy(floating)
    quantize_modules(quant.model, plan, act_bits=cfg.act_bits)
    init = "max" if cfg.method == "rtn" else cfg.init
    calibrate(quant.model, calib, weight_init=init, act_init=init)
    return quant, weight_sqnr_db(quant.model)


def _train_kdlsq(
    ctx: StageContext, teacher, quant, spec: TaskSpec, train: list, data_dir, cfg, device
) -> dict:
    """Train ``quant``'s weights and step sizes under distillation from ``teacher`` (KDLSQ)."""
    from toolchain.distill.trainer import distill

    validation = load_split(spec, "validation", data_dir)
    return distill(
        teacher,
        quant,
        spec,
        train,
        validation,
        kd_config(cfg, teacher.num_layers, quant.num_layers),
        out_dir=ctx.out_dir,
        seed=ctx.seed,
        checkpoint_dir=ctx.checkpoint_dir,
        device=device,
        save=False,
    )


def choose_widths(floating, cfg: QuantizeConfig, calib: list[dict]) -> tuple[dict, dict | None]:
    """``({module: bits}, mixed-precision record or None)``."""
    from toolchain.quantize.convert import model_bytes
    from toolchain.quantize.mixed import allocate, layer_sizes, sensitivity
    from toolchain.quantize.modules import plan_modules

    plan = plan_modules(
        floating.model,
        weight_bits=cfg.weight_bits,
        quantize_embeddings=cfg.quantize_embeddings,
        exclude=cfg.exclude,
        overrides=cfg.overrides,
    )
    if not plan:
        raise ConfigError("no module left to quantize: check quantize.exclude", key="exclude")
    if not cfg.mixed:
        return plan, None
    sizes = layer_sizes(floating.model, plan)
    free = {n: b for n, b in plan.items() if not _overridden(n, cfg)}
    fixed_bits = sum(sizes[n] * _stored(b) for n, b in plan.items() if n not in free)
    if cfg.avg_bits is not None:
        budget = cfg.avg_bits * sum(sizes.values()) - fixed_bits
    else:
        # whole-file budget: the weights get what the float tensors and scales leave
        at_zero = model_bytes(floating.model, block_size=cfg.block_size, plan=plan)
        weights_now = sum(sizes[n] * _stored(b) for n, b in plan.items()) / 8
        other = at_zero - weights_now
        budget = (cfg.size_budget_mb * 2**20 - other) * 8 - fixed_bits
    sens = sensitivity(
        floating.model, free, calib[: cfg.sensitivity_batches], choices=cfg.mixed_choices
    )
    widths = allocate({n: sizes[n] for n in free}, sens, budget_bits=budget)
    plan = {n: widths.get(n, b) for n, b in plan.items()}
    stored = sum(sizes[n] * _stored(b) for n, b in plan.items()) / sum(sizes.values())
    record = {
        "avg_bits_target": cfg.avg_bits,
        "size_budget_mb": cfg.size_budget_mb,
        "stored_bits_per_weight": round(stored, 4),
        "sensitivity": {n: {str(b): round(v, 6) for b, v in s.items()} for n, s in sens.items()},
    }
    return plan, record


def _stored(bits: int) -> int:
    from toolchain.lowbit.reference import container_bits

    return container_bits(bits)


def _overridden(name: str, cfg: QuantizeConfig) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name, p) for p in cfg.overrides)


def _write_and_check(out: Path, quant, floating, cfg: QuantizeConfig, batches, device) -> dict:
    """Save the packed checkpoint, reload it, and compare its logits with the trained model's."""
    from toolchain.quantize.convert import load_quantized, save_quantized

    save_quantized(quant, out, block_size=cfg.block_size)
    reloaded = load_quantized(out, device=device)
    worst = 0.0
    with torch.no_grad():
        for b in batches:
            inputs = {k: v for k, v in b.items() if k != "labels"}
            a = quant.model(**inputs).logits.float()
            r = reloaded.model(**inputs).logits.float()
            worst = max(worst, (a - r).abs().max().item())
    if worst > PARITY_ATOL:
        raise StageError(
            f"the packed checkpoint reloads to different logits (max |diff| {worst:.3g} > "
            f"{PARITY_ATOL}); this is a bug in edgec's packing, please report it"
        )
    file_bytes = (out / "model.safetensors").stat().st_size
    fp32 = sum(p.numel() for p in floating.model.parameters()) * 4
    log.info(
        "packed checkpoint: %.2f MiB (%.1fx smaller than fp32), reload max |diff| %.2g",
        file_bytes / 2**20,
        fp32 / file_bytes,
        worst,
    )
    return {
        "bytes": file_bytes,
        "fp32_bytes": fp32,
        "compression_vs_fp32": round(fp32 / file_bytes, 3),
        "reload_max_abs_diff": worst,
    }


def dev_scores(floating, quant, spec, dev: list, cfg: QuantizeConfig) -> dict:
    """Dev metrics of the float and the quantized model, and the quantized model's loyalty."""
    from toolchain.evaluate.evaluate import compare

    out = compare(floating, quant, spec, dev, max_len=cfg.max_seq_len)
    log.info(
        "dev %s: quantized %.4f, float %.4f, label loyalty %s",
        spec.main_metric,
        out["student"][spec.main_metric],
        out["teacher"][spec.main_metric],
        out.get("label_loyalty"),
    )
    return {
        "quantized": out["student"],
        "float": out["teacher"],
        **{k: v for k, v in out.items() if k not in ("student", "teacher")},
    }
