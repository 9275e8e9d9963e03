"""Fine-tuning a model on a task (the teacher stage): AdamW with linear warm-up and decay,
periodic evaluation on the validation split, early stopping on the task's main metric, the best
weights kept, checkpoints for resume, GPU (bf16 autocast) when present.

Example::

    adapter = load_model("default", head="sequence-classification", num_labels=2)
    metrics = finetune(adapter, spec, train, validation, TeacherConfig(epochs=1), out_dir=out)
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from toolchain import distributed as dist
from toolchain.config import TeacherConfig
from toolchain.data.encode import batches, encode, lm_labels
from toolchain.data.tasks import TaskSpec
from toolchain.errors import EdgecError
from toolchain.evaluate.evaluate import pad_id_of, predict, score
from toolchain.log import progress

log = logging.getLogger(__name__)
LOWER_IS_BETTER = {"perplexity"}
CHECKPOINT = "finetune.pt"


def pick_device(name: str | None = None) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1"), else CUDA when available, else CPU; with several
    ranks on GPUs, this rank's GPU (:func:`toolchain.distributed.device`)."""
    name = dist.device(name)
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise EdgecError(f"--device {name}: no CUDA GPU is visible to torch")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def head_for(spec: TaskSpec) -> str:
    """The model head a task needs."""
    return {
        "classification": "sequence-classification",
        "regression": "sequence-classification",
        "token-classification": "token-classification",
        "language-modeling": "causal-lm",
    }[spec.kind]


@dataclass
class TrainState:
    """Progress of a training loop; saved in checkpoints."""

    step: int = 0
    best: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    history: list = field(default_factory=list)


def improved(metric: str, new: float, old: float | None) -> bool:
    """Whether ``new`` beats ``old`` for ``metric`` (perplexity: lower is better)."""
    if old is None:
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def make_optimizer(model, cfg, total_steps: int):
    """AdamW (no weight decay on biases and norms) with linear warm-up and decay to zero.

    ``cfg`` needs ``learning_rate``, ``weight_decay`` and ``warmup_ratio`` (TeacherConfig and
    DistillConfig both have them)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
    )
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def finetune(
    adapter,
    spec: TaskSpec,
    train: list,
    validation: list,
    cfg: TeacherConfig,
    *,
    out_dir: str | Path,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Fine-tune ``adapter.model`` on ``train``, select on ``validation``, save the best to
    ``out_dir`` (a Hugging Face directory with the tokenizer). Under torchrun, every rank
    trains on its share of each global batch and rank 0 alone saves
    (:mod:`toolchain.distributed`).

    Returns:
        Metrics: ``best_validation`` (the task's metrics at the best step), ``best_step``,
        ``steps``, ``train_examples``, ``wall_s``, ``device``, ``history``.
    """
    device = pick_device(str(device) if device else None)
    model, tokenizer = adapter.model.to(device), adapter.tokenizer
    if not train or not validation:
        missing = "training" if not train else "validation"
        raise EdgecError(f"{spec.name}: no {missing} examples")
    seed_everything(seed)
    run = _setup(
        model,
        tokenizer,
        spec,
        train,
        validation,
        cfg,
        device=device,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
    )
    start = time.perf_counter()
    _train(run)
    if run.best_weights is not None:
        model.load_state_dict(run.best_weights)
    if dist.is_main():
        adapter.save(out_dir)
    best_eval = next((h for h in run.state.history if h["step"] == run.state.best_step), {})
    return {
        "best_validation": {k: v for k, v in best_eval.items() if k not in ("step", "loss")},
        "best_step": run.state.best_step,
        "steps": run.state.step,
        "train_examples": len(run.enc_train),
        "wall_s": round(time.perf_counter() - start, 1),
        "device": str(device),
        **dist.describe(),
        "history": run.state.history,
    }


@dataclass
class _FinetuneRun:
    """What the fine-tuning loop reads and updates, shared by its step helpers."""

    model: torch.nn.Module
    spec: TaskSpec
    cfg: TeacherConfig
    device: torch.device
    seed: int
    enc_train: list
    validation: list
    enc_val: list
    per_epoch: int
    total: int  # optimizer steps of the whole run
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    state: TrainState
    ckpt: Path | None
    best_weights: dict | None  # CPU copies of the best weights, None before the first evaluation
    pad_id: int


def _setup(
    model: torch.nn.Module,
    tokenizer,
    spec: TaskSpec,
    train: list,
    validation: list,
    cfg: TeacherConfig,
    *,
    device: torch.device,
    seed: int,
    checkpoint_dir: str | Path | None,
) -> _FinetuneRun:
    """The encoded data, step budget, optimizer and schedule, and any checkpoint to resume."""
    if cfg.max_train_samples is not None and len(train) > cfg.max_train_samples:
        train = random.Random(seed).sample(train, cfg.max_train_samples)
    enc_train = encode(spec, train, tokenizer, cfg.max_seq_len)
    enc_val = encode(spec, validation, tokenizer, cfg.max_seq_len)
    per_epoch = math.ceil(len(enc_train) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    opt, sched = make_optimizer(model, cfg, total)
    state = TrainState()
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    best_weights = resume_checkpoint(ckpt, model, opt, sched, state)
    return _FinetuneRun(
        model=model,
        spec=spec,
        cfg=cfg,
        device=device,
        seed=seed,
        enc_train=enc_train,
        validation=validation,
        enc_val=enc_val,
        per_epoch=per_epoch,
        total=total,
        opt=opt,
        sched=sched,
        state=state,
        ckpt=ckpt,
        best_weights=best_weights,
        pad_id=pad_id_of(tokenizer),
    )


def _train(run: _FinetuneRun) -> None:
    """The optimisation loop, from ``run.state.step`` (0, or where a checkpoint left off)."""
    cfg, state, total = run.cfg, run.state, run.total
    log.info(
        "fine-tuning on %d %s examples for %d steps (batch %d) on %s",
        len(run.enc_train),
        run.spec.name,
        total,
        cfg.batch_size,
        run.device,
    )
    bar = iter(
        progress(range(state.step, total), total=total - state.step, desc="fine-tune", unit="step")
    )
    stop = False
    while state.step < total and not stop:
        epoch, offset = divmod(state.step, run.per_epoch)
        it = batches(
            run.enc_train, cfg.batch_size, pad_id=run.pad_id, shuffle=True, seed=run.seed + epoch
        )
        for k, (_, batch) in enumerate(it):
            if k < offset:
                continue  # resumed mid-epoch: these batches were already seen
            loss = _step(run, batch)
            state.step += 1
            next(bar, None)
            if state.step % cfg.eval_every == 0 or state.step == total:
                stop = _evaluate_and_keep(run, loss.item())
            if state.step >= total or stop:
                break


def _step(run: _FinetuneRun, batch: dict) -> torch.Tensor:
    """One optimizer step on ``batch`` (this rank's share of it); returns its loss (before the
    update)."""
    run.model.train()
    batch, weight = dist.shard(batch)
    batch = lm_labels({key: v.to(run.device) for key, v in batch.items()})
    with autocast_for(run.device):
        loss = run.model(**batch).loss
    if not torch.isfinite(loss):
        raise EdgecError(
            f"loss became {loss.item()} at step {run.state.step}; lower the learning rate"
        )
    (loss * weight).backward()
    dist.average_gradients(run.model.parameters())
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.opt.step()
    run.sched.step()
    run.opt.zero_grad(set_to_none=True)
    return loss


def _evaluate_and_keep(run: _FinetuneRun, loss: float) -> bool:
    """Evaluate, keep the weights if best so far, checkpoint; True when early stopping says stop."""
    state, metric = run.state, run.spec.main_metric
    # rank 0 evaluates; every rank records the same result and keeps the same best weights
    result = dist.on_main(
        lambda: _evaluate(run.model, run.spec, run.validation, run.enc_val, run.pad_id, run.device)
    )
    state.history.append({"step": state.step, "loss": round(loss, 5), **result})
    log.info("step %d: loss %.4f, validation %s %.4f", state.step, loss, metric, result[metric])
    value = result[metric]
    if improved(metric, value, state.best):
        state.best, state.best_step, state.bad_evals = value, state.step, 0
        run.best_weights = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    else:
        state.bad_evals += 1
    save_checkpoint(run.ckpt, run.model, run.opt, run.sched, state, run.best_weights)
    patience = run.cfg.early_stopping_patience
    if patience and state.bad_evals >= patience:
        log.info(
            "early stop at step %d: %s did not improve for %d evaluations",
            state.step,
            metric,
            state.bad_evals,
        )
        return True
    return False


def _evaluate(model, spec, validation, enc_val, pad_id, device) -> dict:
    pred = predict(model, spec, enc_val, pad_id=pad_id, device=device, desc="validation")
    return score(spec, validation, enc_val, pred)


def autocast_for(device: torch.device):
    """bf16 autocast on a GPU that supports it; a no-op context elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def save_checkpoint(ckpt: Path | None, model, opt, sched, state: TrainState, best) -> None:
    """Write model, optimizer, scheduler, progress and best weights (temp file, then rename);
    rank 0 alone writes (the other ranks hold the same state)."""
    if ckpt is None or not dist.is_main():
        return
    tmp = ckpt.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "state": state.__dict__,
            "best": best,
        },
        tmp,
    )
    tmp.replace(ckpt)


def resume_checkpoint(ckpt: Path | None, model, opt, sched, state: TrainState):
    """Load the stage's own checkpoint (never a user-supplied file) if one exists."""
    if ckpt is None or not ckpt.is_file():
        return None
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(data["model"])
    opt.load_state_dict(data["optimizer"])
    sched.load_state_dict(data["scheduler"])
    state.__dict__.update(data["state"])
    log.info("resuming fine-tuning from step %d (checkpoint %s)", state.step, ckpt)
    return data["best"]
