"""A weight-sharing supernet over a BERT-family teacher (NAS-BERT, in HAT/OFA's verbs).

The supernet *is* the fine-tuned teacher with its units reordered by importance (ETD-Impt):
hidden dimensions, and per layer the attention heads and FFN neurons, sorted most important
first. A permutation of units computes the same function, so the largest subnet reproduces the
teacher exactly, and a subnet of any width takes the leading slice of every matrix: the
teacher's most important weights. Depth is elastic by choosing which layers to keep.

Verbs: :meth:`SuperNet.set_active` / :meth:`get_active` / :meth:`sample_active`; the forward
runs the active subnet with sliced weights; :meth:`extract` writes the active subnet as a plain
Hugging Face model of that shape (the rest of the pipeline takes it unchanged).

Example::

    supernet = SuperNet.from_teacher(teacher, importance_scores)
    supernet.set_active(Arch.parse("L[1,3,5]:H256:A8:F768"))
    logits = supernet(input_ids, attention_mask).logits
    student = supernet.extract()            # a ModelAdapter, BertForSequenceClassification
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toolchain.distill.init import extract
from toolchain.errors import ConfigError
from toolchain.models.adapters import AdapterOutput, ModelAdapter
from toolchain.nas.space import Arch, SearchSpace

SUPERNET_FILE = "supernet.json"
_HEADS = ("BertForSequenceClassification", "BertForTokenClassification")
_HEADLESS = "BertModel"  # the task-agnostic supernet (toolchain.nas.agnostic): no task head
FAMILIES = ("bert",)  # config.json model_type values the supernet takes


def check_teacher_family(model_type: str | None, where: str) -> None:
    """Refuse, before any training, a teacher whose family the supernet cannot take.

    Raises:
        ConfigError: naming the family and what to do instead.
    """
    if model_type in FAMILIES:
        return
    raise ConfigError(
        f"{where}: a {model_type or 'GGUF'} model; edgec build searches subnets of BERT-family "
        f"encoders ({', '.join(FAMILIES)}), so it cannot carry this teacher past the search. "
        "Use a BERT-architecture teacher (the default all-MiniLM-L6-v2, or a local directory), "
        "or compress this one stage by stage: `edgec teacher --model ...`, then `edgec distill "
        "--init etd-rand` (encoders) or `--init truncation` (decoders)",
        key="teacher",
    )


def order_by_importance(teacher: ModelAdapter, scores: dict) -> ModelAdapter:
    """The teacher with hidden dimensions, heads (per layer) and FFN neurons (per layer) sorted
    by decreasing importance: the same function, units in a new order."""
    t = teacher.shape

    def desc(values) -> list[int]:
        return [int(i) for i in torch.as_tensor(values).float().argsort(descending=True)]

    choice = {
        "layers": list(range(t.layers)),
        "hidden": desc(scores["hidden"]),
        "heads": [desc(scores["heads"][i]) for i in range(t.layers)],
        "head_dims": list(range(teacher.head_size)),
        "ffn": [desc(scores["ffn"][i]) for i in range(t.layers)],
    }
    return extract(teacher, t, choice)


class SuperNet(nn.Module):
    """The supernet over an importance-ordered BERT model (see the module docstring).

    Args:
        adapter: the ordered model (``order_by_importance``, or a saved supernet).
        space: the subnets it holds; default :meth:`SearchSpace.for_teacher`.
    """

    def __init__(self, adapter: ModelAdapter, space: SearchSpace | None = None):
        super().__init__()
        kind = type(adapter.model).__name__
        if adapter.family != "bert" or kind not in (*_HEADS, _HEADLESS):
            raise ConfigError(
                f"the supernet takes a BERT-family encoder with a classification head "
                f"({', '.join(_HEADS)}) or none ({_HEADLESS}); got {kind}. Decoders compress "
                "by `edgec distill --init truncation`"
            )
        self.adapter = adapter
        self.model = adapter.model
        self.bert = getattr(self.model, "bert", self.model)  # the encoder, with or without a head
        self.space = space or SearchSpace.for_teacher(adapter.shape)
        if self.space.teacher_layers != adapter.num_layers:
            raise ConfigError(
                f"search space of {self.space.teacher_layers} layers for a model of "
                f"{adapter.num_layers}"
            )
        self.active = self.space.largest()
        from transformers.activations import ACT2FN

        self.act = ACT2FN[self.model.config.hidden_act]

    @classmethod
    def from_teacher(cls, teacher: ModelAdapter, scores: dict, space: SearchSpace | None = None):
        return cls(order_by_importance(teacher, scores), space)

    # -- the active subnet ------------------------------------------------------------------
    def set_active(self, arch: Arch) -> None:
        self.active = self.space.check(arch)

    def get_active(self) -> Arch:
        return self.active

    def sample_active(self, rng: random.Random) -> Arch:
        self.active = self.space.sample(rng)
        return self.active

    @property
    def headless(self) -> bool:
        return self.bert is self.model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: object,
    ) -> AdapterOutput:
        """The active subnet's logits (headless: its last hidden state) and hidden states
        (embeddings, then each kept layer), computed with the leading slices of the shared
        weights."""
        arch, cfg = self.active, self.model.config
        h = arch.hidden
        drop = cfg.hidden_dropout_prob if self.training else 0.0
        x = self.embed(input_ids, token_type_ids)
        states = [x]
        x = F.dropout(x, drop, self.training)
        bias = self.mask_bias(input_ids, attention_mask, x.dtype)
        for i in arch.layers:
            x = self.layer(i, x, bias)
            states.append(x)
        if self.headless:
            return AdapterOutput(x, tuple(states))
        if type(self.model).__name__ == "BertForSequenceClassification":
            pool = self.bert.pooler.dense
            x = torch.tanh(F.linear(x[:, 0], pool.weight[:h, :h], pool.bias[:h]))
        x = F.dropout(x, drop, self.training)
        head = self.model.classifier
        return AdapterOutput(F.linear(x, head.weight[:, :h], head.bias), tuple(states))

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        """The embeddings block's output at the active hidden width (before dropout)."""
        h, emb = self.active.hidden, self.bert.embeddings
        seq = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            F.embedding(input_ids, emb.word_embeddings.weight[:, :h])
            + F.embedding(token_type_ids, emb.token_type_embeddings.weight[:, :h])
            + emb.position_embeddings.weight[:seq, :h]
        )
        return _ln(x, emb.LayerNorm, h, self.model.config.layer_norm_eps)

    @staticmethod
    def mask_bias(input_ids, attention_mask, dtype) -> torch.Tensor:
        """The additive attention bias of the padding mask, (B, 1, 1, T)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def layer(self, i: int, x: torch.Tensor, bias: torch.Tensor, probs: list | None = None):
        """Teacher layer ``i`` at the active widths on ``x``; its attention probabilities are
        appended to ``probs`` when given."""
        arch, cfg = self.active, self.model.config
        layer = self.bert.encoder.layer[i]
        drop = cfg.hidden_dropout_prob if self.training else 0.0
        h, f, heads, dh = arch.hidden, arch.ffn, arch.heads, arch.head_size
        full_dh = cfg.hidden_size // cfg.num_attention_heads
        rows = _head_rows(heads, dh, full_dh, x.device)
        att = layer.attention.self
        b, t, _ = x.shape

        def project(lin):
            out = F.linear(x, lin.weight[rows, :h], lin.bias[rows])
            return out.view(b, t, heads, dh).transpose(1, 2)

        q, k, v = project(att.query), project(att.key), project(att.value)
        p = torch.softmax(q @ k.transpose(-1, -2) * dh**-0.5 + bias, dim=-1)
        if probs is not None:
            probs.append(p)
        p = F.dropout(p, cfg.attention_probs_dropout_prob, self.training)
        ctx = (p @ v).transpose(1, 2).reshape(b, t, heads * dh)
        out = layer.attention.output
        a = F.linear(ctx, out.dense.weight[:h, rows], out.dense.bias[:h])
        x = _ln(F.dropout(a, drop, self.training) + x, out.LayerNorm, h, cfg.layer_norm_eps)
        inter = layer.intermediate.dense
        y = self.act(F.linear(x, inter.weight[:f, :h], inter.bias[:f]))
        down = layer.output.dense
        y = F.linear(y, down.weight[:h, :f], down.bias[:h])
        return _ln(
            F.dropout(y, drop, self.training) + x, layer.output.LayerNorm, h, cfg.layer_norm_eps
        )

    # -- extraction and storage -------------------------------------------------------------
    def choice(self, arch: Arch | None = None) -> dict:
        """The units a subnet keeps, in :func:`toolchain.distill.init.extract`'s terms."""
        arch = self.space.check(arch or self.active)
        n = len(arch.layers)
        return {
            "layers": list(arch.layers),
            "hidden": list(range(arch.hidden)),
            "heads": [list(range(arch.heads))] * n,
            "head_dims": list(range(arch.head_size)),
            "ffn": [list(range(arch.ffn))] * n,
        }

    def extract(self, arch: Arch | None = None) -> ModelAdapter:
        """The subnet (default: the active one) as a plain model of its shape, weights copied."""
        arch = arch or self.active
        with torch.no_grad():
            return extract(self.adapter, arch.shape, self.choice(arch))

    def save(self, path: str | Path, *, extra: dict | None = None) -> Path:
        """The ordered model as a Hugging Face directory plus ``supernet.json`` (the space)."""
        from toolchain.models.loading import save_model

        path = save_model(self.adapter, path)
        meta = {"space": self.space.as_dict(), **(extra or {})}
        (path / SUPERNET_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SuperNet:
        from toolchain.models.loading import load_model

        path = Path(path)
        meta_file = path / SUPERNET_FILE
        if not meta_file.is_file():
            raise ConfigError(f"{path} is not a supernet directory (no {SUPERNET_FILE})")
        meta = json.loads(meta_file.read_text())
        config = json.loads((path / "config.json").read_text())
        kinds = config.get("architectures", [])
        head = (
            "token-classification"
            if "BertForTokenClassification" in kinds
            else "base"
            if _HEADLESS in kinds
            else "sequence-classification"
        )
        return cls(load_model(str(path), head=head), SearchSpace.from_dict(meta["space"]))


def _ln(x: torch.Tensor, norm: nn.LayerNorm, h: int, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (h,), norm.weight[:h], norm.bias[:h], eps)


_ROWS: dict = {}


def _head_rows(heads: int, dh: int, full_dh: int, device) -> torch.Tensor:
    """Rows of Q/K/V (columns of the output projection) of the first ``heads`` heads, the first
    ``dh`` dimensions of each."""
    key = (heads, dh, full_dh, str(device))
    if key not in _ROWS:
        idx = [hd * full_dh + d for hd in range(heads) for d in range(dh)]
        _ROWS[key] = torch.tensor(idx, dtype=torch.long, device=device)
    return _ROWS[key]
