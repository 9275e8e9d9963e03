"""Data-parallel training on ``torch.distributed``, launched by ``torchrun``.

edgec never launches processes itself: ``torchrun`` (``python -m torch.distributed.run``) starts
one process per rank and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous;
:func:`init` joins them (``gloo`` on CPU; on GPUs ``cpu:gloo,cuda:nccl``, so CUDA tensors go
through NCCL and the rest through gloo, one GPU per local rank). Outside torchrun every helper
here is a no-op for a world of one, so the training loops call them unconditionally.

How a training loop runs on N ranks (teacher fine-tune, distillation with every layer mapping,
KDLSQ, the supernet):

- every rank draws the same global batches (same seed, same order) and takes its contiguous
  share of each (:func:`shard`), so the global batch, the number of optimizer steps and the
  learning-rate schedule are those of one process whatever N is;
- each rank's loss is scaled by its share of the global batch (:func:`shard`'s weight), and the
  gradients are summed over the ranks and divided by N (:func:`average_gradients`) before
  clipping and the optimizer step: for a loss that is a mean over examples (classification,
  regression) the update is the one-process update up to float rounding; for token-level losses
  (token classification, language modelling) the mean over tokens is approximated by a mean over
  the ranks' token means weighted by examples;
- random draws that must agree (RAIL-KD's teacher layers, the supernet's sandwich subnets, the
  GA's population) come from generators seeded alike on every rank and advanced alike;
- validation runs on rank 0 and its result is shared (:func:`on_main`), so every rank keeps the
  same best weights and takes the same early-stopping decision;
- only rank 0 writes: checkpoints, stage outputs and records, reports. The other ranks write
  into a scratch folder that is deleted (:class:`toolchain.pipeline.RunDir`).

Written by hand, not with ``DistributedDataParallel``: DDP synchronises inside the backward pass
and expects the same parameters to be used by one backward per step, whereas the supernet runs a
backward per sandwich subnet over changing parameter subsets and distillation accumulates over
micro-batches; one coalesced all-reduce per optimizer step (what DDP does under ``no_sync``)
covers every loop alike.

Example::

    from toolchain import distributed as dist
    dist.init()                                   # no-op outside torchrun
    local, weight = dist.shard(batch)
    (model(**local).loss * weight).backward()
    dist.average_gradients(model.parameters())
    opt.step()
    if dist.is_main():
        torch.save(model.state_dict(), "ckpt.pt")
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from toolchain.errors import EdgecError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

# Ranks wait for rank 0 between training stages (search, export, measurement run on rank 0
# alone), so the collectives' timeout must outlast the longest such stage.
DEFAULT_TIMEOUT_S = 6 * 3600
_state: dict[str, Any] = {"control": None, "alone": 0}


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting ``RANK``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _dist():
    import torch.distributed as dist

    return dist


def _initialised() -> bool:
    # no process group without torch.distributed imported: the light paths (the CLI's help, the
    # pipeline) never import torch to find that out
    if "torch.distributed" not in sys.modules:
        return False
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def active() -> bool:
    """Whether a process group of more than one rank is initialised and this code runs with
    the others (not inside :func:`on_main`, where rank 0 works alone)."""
    return _initialised() and _dist().get_world_size() > 1 and not _state["alone"]


def world_size() -> int:
    """The ranks training together: 1 outside torchrun and inside :func:`on_main`."""
    return _dist().get_world_size() if _initialised() and not _state["alone"] else 1


def rank() -> int:
    return _dist().get_rank() if _initialised() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if active() else 0


def is_main() -> bool:
    """Rank 0 (the only rank that writes), or a process that is not distributed."""
    return rank() == 0


def backend() -> str:
    """gloo on CPU; gloo for CPU tensors and NCCL for CUDA tensors where torch has both."""
    import torch

    dist = _dist()
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init(timeout_s: float | None = None) -> bool:
    """Join the process group torchrun set up; returns whether this process is distributed.

    A no-op outside torchrun and when already initialised. The timeout
    (``EDGEC_DIST_TIMEOUT_S``, default 6 h) bounds how long a rank waits for another.
    """
    dist = _dist()
    if not launched():
        return False
    if dist.is_initialized():
        return world_size() > 1
    if not dist.is_available():
        raise EdgecError("this torch build has no torch.distributed: run without torchrun")
    timeout = datetime.timedelta(
        seconds=timeout_s or float(os.environ.get("EDGEC_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    )
    chosen = backend()
    if "nccl" in chosen:
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=chosen, timeout=timeout, store=_store(timeout),
                            rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]))  # fmt: skip
    # barriers and shared objects go through gloo: an NCCL barrier would hold a GPU stream and
    # trip NCCL's own watchdog while rank 0 runs a long stage alone
    _state["control"] = dist.new_group(backend="gloo", timeout=timeout)
    log.info(
        "distributed: rank %d of %d (%s, local rank %s)",
        rank(),
        world_size(),
        chosen,
        os.environ.get("LOCAL_RANK", 0),
    )
    return world_size() > 1


def _store(timeout: datetime.timedelta):
    """The rendezvous store torchrun points at (``MASTER_ADDR``/``MASTER_PORT``), under a prefix
    of its own per restart: after torchrun restarts the ranks (``--max-restarts``) the store can
    still hold the dead ranks' gloo addresses, and ranks that read them cannot connect."""
    dist = _dist()
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        host_name=os.environ["MASTER_ADDR"],
        port=int(os.environ["MASTER_PORT"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        is_master=not agent_store and int(os.environ["RANK"]) == 0,
        timeout=timeout,
        multi_tenant=True,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"edgec/attempt-{attempt}", store)


def shutdown() -> None:
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        _state["control"] = None


def device(requested: str | None) -> str | None:
    """The torch device of this rank: with several ranks on GPUs, ``cuda:<LOCAL_RANK>`` (a bare
    ``cuda`` or no request means this rank's GPU); otherwise what was requested."""
    if not active():
        return requested
    import torch

    if not torch.cuda.is_available():
        return requested
    if requested in (None, "cuda"):
        return f"cuda:{local_rank()}"
    return requested


def barrier() -> None:
    if active():
        _dist().barrier(group=_state["control"])


def share(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank (pickled through gloo)."""
    if not active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src, group=_state["control"])
    return box[0]


class RankZeroFailed(EdgecError):
    """What the other ranks raise when rank 0 failed (rank 0 reports the error itself)."""


def on_main(fn: Callable[[], T], *, alone: bool = True) -> T:
    """Run ``fn`` on rank 0 and give its result to every rank. When it raises there, every
    rank raises (rank 0 the original error, the others an :class:`EdgecError` quoting it).

    ``alone``: ``fn`` runs as a world of one (no collectives: the other ranks are waiting for
    its result). False: the other ranks did their part of ``fn``'s collectives before calling
    (a training stage whose outputs rank 0 then writes).
    """
    if not active():
        return fn()
    if is_main():
        try:
            if alone:
                _state["alone"] += 1
            try:
                result = fn()
            finally:
                if alone:
                    _state["alone"] -= 1
        except BaseException as e:
            share(("error", f"{type(e).__name__}: {e}"))
            raise
        return share(("ok", result))[1]
    status, value = share(None)
    if status == "error":
        raise RankZeroFailed(f"rank 0 failed: {value}")
    return value


def shard(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
    """This rank's contiguous share of a global batch, and the weight of its loss.

    The weight is ``local rows x N / global rows``: the ranks' weighted mean losses, averaged
    by :func:`average_gradients`, give the gradient of the global batch's mean loss. A rank left
    without rows (a last batch smaller than N) gets the first row with weight 0, so that it runs
    the same graph and produces gradients for the same parameters as the others.
    """
    n_ranks = world_size()
    if n_ranks == 1:
        return batch, 1.0
    n = next(iter(batch.values())).shape[0]
    r = rank()
    lo, hi = n * r // n_ranks, n * (r + 1) // n_ranks
    weight = (hi - lo) * n_ranks / n
    if hi == lo:
        lo, hi = 0, 1
    return {k: v[lo:hi] for k, v in batch.items()}, weight


def mean(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (the same keys on every rank): what a logged loss of
    this rank's shares is over the global batches."""
    if not active() or not values:
        return values
    import torch

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    _dist().all_reduce(t, group=_state["control"])
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist(), strict=True)}


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every gradient over the ranks and divide by N: one all-reduce per dtype and device.

    Every rank must hold gradients for the same parameters (a parameter unused in this step has
    none on every rank, so AdamW skips it as one process would); a mismatch is an error rather
    than a hang or a silent misalignment.
    """
    if not active():
        return
    import torch

    dist = _dist()
    grads = [p.grad for p in params if p.grad is not None]
    count = torch.tensor([len(grads), -len(grads)], dtype=torch.long)
    dist.all_reduce(count, op=dist.ReduceOp.MAX, group=_state["control"])
    if int(count[0]) != -int(count[1]):
        raise EdgecError(
            f"ranks hold gradients for different parameters ({-int(count[1])} to "
            f"{int(count[0])}): a rank took another path through the model"
        )
    groups: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    n_ranks = world_size()
    for group in groups.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat /= n_ranks
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def describe() -> dict:
    """What a stage record says about the ranks that trained it."""
    if not active():
        return {"nproc": 1}
    return {"nproc": world_size(), "backend": backend()}


__all__ = [
    "RankZeroFailed",
    "active",
    "average_gradients",
    "barrier",
    "describe",
    "device",
    "init",
    "is_main",
    "launched",
    "local_rank",
    "mean",
    "on_main",
    "rank",
    "share",
    "shard",
    "shutdown",
    "world_size",
]
