"""Training the supernet by distillation, and the inherited-weight accuracy of its subnets.

Every step distils the frozen teacher into ``sandwich`` subnets at once (in-place distillation
with the sandwich rule of BigNAS/OFA: the largest, the smallest, then random ones), each with
logit KD plus NAS-BERT's block-wise term: every kept layer's output learns the output of the
teacher layer it stands for (the teacher's states restricted to the subnet's leading hidden
dimensions, which are the teacher's most important ones). Gradients of all the subnets are
accumulated into the shared weights, then one optimizer step. Under torchrun every rank runs
the same sandwich on its share of the global batch and the gradients are averaged
(:mod:`toolchain.distributed`); rank 0 alone writes checkpoints.

Checkpoints (weights, optimizer, schedule, step, RNG and the current search space) are written
every ``checkpoint_every`` steps; a run that finds one resumes from it.

Example::

    teacher = frozen_teacher(supernet)       # before any training
    result = train_supernet(supernet, teacher, spec, train, cfg, steps=1000, checkpoint=ckpt)
    scores = SubnetScorer(supernet, spec, validation[:512])
    scores(Arch.parse("L[1,3,5]:H256:A8:F768"))   # accuracy with inherited weights
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toolchain import distributed as dist
from toolchain.config import SearchConfig
from toolchain.data.encode import batches, encode
from toolchain.data.tasks import TaskSpec
from toolchain.distill import losses as L
from toolchain.errors import EdgecError
from toolchain.evaluate.evaluate import pad_id_of, score
from toolchain.log import progress
from toolchain.models.finetune import autocast_for, make_optimizer, seed_everything
from toolchain.nas.space import Arch, SearchSpace
from toolchain.nas.supernet import SuperNet

log = logging.getLogger(__name__)


def sandwich(space: SearchSpace, n: int, rng: random.Random) -> list[Arch]:
    """The subnets of one step: largest, smallest, then ``n - 2`` random ones."""
    fixed = [space.largest(), space.smallest()]
    return fixed[:n] + [space.sample(rng) for _ in range(max(0, n - 2))]


def subnet_loss(
    supernet: SuperNet, arch: Arch, batch: dict, t_logits, t_states, spec: TaskSpec, cfg
) -> torch.Tensor:
    """Logit KD + ``hidden_weight`` x block-wise hidden-state MSE of one subnet on one batch."""
    supernet.set_active(arch)
    out = supernet(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    mask = batch["attention_mask"]
    token_level = spec.kind == "token-classification"
    kind = "mse" if spec.kind == "regression" else "kl"
    loss = L.logit_kd(
        out.logits,
        t_logits,
        temperature=cfg.temperature,
        kind=kind,
        mask=mask if token_level else None,
    )
    if cfg.hidden_weight:
        h = arch.hidden
        pairs = [(out.hidden_states[0], t_states[0])]
        pairs += [(out.hidden_states[j + 1], t_states[i + 1]) for j, i in enumerate(arch.layers)]
        block = sum(L.hidden_mse(s, t[..., :h], mask) for s, t in pairs) / len(pairs)
        loss = loss + cfg.hidden_weight * block
    return loss


def frozen_teacher(supernet: SuperNet) -> torch.nn.Module:
    """A frozen copy of the supernet's weights as they are now (before training: the teacher,
    units ordered as the supernet's)."""
    teacher = copy.deepcopy(supernet.model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def train_supernet(
    supernet: SuperNet,
    teacher: torch.nn.Module,
    spec: TaskSpec,
    train: list,
    cfg: SearchConfig,
    *,
    steps: int,
    seed: int = 0,
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
    after_step: dict[int, Callable[[SuperNet], dict]] | None = None,
) -> dict:
    """Train ``supernet`` for ``steps`` against ``teacher`` (:func:`frozen_teacher`).

    ``after_step`` maps a step to a function run once right after it (e.g. pruning the search
    space); what it returns is kept in the result and the checkpoint, so a resumed run neither
    repeats it nor loses it.

    Returns:
        ``{"steps", "wall_s", "loss_history": [[step, mean loss over the subnets], ...],
        "events": {step: what the after_step function returned}}``.
    """
    if not train:
        raise EdgecError(f"{spec.name}: supernet training needs training examples")
    seed_everything(seed)
    supernet.to(device)
    teacher = teacher.to(device).eval()
    enc = encode(spec, train, supernet.adapter.tokenizer, cfg.max_seq_len)
    pad_id = pad_id_of(supernet.adapter.tokenizer)
    opt, sched = make_optimizer(supernet.model, cfg, steps)
    run = _start(supernet, opt, sched, checkpoint, seed)
    per_epoch = math.ceil(len(enc) / cfg.batch_size)
    started = time.perf_counter()
    bar = iter(progress(range(run.state["step"], steps), desc="supernet", unit="step"))
    supernet.train()
    while run.state["step"] < steps:
        epoch, offset = divmod(run.state["step"], per_epoch)
        it = batches(enc, cfg.batch_size, pad_id=pad_id, shuffle=True, seed=seed + epoch)
        for k, (_, batch) in enumerate(it):
            if k < offset:  # resumed mid-epoch: skip the batches already trained on
                continue
            total = _train_step(run, teacher, batch, spec, cfg, device)
            run.state["step"] += 1
            run.window.append(total)
            next(bar, None)
            _end_step(run, cfg, steps, after_step)
            if run.state["step"] >= steps:
                break
    supernet.eval()
    return {
        "steps": run.state["step"],
        "wall_s": round(time.perf_counter() - started, 1),
        "loss_history": run.state["loss_history"],
        "events": run.state["events"],
    }


@dataclass
class _Run:
    """What the training loop carries from step to step; ``state`` is what checkpoints keep."""

    supernet: SuperNet
    opt: torch.optim.Optimizer
    sched: Any
    rng: random.Random
    checkpoint: Path | None
    state: dict
    window: list[float] = field(default_factory=list)  # step losses since the last record

    def save(self) -> None:
        self.state["rng"] = self.rng.getstate()
        _save(self.checkpoint, self.supernet, self.opt, self.sched, self.state)


def _start(supernet: SuperNet, opt, sched, checkpoint: Path | None, seed: int) -> _Run:
    """Fresh loop state, or the checkpoint's (weights, optimizer, schedule, step and RNG)."""
    state = {"step": 0, "loss_history": [], "rng": None, "events": {}}
    if checkpoint is not None and checkpoint.is_file():
        state = {**state, **_resume(checkpoint, supernet, opt, sched)}
    rng = random.Random(seed * 7919 + 1)
    if state.get("rng") is not None:
        rng.setstate(_tuple(state["rng"]))
    return _Run(supernet, opt, sched, rng, checkpoint, state)


def _train_step(
    run: _Run, teacher: torch.nn.Module, batch: dict, spec: TaskSpec, cfg: SearchConfig, device
) -> float:
    """One optimizer step over the sandwich subnets; returns their mean loss."""
    supernet = run.supernet
    batch, weight = dist.shard(batch)
    batch = {key: v.to(device) for key, v in batch.items()}
    inputs = {key: v for key, v in batch.items() if key != "labels"}
    with torch.no_grad(), autocast_for(torch.device(device)):
        t_out = teacher(**inputs, output_hidden_states=True)

    def loss_of(arch: Arch) -> torch.Tensor:
        return subnet_loss(supernet, arch, batch, t_out.logits, t_out.hidden_states, spec, cfg)

    return sandwich_step(run, loss_of, weight, cfg, device)


def sandwich_step(
    run: _Run,
    loss_of: Callable[[Arch], torch.Tensor | None],
    weight: float,
    cfg: SearchConfig,
    device,
    what: str = "supernet",
) -> float:
    """One optimizer step over the sandwich subnets of ``run``: each subnet's loss (None: none
    to train) scaled by ``weight`` (this rank's share of the batch), gradients accumulated into
    the shared weights, averaged over the ranks, clipped; returns the subnets' mean loss."""
    supernet, total = run.supernet, 0.0
    for arch in sandwich(supernet.space, cfg.sandwich, run.rng):
        with autocast_for(torch.device(device)):
            loss = loss_of(arch)
        if loss is None:
            continue
        if not torch.isfinite(loss):
            raise EdgecError(
                f"{what} loss became {loss.item()} at step {run.state['step']} "
                f"(subnet {arch}); lower search.learning_rate"
            )
        # gradients of all the subnets accumulate into the shared weights
        (loss * (weight / cfg.sandwich)).backward()
        total += loss.item() / cfg.sandwich
    dist.average_gradients(supernet.model.parameters())
    torch.nn.utils.clip_grad_norm_(supernet.model.parameters(), 1.0)
    run.opt.step()
    run.sched.step()
    run.opt.zero_grad(set_to_none=True)
    return total


def _end_step(
    run: _Run,
    cfg: SearchConfig,
    steps: int,
    after_step: dict[int, Callable[[SuperNet], dict]] | None,
) -> None:
    """After a step: its hook (once, saved at once), the loss record and the checkpoint."""
    step, state = run.state["step"], run.state
    hook = (after_step or {}).get(step)
    if hook is not None and str(step) not in state["events"]:
        state["events"][str(step)] = hook(run.supernet)
        run.save()  # so that a resumed run does not repeat the hook
        run.supernet.train()
    if step % 50 == 0 or step == steps:
        state["loss_history"].append([step, round(sum(run.window) / len(run.window), 5)])
        run.window = []
    if run.checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == steps):
        run.save()


def _save(path: Path | None, supernet, opt, sched, state: dict) -> None:
    if path is None or not dist.is_main():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "model": supernet.model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "space": supernet.space.as_dict(),
            "state": {**state, "rng": _lists(state["rng"])},
        },
        tmp,
    )
    tmp.replace(path)


def _resume(path: Path, supernet, opt, sched) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    supernet.model.load_state_dict(data["model"])
    supernet.space = SearchSpace.from_dict(data["space"])
    opt.load_state_dict(data["optimizer"])
    sched.load_state_dict(data["scheduler"])
    log.info("resuming supernet training at step %d (%s)", data["state"]["step"], path)
    return data["state"]


def _lists(rng_state):
    """random.getstate() as nested lists (torch.load's weights_only takes no tuples of ints
    mixed with None reliably; lists of ints it does)."""
    if rng_state is None:
        return None
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def _tuple(saved):
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


class SubnetScorer:
    """Accuracy (the task's main metric) of subnets with inherited weights on a fixed validation
    subset (NAS-BERT's performance approximation); results cached per arch."""

    def __init__(
        self,
        supernet: SuperNet,
        spec: TaskSpec,
        examples: list,
        *,
        max_len: int = 128,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ):
        self.supernet, self.spec, self.examples = supernet, spec, examples
        self.encoded = encode(spec, examples, supernet.adapter.tokenizer, max_len)
        self.pad_id = pad_id_of(supernet.adapter.tokenizer)
        self.batch_size, self.device = batch_size, device
        self.cache: dict[Arch, float] = {}

    @torch.no_grad()
    def __call__(self, arch: Arch) -> float:
        if arch not in self.cache:
            self.supernet.eval().to(self.device)
            self.supernet.set_active(arch)
            logits = [None] * len(self.encoded)
            for idx, batch in batches(self.encoded, self.batch_size, pad_id=self.pad_id):
                batch = {k: v.to(self.device) for k, v in batch.items() if k != "labels"}
                out = self.supernet(**batch).logits.float()
                for row, i in enumerate(idx):
                    n = int(batch["attention_mask"][row].sum())
                    logits[i] = (out[row, :n] if out.dim() == 3 else out[row]).cpu().numpy()
            metrics = score(self.spec, self.examples, self.encoded, {"logits": logits})
            self.cache[arch] = float(metrics[self.spec.main_metric])
        return self.cache[arch]
