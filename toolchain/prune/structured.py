"""Structured pruning of an encoder: whole attention heads and FFN neurons removed, so the saved
model (and its ONNX export) really has fewer parameters and smaller matrices.

Units are ranked by the first-order Taylor importance of :mod:`toolchain.distill.importance`
(Michel et al. 2019 for heads, Molchanov et al. for neurons).

- **Heads** are ranked globally after normalising each layer's scores by their L2 norm (as Michel
  et al. do), and at least one head is kept per layer. Removal goes through Hugging Face's own
  ``prune_heads``, which records ``pruned_heads`` in ``config.json``, so
  ``AutoModel*.from_pretrained`` rebuilds the smaller attention by itself.
- **FFN neurons**: each layer keeps its own top ``(1 - ffn_sparsity)`` share, the same count in
  every layer, so ``intermediate_size`` in the config describes every layer. A per-layer size
  would not load with ``from_pretrained``, which the run-directory format requires.

Written here rather than taken from a library: NNI's and torch-pruning's structured pruners keep
their own model wrappers and would not save a model that ``from_pretrained`` reloads. Hugging
Face's ``prune_heads`` and ``prune_linear_layer`` do the surgery.

Example::

    scores = importance(teacher, spec, sample)
    report = prune_structured(teacher, scores, head_sparsity=0.3, ffn_sparsity=0.3)
    report["parameters_after"] < report["parameters_before"]
"""

from __future__ import annotations

import torch
from transformers.pytorch_utils import prune_linear_layer

from toolchain.errors import ConfigError

# Per family: (FFN up projection, FFN down projection), inside one transformer block.
FFN = {
    "bert": ("intermediate.dense", "output.dense"),
    "mpnet": ("intermediate.dense", "output.dense"),
}


def heads_to_prune(scores: torch.Tensor, sparsity: float) -> dict[int, list[int]]:
    """The heads to remove: the ``round(sparsity * L * H)`` lowest globally, each layer's scores
    normalised by their L2 norm first, and at least one head kept per layer.

    Args:
        scores: (layers, heads) importance.
        sparsity: share of all heads to remove, in [0, 1).
    """
    layers, heads = scores.shape
    norm = scores / scores.norm(dim=1, keepdim=True).clamp_min(1e-12)
    target = round(sparsity * layers * heads)
    kept = [heads] * layers
    out: dict[int, list[int]] = {}
    for flat in torch.argsort(norm.flatten(), stable=True).tolist():
        if sum(len(v) for v in out.values()) >= target:
            break
        layer, head = divmod(flat, heads)
        if kept[layer] == 1:
            continue  # a layer keeps at least one head
        kept[layer] -= 1
        out.setdefault(layer, []).append(head)
    return {k: sorted(v) for k, v in sorted(out.items())}


def neurons_to_keep(scores: torch.Tensor, sparsity: float) -> list[list[int]]:
    """Per layer, the indices (ascending) of the top ``(1 - sparsity)`` share of FFN neurons.

    Args:
        scores: (layers, ffn) importance.
    """
    ffn = scores.shape[1]
    keep = max(1, round(ffn * (1.0 - sparsity)))
    return [sorted(torch.topk(row, keep).indices.tolist()) for row in scores]


def prune_structured(
    adapter, scores: dict, *, head_sparsity: float, ffn_sparsity: float
) -> dict[str, object]:
    """Remove heads and FFN neurons from ``adapter``'s model in place.

    Args:
        adapter: a BERT-family :class:`~toolchain.models.adapters.ModelAdapter`.
        scores: ``{"heads": (L, H), "ffn": (L, F)}`` from
            :func:`~toolchain.distill.importance.importance`.
        head_sparsity, ffn_sparsity: shares removed, each in [0, 1).

    Returns:
        ``{"pruned_heads", "heads_before", "heads_after", "ffn_before", "ffn_after",
        "parameters_before", "parameters_after"}``.
    """
    if adapter.family not in FFN:
        raise ConfigError(
            f"structured pruning supports BERT-family encoders ({', '.join(FFN)}), "
            f"not {adapter.family}: distil a smaller student instead (edgec distill)"
        )
    for name, value in (("head_sparsity", head_sparsity), ("ffn_sparsity", ffn_sparsity)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}", key=f"prune.{name}")
    before = adapter.num_parameters()
    heads_before = adapter.num_layers * adapter.num_heads
    ffn_before = adapter.ffn_size
    pruned = heads_to_prune(scores["heads"], head_sparsity)
    if pruned:
        adapter.model.prune_heads(pruned)  # records config.pruned_heads
    keep = neurons_to_keep(scores["ffn"], ffn_sparsity)
    up_name, down_name = FFN[adapter.family]
    for layer, index in zip(adapter.layers(), keep, strict=True):
        if len(index) == ffn_before:
            continue
        idx = torch.tensor(index, dtype=torch.long)
        _replace(layer, up_name, prune_linear_layer(layer.get_submodule(up_name), idx, dim=0))
        _replace(layer, down_name, prune_linear_layer(layer.get_submodule(down_name), idx, dim=1))
    adapter.config.intermediate_size = len(keep[0])
    return {
        "pruned_heads": {str(k): v for k, v in pruned.items()},
        "heads_before": heads_before,
        "heads_after": heads_before - sum(len(v) for v in pruned.values()),
        "ffn_before": ffn_before,
        "ffn_after": len(keep[0]),
        "parameters_before": before,
        "parameters_after": adapter.num_parameters(),
    }


def _replace(root: torch.nn.Module, dotted: str, new: torch.nn.Module) -> None:
    parent, _, attr = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)
