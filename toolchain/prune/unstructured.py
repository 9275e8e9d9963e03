"""Unstructured magnitude pruning with ``torch.nn.utils.prune``: the smallest-magnitude weights of
every encoder linear layer are set to zero (one global L1 threshold over all of them).

The masks stay attached (``weight_orig * weight_mask``) while the model is fine-tuned under
distillation, so pruned weights stay zero, and :func:`make_permanent` folds them into plain
weights before the model is saved.

**It saves no latency and no memory in ONNX Runtime.** The exported graph holds the same dense
matrices with zeros in them, and ORT's CPU and CUDA kernels are dense. Only a sparse runtime
(or 2:4 structured sparsity on an Ampere-class GPU with TensorRT, which this is not) would turn
the zeros into speed. The zeros do compress well (``.tar.gz``), and the method is here to compare
loyalty and robustness, as the paper behind this does.

Example::

    report = prune_unstructured(adapter, 0.5)
    ...  # fine-tune
    make_permanent(adapter)
"""

from __future__ import annotations

import torch
from torch.nn.utils import prune

NOTE = (
    "unstructured sparsity saves no latency or memory in ONNX Runtime: the exported matrices "
    "are dense, with zeros"
)


def encoder_linears(adapter) -> list[tuple[torch.nn.Module, str]]:
    """``(module, "weight")`` for every linear layer inside the transformer blocks (embeddings
    and the task head are left dense)."""
    return [(m, "weight") for layer in adapter.layers() for m in layer.modules() if _is_linear(m)]


def _is_linear(m: torch.nn.Module) -> bool:
    # GPT-2's Conv1D is a linear layer with a transposed weight
    return isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"


def prune_unstructured(adapter, sparsity: float) -> dict[str, object]:
    """Attach L1 masks that zero the ``sparsity`` share of encoder linear weights (one global
    threshold).

    Returns:
        ``{"sparsity", "pruned_weights", "encoder_weights", "note"}``.
    """
    params = encoder_linears(adapter)
    if sparsity > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    return {**measure(params), "note": NOTE}


def measure(params) -> dict[str, object]:
    """The measured share of zero weights among ``params``."""
    total = sum(getattr(m, name).numel() for m, name in params)
    zeros = sum(int((getattr(m, name) == 0).sum()) for m, name in params)
    return {
        "sparsity": round(zeros / max(total, 1), 4),
        "pruned_weights": zeros,
        "encoder_weights": total,
    }


def make_permanent(adapter) -> dict[str, object]:
    """Fold the masks into the weights (``prune.remove``) and measure the sparsity again."""
    params = encoder_linears(adapter)
    for module, name in params:
        if prune.is_pruned(module):
            prune.remove(module, name)
    return measure(params)
