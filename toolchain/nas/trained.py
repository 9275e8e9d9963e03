"""The trained supernet of a search: built from the teacher (importance-ordered), trained by
block-wise distillation with dominated choices pruned after the first round, and kept in a cache
keyed by everything its training depends on, so a later search that would train the same one
(for any device) loads it instead.

The cache key is the teacher's and the data's files, the task and data settings, the seed and
every :class:`~toolchain.config.SearchConfig` field not marked search-only
(:meth:`SearchConfig.supernet_fields`): a field added later is part of the key unless marked.
Not the device: pruning compares multiply-accumulates, the same on every device.

Example::

    net = prepare_supernet(teacher, spec, train, val, cfg, seed=0, device="cpu",
                           checkpoint=ckpt, cache_dir=cache_folder(cache, ...))
    net.scorer(net.supernet.space.largest())      # accuracy with inherited weights
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from toolchain import distributed as dist
from toolchain.config import DataConfig, SearchConfig
from toolchain.data.tasks import TaskSpec
from toolchain.distill.importance import importance
from toolchain.models.finetune import seed_everything
from toolchain.nas.search import prune_space
from toolchain.nas.supernet import SUPERNET_FILE, SuperNet
from toolchain.nas.train import SubnetScorer, frozen_teacher, train_supernet
from toolchain.pipeline import _jsonable, hash_path

log = logging.getLogger(__name__)


@dataclass
class TrainedSupernet:
    """A supernet ready to search: its scorer, and how it was trained (or where it came from)."""

    supernet: SuperNet
    scorer: SubnetScorer
    trained: dict  # steps, losses, ...; "cached": the cache folder when loaded from one
    pruning: dict | None
    train_s: float


def cache_folder(
    cache: str | Path | None,
    *,
    inputs: tuple[Path, ...],
    spec: TaskSpec,
    data_cfg: DataConfig,
    cfg: SearchConfig,
    seed: int,
) -> Path | None:
    """The folder of this search's trained supernet in ``cache`` (None without a cache)."""
    if cache is None:
        return None
    ident = {
        "inputs": [hash_path(f) for f in inputs],
        "task": spec,
        "data": data_cfg,
        "train": cfg.supernet_fields(),
        "seed": seed,
        "prune_cost": "macs",
    }
    text = json.dumps(_jsonable(ident), sort_keys=True, default=str)
    return Path(cache) / f"supernet-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def prepare_supernet(
    teacher,
    spec: TaskSpec,
    train: list,
    val: list,
    cfg: SearchConfig,
    *,
    seed: int,
    device,
    checkpoint: Path,
    cache_dir: Path | None = None,
    agnostic: Path | None = None,
) -> TrainedSupernet:
    """The trained supernet: loaded from ``cache_dir`` when it holds one, else trained (resuming
    from ``checkpoint``) and, with a ``cache_dir``, stored there (whole, then renamed).

    ``agnostic``: the folder of a task-agnostic supernet (:mod:`toolchain.nas.agnostic`); the
    supernet is then that one with the task's head, fine-tuned ``cfg.proxy_steps`` against the
    task teacher, instead of the task teacher trained ``cfg.supernet_steps``."""
    if cache_dir is not None and (cache_dir / SUPERNET_FILE).is_file():
        supernet = SuperNet.load(cache_dir)  # trained before, with its pruned space
        meta = json.loads((cache_dir / SUPERNET_FILE).read_text())
        trained = {**meta["trained"], "cached": str(cache_dir)}
        scorer = SubnetScorer(supernet, spec, val, max_len=cfg.max_seq_len, device=device)
        log.info("supernet: the one trained before (%s)", cache_dir)
        return TrainedSupernet(supernet, scorer, trained, meta.get("pruning"), 0.0)
    t0 = time.perf_counter()
    if agnostic is not None:  # the agnostic supernet, given the task's head
        from toolchain.nas.agnostic import adapt_to_task

        seed_everything(seed)
        supernet, frozen = adapt_to_task(agnostic, teacher, spec)
        steps = cfg.proxy_steps
    else:
        sample = random.Random(seed).sample(train, min(512, len(train)))
        scores = importance(teacher, spec, sample, max_len=cfg.max_seq_len, device=device)
        supernet = SuperNet.from_teacher(teacher, scores)
        frozen, steps = frozen_teacher(supernet), cfg.supernet_steps
    scorer = SubnetScorer(supernet, spec, val, max_len=cfg.max_seq_len, device=device)
    first = int(steps * cfg.prune_after)
    trained = train_supernet(
        supernet,
        frozen,
        spec,
        train,
        cfg,
        steps=steps,
        seed=seed,
        checkpoint=checkpoint,
        device=device,
        after_step=_pruning(scorer, cfg, seed, first, steps),
    )
    if agnostic is not None:
        trained["agnostic"] = str(agnostic)
    pruning = trained.pop("events", {}).get(str(first))
    net = TrainedSupernet(supernet, scorer, trained, pruning, round(time.perf_counter() - t0, 1))
    if cache_dir is not None and dist.is_main():
        _store(net, cache_dir)
    return net


def _pruning(
    scorer: SubnetScorer, cfg: SearchConfig, seed: int, first: int, steps: int
) -> dict | None:
    """``{step: prune}``: drop dominated choices after the first round (None when off)."""
    if not 0 < first < steps:
        return None

    def prune(net) -> dict:
        # cost in MACs, not the device's latency: wider is dearer on every device, and a
        # device-free supernet serves builds for every device (see cache_folder)
        # rank 0 scores the choices; every rank trains on in the same pruned space
        space, report = dist.on_main(
            lambda: prune_space(
                net.space,
                scorer,
                lambda a: a.macs(cfg.max_seq_len),
                margin=cfg.prune_margin,
                seed=seed,
            )
        )
        scorer.cache.clear()  # the weights move on: first-round scores go stale
        log.info("search space pruned after step %d: %s", first, space.describe())
        before, net.space = net.space.describe(), space
        return {"before": before, "after": space.describe(), "choices": report}

    return {first: prune}


def _store(net: TrainedSupernet, folder: Path) -> None:
    """Written whole into a temporary folder, then renamed: never half a supernet."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    net.supernet.save(tmp, extra={"trained": net.trained, "pruning": net.pruning})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


__all__ = ["TrainedSupernet", "cache_folder", "prepare_supernet"]
