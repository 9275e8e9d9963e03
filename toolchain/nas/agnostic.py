"""The task-agnostic supernet: trained once, block-wise, on unlabelled text from the pretrained
(not fine-tuned) teacher; every task and device then takes its subnets (NAS-BERT, Xu et al.
2021: block-wise training and the performance approximation).

Training (:func:`train_agnostic`):

- the supernet is the pretrained encoder (no task head) with its units ordered by an importance
  measured without labels (:func:`label_free_importance`), so the largest subnet is the teacher;
- the teacher's layers are cut into blocks of ``agnostic_block_layers`` consecutive layers; the
  embeddings are a block of their own;
- every step samples subnets per the search space (the sandwich: largest, smallest, random
  ones); in every block, the layers the subnet keeps there take the *teacher's* hidden state
  entering the block (its leading ``hidden`` dimensions) and learn to reproduce the teacher's
  state leaving it (MSE); where a subnet keeps all of a block's layers, each kept layer stands for
  the teacher layer of its index, and its attention probabilities also learn those of the
  teacher's leading heads (KL, weight ``agnostic_attention_weight``). A block's input comes from
  the teacher, so its loss reaches its own weights only: the blocks train independently;
- dropping every layer of a block is NAS-BERT's identity operation (nothing to train there).

Downstream (:func:`adapt_to_task`, NAS-BERT's performance approximation): the supernet gets the
task's head and a short fine-tune of the whole supernet (``proxy_steps`` of sandwich steps, logit
KD plus per-layer hidden-state KD from the task teacher,
:func:`toolchain.nas.train.train_supernet`), after which subnets are scored with inherited
weights on the task's validation subset. The task teacher is fine-tuned from the same pretrained
model; its units are put in the supernet's order (the same function) so that its hidden states
line up with the supernet's, and its pooler and classifier (reordered likewise) start the
supernet's head: a better start than a random head.

The units are ordered by an importance measured without labels
(:func:`toolchain.distill.importance.label_free_importance`): the Taylor scores need a task loss.

Example::

    teacher = load_model("default", head="base")
    supernet = agnostic_supernet(teacher, texts[:512], cfg)
    train_agnostic(supernet, texts, cfg, steps=2000, checkpoint=Path("ckpt.pt"))
    supernet.save("runs/agnostic", extra=agnostic_meta(...))
    task_net, task_teacher = adapt_to_task("runs/agnostic", fine_tuned_teacher, spec)
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import torch

from toolchain import distributed as dist
from toolchain.config import SearchConfig
from toolchain.data.tasks import TaskSpec
from toolchain.data.text import text_batches
from toolchain.distill import losses as L
from toolchain.distill.importance import label_free_importance
from toolchain.distill.init import extract
from toolchain.errors import ConfigError, EdgecError
from toolchain.log import progress
from toolchain.models.adapters import ModelAdapter
from toolchain.models.finetune import autocast_for, make_optimizer, seed_everything
from toolchain.nas.space import Arch, SearchSpace
from toolchain.nas.supernet import SUPERNET_FILE, SuperNet, order_by_importance
from toolchain.nas.train import _end_step, _start, frozen_teacher, sandwich_step

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings"  # the block of the embeddings (a block is otherwise a tuple of layers)


def unit_order(teacher: ModelAdapter, scores: dict) -> dict:
    """The order :func:`order_by_importance` puts the units in, in ``extract``'s terms (stored
    with the supernet, so a task teacher can be put in the same order)."""
    t = teacher.shape

    def desc(values) -> list[int]:
        return [int(i) for i in torch.as_tensor(values).float().argsort(descending=True)]

    return {
        "layers": list(range(t.layers)),
        "hidden": desc(scores["hidden"]),
        "heads": [desc(scores["heads"][i]) for i in range(t.layers)],
        "head_dims": list(range(teacher.head_size)),
        "ffn": [desc(scores["ffn"][i]) for i in range(t.layers)],
    }


def agnostic_supernet(teacher: ModelAdapter, texts: list[str], cfg: SearchConfig, *,
                      device="cpu") -> tuple[SuperNet, dict]:  # fmt: skip
    """The untrained task-agnostic supernet over the pretrained ``teacher`` (a headless BERT
    encoder) and its unit order."""
    if type(teacher.model).__name__ != "BertModel":
        raise ConfigError(
            f"the task-agnostic supernet starts from the pretrained encoder without a head "
            f"(load it with head='base'); got {type(teacher.model).__name__}"
        )
    scores = label_free_importance(teacher, texts, max_len=cfg.max_seq_len, device=device)
    order = unit_order(teacher, scores)
    return SuperNet(order_by_importance(teacher, scores)), order


# -- block-wise training --------------------------------------------------------------------------
def blocks_of(layers: int, per_block: int) -> list:
    """The blocks: the embeddings, then runs of ``per_block`` consecutive layers."""
    runs = [tuple(range(s, min(s + per_block, layers))) for s in range(0, layers, per_block)]
    return [EMBEDDINGS, *runs]


def teacher_pass(teacher: SuperNet, batch: dict) -> tuple[list, list]:
    """The teacher's hidden states (embeddings, then each layer) and attention probabilities."""
    teacher.set_active(teacher.space.largest())
    x = teacher.embed(batch["input_ids"], batch.get("token_type_ids"))
    bias = teacher.mask_bias(batch["input_ids"], batch["attention_mask"], x.dtype)
    states, probs = [x], []
    for i in range(teacher.space.teacher_layers):
        x = teacher.layer(i, x, bias, probs)
        states.append(x)
    return states, probs


def block_loss(
    supernet: SuperNet, arch: Arch, block, batch: dict, t_states: list, t_probs: list,
    attention_weight: float,
) -> torch.Tensor | None:  # fmt: skip
    """The loss of one block of ``arch`` (see the module docstring); None where the subnet keeps
    none of the block's layers (the identity: nothing to train)."""
    supernet.set_active(arch)
    h, mask = arch.hidden, batch["attention_mask"]
    if block == EMBEDDINGS:
        x = supernet.embed(batch["input_ids"], batch.get("token_type_ids"))
        return L.hidden_mse(x, t_states[0][..., :h], mask)
    kept = [i for i in arch.layers if i in block]
    if not kept:
        return None
    x = t_states[block[0]][..., :h]  # the teacher's state entering the block
    bias = supernet.mask_bias(batch["input_ids"], mask, x.dtype)
    whole = len(kept) == len(block)
    probs: list | None = [] if whole and attention_weight else None
    for i in kept:
        x = supernet.layer(i, x, bias, probs)
    loss = L.hidden_mse(x, t_states[block[-1] + 1][..., :h], mask)
    if probs:
        pairs = zip(probs, kept, strict=True)
        kl = [L.attention_kl(p, t_probs[i][:, : arch.heads], mask) for p, i in pairs]
        loss = loss + attention_weight * sum(kl) / len(kl)
    return loss


def train_agnostic(
    supernet: SuperNet,
    texts: list[str],
    cfg: SearchConfig,
    *,
    steps: int,
    seed: int = 0,
    checkpoint: Path | None = None,
    device="cpu",
    blocks: list | None = None,
) -> dict:
    """Block-wise distillation of ``supernet`` (headless, untrained: its weights are the
    teacher's) on ``texts`` for ``steps``; ``blocks``: only these (default: every block of
    ``cfg.agnostic_block_layers`` layers and the embeddings). Checkpoints and resumes like
    :func:`toolchain.nas.train.train_supernet`; under torchrun the ranks share each batch.

    Returns:
        ``{"steps", "wall_s", "loss_history": [[step, mean loss], ...], "blocks"}``.
    """
    if not texts:
        raise EdgecError("the task-agnostic supernet needs unlabelled text")
    seed_everything(seed)
    supernet.to(device)
    teacher = SuperNet(_frozen_adapter(supernet), supernet.space).eval()
    all_blocks = blocks_of(supernet.space.teacher_layers, cfg.agnostic_block_layers)
    blocks = all_blocks if blocks is None else blocks
    opt, sched = make_optimizer(supernet.model, cfg, steps)
    run = _start(supernet, opt, sched, checkpoint, seed)
    started = time.perf_counter()
    bar = iter(progress(range(run.state["step"], steps), desc="agnostic supernet", unit="step"))
    it = text_batches(texts, supernet.adapter.tokenizer, max_len=cfg.max_seq_len,
                      batch_size=cfg.batch_size, seed=seed, skip=run.state["step"])  # fmt: skip
    supernet.train()
    while run.state["step"] < steps:
        batch, weight = dist.shard(next(it))
        batch = {key: v.to(device) for key, v in batch.items()}
        with torch.no_grad(), autocast_for(torch.device(device)):
            t_states, t_probs = teacher_pass(teacher, batch)

        def loss_of(arch: Arch, batch=batch, t_states=t_states, t_probs=t_probs):
            parts = [block_loss(supernet, arch, b, batch, t_states, t_probs,
                                cfg.agnostic_attention_weight) for b in blocks]  # fmt: skip
            parts = [p for p in parts if p is not None]
            return sum(parts) / len(parts) if parts else None

        total = sandwich_step(run, loss_of, weight, cfg, device, "agnostic supernet")
        run.state["step"] += 1
        run.window.append(total)
        next(bar, None)
        _end_step(run, cfg, steps, None)
    supernet.eval()
    return {
        "steps": run.state["step"],
        "wall_s": round(time.perf_counter() - started, 1),
        "loss_history": run.state["loss_history"],
        "blocks": [b if b == EMBEDDINGS else list(b) for b in blocks],
    }


def _frozen_adapter(supernet: SuperNet) -> ModelAdapter:
    """The supernet's weights as they are now, frozen, in an adapter (before training: the
    teacher)."""
    model = frozen_teacher(supernet)
    return type(supernet.adapter)(model, supernet.adapter.tokenizer)


# -- a task's view of the agnostic supernet -------------------------------------------------------
def read_meta(folder: str | Path) -> dict:
    """The ``supernet.json`` of a task-agnostic supernet; refuses any other folder."""
    meta_file = Path(folder) / SUPERNET_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if "order" not in meta:
        raise ConfigError(
            f"{folder} is not a task-agnostic supernet (no unit order in {SUPERNET_FILE}); "
            "train one with search.supernet: agnostic (`edgec build --supernet agnostic`)"
        )
    return meta


def adapt_to_task(folder: str | Path, task_teacher: ModelAdapter, spec: TaskSpec):
    """The agnostic supernet in ``folder`` with the task's head, and the task teacher with its
    units in the supernet's order (a frozen module): what :func:`train_supernet` fine-tunes for
    ``proxy_steps`` (see the module docstring).

    Raises:
        ConfigError: the task teacher's shape differs from the supernet's teacher.
    """
    from toolchain.models.finetune import head_for
    from toolchain.models.loading import load_model

    meta = read_meta(folder)
    adapter = load_model(
        str(folder),
        head=head_for(spec),
        num_labels=spec.num_labels,
        problem_type="regression" if spec.kind == "regression" else None,
        id2label=dict(enumerate(spec.labels)) if spec.labels else None,
    )
    supernet = SuperNet(adapter, SearchSpace.from_dict(meta["space"]))
    if task_teacher.shape != adapter.shape:
        raise ConfigError(
            f"the task teacher ({task_teacher.shape}) is not of the agnostic supernet's teacher "
            f"shape ({adapter.shape}): fine-tune the task teacher from the same pretrained model "
            f"({meta.get('teacher', '?')})"
        )
    with torch.no_grad():
        ordered = extract(task_teacher, task_teacher.shape, meta["order"])
        state = ordered.model.state_dict()
        own = adapter.model.state_dict()
        heads = {k: v for k, v in state.items() if not k.startswith("bert.") or "pooler" in k}
        adapter.model.load_state_dict({**own, **heads})
    teacher = ordered.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return supernet, teacher


__all__ = [
    "adapt_to_task",
    "agnostic_stage",
    "agnostic_supernet",
    "block_loss",
    "blocks_of",
    "label_free_importance",
    "read_meta",
    "train_agnostic",
]


# -- the pipeline stage ---------------------------------------------------------------------------
def agnostic_stage(
    *, teacher: str, data_dir, cfg: SearchConfig, torch_device: str | None = None,
    name: str = "agnostic-supernet",
):  # fmt: skip
    """A pipeline stage training the task-agnostic supernet of the pretrained ``teacher`` on
    ``cfg.agnostic_text`` into ``OUT/supernet`` (a headless Hugging Face directory plus
    ``supernet.json`` with the search space and the unit order). Nothing of a task is in its
    configuration: every task's build finds the same record (``edgec build`` keeps it beside the
    cached teachers)."""
    from toolchain.data.text import source_files, unlabelled_text
    from toolchain.models.loading import resolve_model_path
    from toolchain.pipeline import Stage

    files = [f for src in cfg.agnostic_text for f in source_files(src, data_dir)]
    resolved = resolve_model_path(teacher)
    inputs = (*([resolved] if isinstance(resolved, Path) else []), *files)
    config = {"teacher": teacher, "agnostic": cfg.agnostic_fields(), "rev": 1}

    def run(ctx) -> dict | None:
        from toolchain.models.finetune import pick_device
        from toolchain.models.loading import load_model
        from toolchain.nas.supernet import check_teacher_family

        device = pick_device(torch_device)
        model = load_model(teacher, head="base")
        check_teacher_family(getattr(model.config, "model_type", None), "search.supernet")
        texts = unlabelled_text(cfg.agnostic_text, data_dir)
        rng = random.Random(ctx.seed)
        if len(texts) > cfg.agnostic_max_sentences:
            texts = rng.sample(texts, cfg.agnostic_max_sentences)
        sample = rng.sample(texts, min(512, len(texts)))
        supernet, order = agnostic_supernet(model, sample, cfg, device=device)
        trained = train_agnostic(
            supernet, texts, cfg, steps=cfg.agnostic_steps, seed=ctx.seed,
            checkpoint=ctx.checkpoint_dir / "agnostic.pt", device=device,
        )  # fmt: skip
        if not dist.is_main():
            return None
        facts = {"teacher": teacher, "text": list(cfg.agnostic_text), "sentences": len(texts)}
        supernet.save(ctx.out_dir / "supernet", extra={**facts, "order": order,
                                                       "trained": trained})  # fmt: skip
        return {**facts, **trained, "space": supernet.space.describe(), "supernet": "supernet"}

    return Stage(name, run, config=config, inputs=inputs, distributed=True)
