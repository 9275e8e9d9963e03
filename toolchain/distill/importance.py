"""Gradient-based importance of a teacher's units, for ETD-Impt extraction.

First-order Taylor scores on the task loss (Michel et al. 2019 for heads; Molchanov et al. for
neurons): a unit's importance is |sum over tokens of activation x gradient| per batch, summed over
batches. That equals |dL/d mask| for a multiplicative mask on the unit, so heads are scored as in
head-pruning work without needing head-mask support in the model.

- heads: on the input of each layer's attention output projection (heads x head size features);
- FFN neurons: on the input of each layer's FFN down projection;
- hidden dimensions: on every hidden state (embeddings and each layer's output).

Without labels (:func:`label_free_importance`, for the task-agnostic supernet and mapping
search): the magnitude criteria of pruning work, a unit's expected contribution to the residual
stream: mean |activation| x the norm of its output weights for FFN neurons, the norm of each
head's projected output for heads, the mean |value| of each hidden dimension over all hidden
states.

Example::

    scores = importance(teacher, spec, examples[:512])
    scores["heads"]  # (layers, heads) tensor
    scores = label_free_importance(pretrained, sentences[:512])   # same keys, no labels
"""

from __future__ import annotations

import logging

import torch

from toolchain.data.encode import batches, encode, lm_labels
from toolchain.data.readers import DataError
from toolchain.data.tasks import TaskSpec
from toolchain.errors import EdgecError
from toolchain.evaluate.evaluate import pad_id_of
from toolchain.log import progress
from toolchain.models.adapters import ModelAdapter

log = logging.getLogger(__name__)

# Per family, inside one transformer block: (attention output projection, FFN down projection).
PROJECTIONS = {
    "bert": ("attention.output.dense", "output.dense"),
    "mpnet": ("attention.attn.o", "output.dense"),
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
}


class _Taylor:
    """Accumulates |sum(activation * grad)| over (B, T) per feature of a module's input."""

    def __init__(self, module: torch.nn.Module, features: int):
        self.total = torch.zeros(features, dtype=torch.float64)
        self.handle = module.register_forward_pre_hook(self._pre)

    def _pre(self, module, args):
        act = args[0]
        if act.requires_grad:
            act.register_hook(lambda grad, act=act: self._add(act, grad))

    def _add(self, act: torch.Tensor, grad: torch.Tensor) -> None:
        # (B, T, F) -> (F,): per-example sums, then |.| (a head-mask derivative per example)
        contrib = (act.detach().float() * grad.float()).sum(dim=1).abs().sum(dim=0)
        self.total += contrib.double().cpu()

    def remove(self) -> None:
        self.handle.remove()


def importance(
    adapter: ModelAdapter,
    spec: TaskSpec,
    examples: list,
    *,
    batch_size: int = 32,
    max_len: int = 128,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Importance of heads (L, heads), FFN neurons (L, F) and hidden dimensions (H,) of
    ``adapter`` on labelled ``examples`` of ``spec`` (for a language model, on running text:
    the loss is next-token prediction)."""
    if adapter.family not in PROJECTIONS:
        raise ValueError(f"no importance scoring for {adapter.family} models")
    model = adapter.model
    device = device or next(model.parameters()).device
    attn_name, ffn_name = PROJECTIONS[adapter.family]
    heads, ffn = [], []
    for layer in adapter.layers():
        heads.append(_Taylor(layer.get_submodule(attn_name), adapter.num_heads * adapter.head_size))
        ffn.append(_Taylor(layer.get_submodule(ffn_name), adapter.ffn_size))
    hidden = torch.zeros(adapter.hidden_size, dtype=torch.float64)
    was_training = model.training
    model.eval()  # no dropout: scores of the deterministic network
    encoded = encode(spec, examples, adapter.tokenizer, max_len)
    pad = pad_id_of(adapter.tokenizer)
    try:
        steps = -(-len(encoded) // batch_size)
        for _, batch in progress(
            batches(encoded, batch_size, pad_id=pad), total=steps, desc="importance", unit="batch"
        ):
            batch = {k: v.to(device) for k, v in batch.items()}
            if spec.kind == "language-modeling":  # the task loss: next-token prediction
                batch = lm_labels(batch)
            out = model(**batch, output_hidden_states=True)
            if out.loss is None:
                raise DataError(
                    f"importance scoring needs the task loss, and these {spec.name} examples have "
                    "no labels: score on a labelled split (train or validation)"
                )
            states = [h for h in out.hidden_states if h.requires_grad]
            for h in states:
                h.retain_grad()
            out.loss.backward()
            for h in states:
                hidden += (h.detach().float() * h.grad.float()).sum(1).abs().sum(0).double().cpu()
            model.zero_grad(set_to_none=True)
    finally:
        for t in heads + ffn:
            t.remove()
        model.train(was_training)
    dh = adapter.head_size
    return {
        "heads": torch.stack([t.total.view(-1, dh).sum(-1) for t in heads]).float(),
        "ffn": torch.stack([t.total for t in ffn]).float(),
        "hidden": hidden.float(),
    }


@torch.no_grad()
def label_free_importance(
    teacher: ModelAdapter, texts: list[str], *, max_len: int = 128, batch_size: int = 32,
    device="cpu",
) -> dict:  # fmt: skip
    """``{"hidden": (H,), "heads": (layers, heads), "ffn": (layers, F)}`` scores of a BERT
    encoder's units on ``texts`` (see the module docstring); higher is more important."""
    model = teacher.model.to(device).eval()
    bert = getattr(model, "bert", model)
    layers = bert.encoder.layer
    n, heads, dh = len(layers), teacher.num_heads, teacher.head_size
    ffn = torch.zeros(n, teacher.ffn_size, dtype=torch.float64)
    head = torch.zeros(n, heads, dtype=torch.float64)
    hidden = torch.zeros(teacher.hidden_size, dtype=torch.float64)
    tokens = 0
    mask_now: list[torch.Tensor] = []

    def on_down(i):
        w_norm = layers[i].output.dense.weight.norm(dim=0).double().cpu()  # (F,)

        def hook(_module, args):
            act = args[0].abs().double() * mask_now[0]
            ffn[i] += act.sum((0, 1)).cpu() * w_norm

        return hook

    def on_attn_out(i):
        w = layers[i].attention.output.dense.weight  # (H, heads*dh)

        def hook(_module, args):
            ctx = args[0]
            b, t, _ = ctx.shape
            per_head = torch.einsum(
                "btad,had->btah", ctx.view(b, t, heads, dh), w.view(-1, heads, dh)
            )  # each head's share of the output: (B, T, heads, H)
            norms = per_head.norm(dim=-1).double() * mask_now[0]
            head[i] += norms.sum((0, 1)).cpu()

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.output.dense.register_forward_pre_hook(on_down(i)))
        handles.append(layer.attention.output.dense.register_forward_pre_hook(on_attn_out(i)))
    try:
        for start in range(0, len(texts), batch_size):
            rows = texts[start : start + batch_size]
            enc = teacher.tokenizer(
                rows, truncation=True, max_length=max_len, padding=True, return_tensors="pt"
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            m = enc["attention_mask"].double()
            mask_now[:] = [m[..., None]]
            out = bert(**enc, output_hidden_states=True)
            for state in out.hidden_states:
                hidden += (state.abs().double() * m[..., None]).sum((0, 1)).cpu()
            tokens += int(m.sum())
    finally:
        for h in handles:
            h.remove()
    if tokens == 0:
        raise EdgecError("label-free importance: the text gave no tokens")
    return {"hidden": hidden / tokens, "heads": head / tokens, "ffn": ffn / tokens}
