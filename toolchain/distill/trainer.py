"""Knowledge distillation of a student from a teacher: logit KD mixed with the hard-label loss,
plus hidden-state, attention and embedding KD through a layer mapping (uniform, last, RAIL-KD,
GA). AdamW with warm-up and decay, gradient accumulation, periodic evaluation, early stopping,
best weights kept, checkpoint and resume, bf16 autocast on GPU.

Example::

    result = distill(teacher, student, spec, train, validation, DistillConfig(mapping="rail"),
                     out_dir="runs/student")
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolchain import distributed as dist
from toolchain.config import DistillConfig
from toolchain.data.encode import IGNORE, batches, encode
from toolchain.data.tasks import TaskSpec
from toolchain.distill import losses as L
from toolchain.distill.mapping import LayerMapper
from toolchain.errors import EdgecError
from toolchain.evaluate.evaluate import pad_id_of, predict, score
from toolchain.log import progress
from toolchain.models.adapters import ModelAdapter
from toolchain.models.finetune import (
    TrainState,
    autocast_for,
    improved,
    make_optimizer,
    pick_device,
    resume_checkpoint,
    save_checkpoint,
    seed_everything,
)

log = logging.getLogger(__name__)


class _Trainable(nn.Module):
    """The student plus the learned width projections: what the optimizer and checkpoints see."""

    def __init__(self, student: nn.Module, layers: int, s_width: int, t_width: int):
        super().__init__()
        self.student = student
        self.layer_proj = L.Projections(layers, s_width, t_width)
        self.emb_proj = L.Projections(1, s_width, t_width)


def task_loss(spec: TaskSpec, logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The hard-label loss: CE, MSE (regression), token CE, or next-token CE (language models)."""
    if spec.kind == "language-modeling":
        targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, IGNORE)
        return L.hard_loss(logits[:, :-1], targets)
    return L.hard_loss(logits, batch["labels"], regression=spec.kind == "regression")


def kd_losses(
    spec, cfg: DistillConfig, mapping: list[int], s_out, t_out, batch, module: _Trainable
) -> dict[str, torch.Tensor]:
    """Every loss term of one step (before weighting), as a dict."""
    mask = batch["attention_mask"]
    token_level = spec.kind in ("token-classification", "language-modeling")
    kind = "mse" if spec.kind == "regression" else cfg.logit_loss
    terms = {
        "hard": task_loss(spec, s_out.logits, batch),
        "kd": L.logit_kd(
            s_out.logits,
            t_out.logits,
            temperature=cfg.temperature,
            kind=kind,
            mask=mask if token_level else None,
        ),
    }
    if mapping and cfg.hidden_weight > 0:
        terms["hidden"] = _hidden_term(cfg, mapping, s_out, t_out, mask, module)
    if mapping and cfg.attention_weight > 0:
        terms["attention"] = sum(
            L.attention_kl(s_out.attentions[i], t_out.attentions[m], mask)
            for i, m in enumerate(mapping)
        ) / len(mapping)
    if cfg.embedding_weight > 0:
        proj = module.emb_proj.maps[0] if not module.emb_proj.same else None
        terms["embedding"] = L.embedding_loss(
            s_out.hidden_states[0], t_out.hidden_states[0], mask, proj
        )
    return terms


def _hidden_term(cfg, mapping, s_out, t_out, mask, module) -> torch.Tensor:
    # hidden_states[0] is the embedding output, so layer i's output is hidden_states[i + 1].
    pairs = [
        (module.layer_proj(i, s_out.hidden_states[i + 1]), t_out.hidden_states[m + 1])
        for i, m in enumerate(mapping)
    ]
    if cfg.mapping == "rail" and cfg.rail_variant == "concat":
        s = torch.cat([L.pooled(a, mask) for a, _ in pairs], dim=-1)
        t = torch.cat([L.pooled(b, mask) for _, b in pairs], dim=-1)
        return L.normalised_mse(s, t)
    if cfg.mapping == "rail":
        return sum(L.normalised_mse(L.pooled(a, mask), L.pooled(b, mask)) for a, b in pairs) / len(
            pairs
        )
    if cfg.hidden_loss == "cosine":
        return sum(L.hidden_cosine(a, b, mask) for a, b in pairs) / len(pairs)
    return sum(L.hidden_mse(a, b, mask) for a, b in pairs) / len(pairs)


def weighted(terms: dict[str, torch.Tensor], cfg: DistillConfig) -> torch.Tensor:
    total = L.combine(terms["hard"], terms["kd"], cfg.kd_weight)
    for name, weight in (
        ("hidden", cfg.hidden_weight),
        ("attention", cfg.attention_weight),
        ("embedding", cfg.embedding_weight),
    ):
        if name in terms:
            total = total + weight * terms[name]
    return total


def distill(
    teacher: ModelAdapter,
    student: ModelAdapter,
    spec: TaskSpec,
    train: list,
    validation: list,
    cfg: DistillConfig,
    *,
    out_dir: str | Path,
    seed: int = 0,
    genome: list[int] | None = None,
    checkpoint_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    encoded_train: list | None = None,
    save: bool = True,
) -> dict:
    """Distil ``teacher`` into ``student`` on ``train``; keep the best on ``validation``; save the
    student (with the teacher's tokenizer) to ``out_dir`` unless ``save`` is False (the caller
    then writes it its own way, as quantization does). Under torchrun, every rank trains on its
    share of each global batch, and rank 0 alone evaluates (shared with the others) and writes
    (:mod:`toolchain.distributed`); every rank returns the same result and best weights.

    Returns:
        ``best_validation``, ``best_step``, ``steps``, ``history`` (validation score per
        evaluation), ``train_examples``, ``wall_s``, ``device``, ``mapping``.
    """
    if not train or not validation:
        raise EdgecError(f"{spec.name}: distillation needs training and validation examples")
    device = pick_device(str(device) if device else None)
    seed_everything(seed)
    tokenizer = teacher.tokenizer
    run = _setup(
        teacher,
        student,
        spec,
        train,
        validation,
        cfg,
        device=device,
        seed=seed,
        genome=genome,
        checkpoint_dir=checkpoint_dir,
        encoded_train=encoded_train,
    )
    start = time.perf_counter()
    _train(run)
    if run.best is not None:
        run.module.load_state_dict(run.best)
    student.tokenizer = tokenizer
    if save and dist.is_main():
        student.save(out_dir)
    return _summary(run, start, genome)


@dataclass
class _DistillRun:
    """What the distillation loop reads and updates, shared by its step helpers."""

    teacher: ModelAdapter
    student: ModelAdapter
    spec: TaskSpec
    cfg: DistillConfig
    device: torch.device
    seed: int
    module: _Trainable
    mapper: LayerMapper
    enc_train: list
    val: list
    enc_val: list
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    state: TrainState
    ckpt: Path | None
    best: dict | None  # the best weights so far (CPU copies), None before the first evaluation
    pad_id: int
    need_attn: bool


def _setup(
    teacher: ModelAdapter,
    student: ModelAdapter,
    spec: TaskSpec,
    train: list,
    validation: list,
    cfg: DistillConfig,
    *,
    device: torch.device,
    seed: int,
    genome: list[int] | None,
    checkpoint_dir: str | Path | None,
    encoded_train: list | None,
) -> _DistillRun:
    """Models, mapper, validation encoding, optimizer and any checkpoint to resume, in the order
    that keeps the random draws of a run unchanged."""
    tokenizer = teacher.tokenizer
    teacher.model.to(device).eval()
    module = _Trainable(
        student.model, student.num_layers, student.hidden_size, teacher.hidden_size
    ).to(device)
    mapper = LayerMapper(
        cfg.mapping, teacher.num_layers, student.num_layers, seed=seed, genome=genome
    )
    # Callers distilling many students from one data set pass the encoding once.
    enc_train = encoded_train or encode(spec, train, tokenizer, cfg.max_seq_len)
    val = validation
    if cfg.eval_samples and len(val) > cfg.eval_samples:
        val = random.Random(seed).sample(val, cfg.eval_samples)
    enc_val = encode(spec, val, tokenizer, cfg.max_seq_len)
    opt, sched = make_optimizer(module, cfg, cfg.steps)
    state = TrainState()
    ckpt = Path(checkpoint_dir) / "distill.pt" if checkpoint_dir else None
    best = resume_checkpoint(ckpt, module, opt, sched, state)
    mapper.set_state(getattr(state, "mapper", None))
    need_attn = cfg.attention_weight > 0 and cfg.mapping != "none"
    if need_attn:
        _no_attention_dropout(student.model)
    return _DistillRun(
        teacher=teacher,
        student=student,
        spec=spec,
        cfg=cfg,
        device=device,
        seed=seed,
        module=module,
        mapper=mapper,
        enc_train=enc_train,
        val=val,
        enc_val=enc_val,
        opt=opt,
        sched=sched,
        state=state,
        ckpt=ckpt,
        best=best,
        pad_id=pad_id_of(tokenizer),
        need_attn=need_attn,
    )


def _train(run: _DistillRun) -> None:
    """The optimisation loop, from ``run.state.step`` (0, or where a checkpoint left off)."""
    cfg, state = run.cfg, run.state
    # Optimizer steps per epoch: every ``grad_accumulation`` micro-batches, and once more on the
    # epoch's last micro-batches when they do not fill a whole group (so the count below is exact
    # and a resumed or continuing run never waits for a group that cannot fill).
    n_micro = math.ceil(len(run.enc_train) / cfg.batch_size)
    per_epoch = math.ceil(n_micro / cfg.grad_accumulation)
    log.info(
        "distilling %s -> %s on %d %s examples: %d steps, mapping %s",
        run.teacher.shape,
        run.student.shape,
        len(run.enc_train),
        run.spec.name,
        cfg.steps,
        cfg.mapping,
    )
    bar = iter(
        progress(
            range(state.step, cfg.steps), total=cfg.steps - state.step, desc="distill", unit="step"
        )
    )
    stop = False
    window: dict[str, float] = {}
    while state.step < cfg.steps and not stop:
        epoch, offset = divmod(state.step, per_epoch)
        it = batches(
            run.enc_train, cfg.batch_size, pad_id=run.pad_id, shuffle=True, seed=run.seed + epoch
        )
        micro = 0
        for k, (_, batch) in enumerate(it):
            if k < offset * cfg.grad_accumulation:
                continue  # resumed mid-epoch: these batches were already seen
            terms = _backward(run, batch)
            for name, value in terms.items():  # running sums since the last evaluation
                window[name] = window.get(name, 0.0) + value.item()
            window["n"] = window.get("n", 0.0) + 1
            micro += 1
            if micro % cfg.grad_accumulation and k + 1 < n_micro:
                continue
            dist.average_gradients(run.module.parameters())
            torch.nn.utils.clip_grad_norm_(run.module.parameters(), 1.0)
            run.opt.step()
            run.sched.step()
            run.opt.zero_grad(set_to_none=True)
            state.step += 1
            next(bar, None)
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                stop = _evaluate_and_keep(run, window)
                window = {}
            if state.step >= cfg.steps or stop:
                break


def _backward(run: _DistillRun, batch: dict) -> dict[str, torch.Tensor]:
    """Forward teacher and student on this rank's share of one micro-batch and backpropagate its
    share of the loss; returns the unweighted loss terms (logged at the next evaluation)."""
    run.module.train()
    batch, weight = dist.shard(batch)
    batch = {key: v.to(run.device) for key, v in batch.items()}
    mapping = run.mapper() if run.cfg.mapping != "none" else []
    with autocast_for(run.device):
        with torch.no_grad():
            t_out = run.teacher.forward(**_inputs(batch), output_attentions=run.need_attn)
        s_out = run.student.forward(**_inputs(batch), output_attentions=run.need_attn)
        terms = kd_losses(run.spec, run.cfg, mapping, s_out, t_out, batch, run.module)
        loss = weighted(terms, run.cfg) * (weight / run.cfg.grad_accumulation)
    if not torch.isfinite(loss):
        raise EdgecError(
            f"distillation loss became {loss.item()} at step {run.state.step}; "
            "lower the learning rate"
        )
    loss.backward()
    return terms


def _evaluate_and_keep(run: _DistillRun, window: dict[str, float]) -> bool:
    """Evaluate, keep the weights if best so far, checkpoint; True when early stopping says stop."""
    state, metric = run.state, run.spec.main_metric
    # the loss terms: their mean over the micro-batches since the last evaluation (and over the
    # ranks' shares of them)
    n = window.pop("n", 1.0)
    losses = {k: round(v, 5) for k, v in dist.mean({k: v / n for k, v in window.items()}).items()}
    # rank 0 evaluates; every rank records the same result and keeps the same best weights
    value = dist.on_main(
        lambda: _evaluate(run.student.model, run.spec, run.val, run.enc_val, run.pad_id, run.device)
    )
    state.history.append({"step": state.step, "losses": losses, **value})
    log.info(
        "step %d: %s, validation %s %.4f",
        state.step,
        ", ".join(f"{k} {v:.4f}" for k, v in losses.items()),
        metric,
        value[metric],
    )
    if improved(metric, value[metric], state.best):
        state.best, state.best_step, state.bad_evals = value[metric], state.step, 0
        run.best = {k: v.detach().cpu().clone() for k, v in run.module.state_dict().items()}
    else:
        state.bad_evals += 1
    state.mapper = run.mapper.state()  # type: ignore[attr-defined]
    save_checkpoint(run.ckpt, run.module, run.opt, run.sched, state, run.best)
    patience = run.cfg.early_stopping_patience
    if patience and state.bad_evals >= patience:
        log.info("early stop at step %d", state.step)
        return True
    return False


def _summary(run: _DistillRun, start: float, genome: list[int] | None) -> dict:
    """The metrics :func:`distill` returns."""
    state, cfg = run.state, run.cfg
    best_eval = next((h for h in state.history if h["step"] == state.best_step), {})
    return {
        "best_validation": {k: v for k, v in best_eval.items() if k not in ("step", "losses")},
        "best_step": state.best_step,
        "steps": state.step,
        "history": state.history,
        "train_examples": len(run.enc_train),
        "wall_s": round(time.perf_counter() - start, 1),
        "device": str(run.device),
        **dist.describe(),
        "mapping": cfg.mapping if cfg.mapping != "ga" else list(genome or []),
    }


def _no_attention_dropout(model: nn.Module) -> None:
    """Switch off dropout on attention probabilities: Hugging Face models return the
    probabilities *after* dropout, so with it the attention KL compares the teacher with a
    randomly zeroed and rescaled copy, a biased target."""
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and name.endswith(_ATTN_DROPOUT) and module.p:
            module.p = 0.0
            count += 1
        if isinstance(getattr(module, "attention_dropout", None), float):  # llama-style
            module.attention_dropout = 0.0
    if count:
        log.info("attention KD: dropout on attention probabilities off (%d modules)", count)


_ATTN_DROPOUT = ("attention.self.dropout", "attn.attn_dropout", "attn.dropout")


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def _evaluate(model, spec, val, enc_val, pad_id, device) -> dict:
    pred = predict(model, spec, enc_val, pad_id=pad_id, device=device, desc="validation")
    return score(spec, val, enc_val, pred)
