"""BERT-of-Theseus (Xu et al. 2020): progressive module replacing.

The teacher's layers are cut into ``n`` blocks of ``k = L / n`` layers (the predecessor modules).
Each block gets one successor layer, initialised as a copy of the teacher's layer ``i`` for
successor ``i`` (the first ``n`` layers, as the authors' code does). At every training step each
block is replaced by its successor with probability ``p``. The forward pass runs through the mixed
stack, and only the successors, the embeddings and the task head learn; the predecessors are
frozen. ``p`` rises linearly from ``replace_start`` to 1 over the replacing phase (the paper's
curriculum, ``p = min(1, b + k t)``). The last ``successor_fraction`` of the steps fine-tune the
successor stack alone.

The loss is the task loss only. Theseus needs no distillation loss, which is the point of the
method. The model kept is the successor stack with the best validation score, and it is saved as
a plain ``n``-layer model of the teacher's class (``from_pretrained`` loads it).

Written here: no maintained library implements module replacing (the authors' code is a fork of
an old ``transformers``). The mixed stack is made by swapping the model's own layer list, so any
encoder family the adapters know runs unchanged.

Example::

    result = theseus(teacher, spec, train, validation, DistillConfig(method="theseus", steps=2000),
                     layers=3, out_dir="runs/theseus")
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from pathlib import Path

import torch
from torch import nn

from toolchain.config import DistillConfig, TheseusConfig
from toolchain.data.encode import batches, encode
from toolchain.data.tasks import TaskSpec
from toolchain.errors import ConfigError, EdgecError
from toolchain.evaluate.evaluate import pad_id_of
from toolchain.log import progress
from toolchain.models.adapters import ModelAdapter, adapter_for
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


def replacing_steps(steps: int, cfg: TheseusConfig) -> int:
    """Steps of the replacing phase (the rest fine-tune the successors alone)."""
    return round(steps * (1.0 - cfg.successor_fraction))


def replace_probability(step: int, steps: int, cfg: TheseusConfig) -> float:
    """The probability that a block runs its successor at ``step`` (0-based) of ``steps``."""
    phase = replacing_steps(steps, cfg)
    if step >= phase:
        return 1.0
    return cfg.replace_start + (1.0 - cfg.replace_start) * step / phase


class TheseusModel(nn.Module):
    """The teacher's model with its layer list swappable between predecessor blocks and
    successor layers.

    Args:
        teacher: the fine-tuned teacher (copied; the original is left alone).
        successors: ``n``, which must divide the teacher's layer count.
    """

    def __init__(self, teacher: ModelAdapter, successors: int):
        super().__init__()
        if successors < 1 or teacher.num_layers % successors:
            raise ConfigError(
                f"BERT-of-Theseus replaces blocks of equal size: {successors} successor layers "
                f"do not divide the teacher's {teacher.num_layers} layers; choose a divisor "
                f"(--student-shape L<n>:...)",
                key="distill.student_shape",
            )
        self.model = copy.deepcopy(teacher.model)
        self.family = teacher.family
        layers = adapter_for(self.model).layers()
        self._parent, self._attr = _owner(self.model, layers)
        k = teacher.num_layers // successors
        self.block = k
        self.predecessors = nn.ModuleList(list(layers))
        for p in self.predecessors.parameters():
            p.requires_grad_(False)
        self.successors = nn.ModuleList(copy.deepcopy(layers[i]) for i in range(successors))
        for p in self.successors.parameters():
            p.requires_grad_(True)
        self.use([True] * successors)

    def use(self, choices: list[bool]) -> None:
        """Run successor ``i`` where ``choices[i]``, else predecessor block ``i``."""
        stack: list[nn.Module] = []
        for i, succ in enumerate(choices):
            if succ:
                stack.append(self.successors[i])
            else:
                stack.extend(self.predecessors[i * self.block : (i + 1) * self.block])
        setattr(self._parent, self._attr, nn.ModuleList(stack))

    def compact(self) -> nn.Module:
        """The successor-only model (a copy), its config set to the successor depth."""
        self.use([True] * len(self.successors))
        model = copy.deepcopy(self.model)
        model.config.num_hidden_layers = len(self.successors)
        return model

    def state_dict(self, *args, **kwargs):  # the successor stack is the canonical state
        self.use([True] * len(self.successors))
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state, *args, **kwargs):
        self.use([True] * len(self.successors))
        return super().load_state_dict(state, *args, **kwargs)


def _owner(model: nn.Module, layers: nn.Module) -> tuple[nn.Module, str]:
    for name, module in model.named_modules():
        if module is layers:
            parent, _, attr = name.rpartition(".")
            return model.get_submodule(parent) if parent else model, attr
    raise EdgecError("cannot find the model's layer list")


def theseus(
    teacher: ModelAdapter,
    spec: TaskSpec,
    train: list,
    validation: list,
    cfg: DistillConfig,
    *,
    layers: int,
    out_dir: str | Path,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    device: torch.device | str | None = None,
) -> tuple[ModelAdapter, dict]:
    """Compress ``teacher`` into ``layers`` successor layers by module replacing; save the
    successor model with the teacher's tokenizer into ``out_dir``.

    Returns:
        The successor model and ``{"best_validation", "best_step", "steps", "history",
        "schedule", "wall_s", "device", "method"}``.
    """
    if spec.kind not in ("classification", "regression", "token-classification"):
        raise ConfigError(
            f"BERT-of-Theseus here compresses encoders for classification, regression and token "
            f"tasks, not {spec.kind}: use distill.method kd",
            key="distill.method",
        )
    if not train or not validation:
        raise EdgecError(f"{spec.name}: Theseus needs training and validation examples")
    device = pick_device(str(device) if device else None)
    seed_everything(seed)
    tc = cfg.theseus
    module = TheseusModel(teacher, layers).to(device)
    tokenizer = teacher.tokenizer
    pad = pad_id_of(tokenizer)
    enc_train = encode(spec, train, tokenizer, cfg.max_seq_len)
    val = validation
    if cfg.eval_samples and len(val) > cfg.eval_samples:
        val = random.Random(seed).sample(val, cfg.eval_samples)
    enc_val = encode(spec, val, tokenizer, cfg.max_seq_len)
    opt, sched = make_optimizer(module, cfg, cfg.steps)
    state = TrainState()
    ckpt = Path(checkpoint_dir) / "theseus.pt" if checkpoint_dir else None
    best = resume_checkpoint(ckpt, module, opt, sched, state)
    gen = torch.Generator().manual_seed(seed)
    gen_state = getattr(state, "generator", None)
    if gen_state is not None:
        gen.set_state(torch.tensor(gen_state, dtype=torch.uint8))
    per_epoch = math.ceil(len(enc_train) / cfg.batch_size)
    start = time.perf_counter()
    log.info(
        "BERT-of-Theseus: %d teacher layers -> %d successors (blocks of %d), %d steps "
        "(replacing until step %d, from p=%.2f)",
        teacher.num_layers, layers, module.block, cfg.steps,
        replacing_steps(cfg.steps, tc), tc.replace_start,
    )  # fmt: skip
    bar = iter(progress(range(state.step, cfg.steps), total=cfg.steps - state.step,
                        desc="theseus", unit="step"))  # fmt: skip
    while state.step < cfg.steps:
        epoch, offset = divmod(state.step, per_epoch)
        it = batches(enc_train, cfg.batch_size, pad_id=pad, shuffle=True, seed=seed + epoch)
        for k, (_, batch) in enumerate(it):
            if k < offset:
                continue
            p = replace_probability(state.step, cfg.steps, tc)
            choices = (torch.rand(layers, generator=gen) < p).tolist()
            module.use(choices)
            module.train()
            batch = {key: v.to(device) for key, v in batch.items()}
            with autocast_for(device):
                loss = module.model(**batch).loss
            if not torch.isfinite(loss):
                raise EdgecError(
                    f"Theseus loss became {loss.item()} at step {state.step}; lower the "
                    "learning rate"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            next(bar, None)
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                value = _evaluate(module, spec, val, enc_val, pad, device, state, loss, p)
                if improved(spec.main_metric, value, state.best):
                    state.best, state.best_step = value, state.step
                    best = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
                state.generator = gen.get_state().tolist()  # type: ignore[attr-defined]
                save_checkpoint(ckpt, module, opt, sched, state, best)
            if state.step >= cfg.steps:
                break
    if best is not None:
        module.load_state_dict(best)
    student = adapter_for(module.compact().to("cpu"), tokenizer=tokenizer)
    student.save(out_dir)
    best_eval = next((h for h in state.history if h["step"] == state.best_step), {})
    return student, {
        "method": "theseus",
        "best_validation": {k: v for k, v in best_eval.items() if k not in ("step", "loss", "p")},
        "best_step": state.best_step,
        "steps": state.step,
        "history": state.history,
        "schedule": {
            "replace_start": tc.replace_start,
            "replacing_steps": replacing_steps(cfg.steps, tc),
            "successor_steps": cfg.steps - replacing_steps(cfg.steps, tc),
            "block": module.block,
            "successor_init": "teacher layers 0..n-1",
        },
        "train_examples": len(enc_train),
        "wall_s": round(time.perf_counter() - start, 1),
        "device": str(device),
        "mapping": "theseus",
    }


@torch.no_grad()
def _evaluate(module, spec, val, enc_val, pad, device, state, loss, p) -> float:
    from toolchain.evaluate.evaluate import predict, score

    module.use([True] * len(module.successors))
    pred = predict(module.model, spec, enc_val, pad_id=pad, device=device, desc="validation")
    result = score(spec, val, enc_val, pred)
    state.history.append({"step": state.step, "loss": round(loss.item(), 5), "p": round(p, 4),
                          **result})  # fmt: skip
    log.info("step %d: loss %.4f, p %.3f, validation (successors only) %s %.4f", state.step,
             loss.item(), p, spec.main_metric, result[spec.main_metric])  # fmt: skip
    return result[spec.main_metric]
