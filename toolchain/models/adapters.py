"""One interface over BERT-family encoders (BERT, MiniLM, MPNet) and GPT-2/Llama-family decoders.

Every stage that touches the inside of a transformer (supernet, distillation, quantization, export)
goes through a :class:`ModelAdapter`, so it never needs to know that GPT-2 calls its blocks ``h``
and its width ``n_embd``.

Example::

    >>> adapter = adapter_for(BertForSequenceClassification(config))
    >>> str(adapter.shape)
    'L6:H384:A12:F1536'
    >>> student = adapter.build_for_shape(Shape.parse("L3:H384:A12:F1536"), seed=0)
    >>> out = student.forward(input_ids, attention_mask, output_attentions=True)
    >>> len(out.hidden_states), out.attentions[0].shape  # 4, (B, 12, T, T)
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from toolchain.errors import ConfigError, EdgecError

_SHAPE_FORMAT = "L<layers>:H<hidden>:A<heads>:F<ffn>[:K<kv_heads>], e.g. 'L3:H384:A12:F1536'"
_SHAPE_RE = re.compile(r"L(\d+):H(\d+):A(\d+):F(\d+)(?::K(\d+))?")


@dataclass(frozen=True)
class Shape:
    """The architecture of a transformer stack: what a student or a supernet subnet is.

    ``kv_heads`` is the number of key/value heads of a Llama-family model (grouped-query
    attention); None means "not given" (for Llama: keep the model's own grouping).
    """

    layers: int
    hidden: int
    heads: int
    ffn: int
    kv_heads: int | None = None

    def __post_init__(self):
        for name in ("layers", "hidden", "heads", "ffn", "kv_heads"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}", key=name)
        if self.hidden % self.heads:
            raise ConfigError(
                f"hidden size {self.hidden} is not divisible by the number of heads {self.heads}",
                key="hidden",
            )
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ConfigError(
                f"heads {self.heads} is not divisible by kv_heads {self.kv_heads}", key="kv_heads"
            )

    @classmethod
    def parse(cls, text: str) -> Shape:
        """Parse ``"L3:H384:A12:F1536"`` (optionally ``":K4"`` for Llama key/value heads).

        Raises:
            ConfigError: the text does not follow the format, or the numbers do not fit together.
        """
        match = _SHAPE_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(f"invalid shape {text!r}: expected {_SHAPE_FORMAT}")
        layers, hidden, heads, ffn, kv = match.groups()
        return cls(int(layers), int(hidden), int(heads), int(ffn), int(kv) if kv else None)

    def __str__(self) -> str:
        kv = f":K{self.kv_heads}" if self.kv_heads is not None else ""
        return f"L{self.layers}:H{self.hidden}:A{self.heads}:F{self.ffn}{kv}"


@dataclass
class AdapterOutput:
    """What :meth:`ModelAdapter.forward` returns, the same for every family.

    logits: the head's output ((B, num_labels), (B, T, num_labels) or (B, T, vocab)); for a model
        without a head, the last hidden state (B, T, H).
    hidden_states: num_layers + 1 tensors (B, T, H): the embeddings output, then each layer's.
    attentions: num_layers tensors (B, heads, T, T) of attention probabilities, or None when
        they were not requested.
    """

    logits: Tensor
    hidden_states: tuple[Tensor, ...]
    attentions: tuple[Tensor, ...] | None = None


class ModelAdapter:
    """A Hugging Face model (possibly with a task head) seen through one family-neutral interface.

    Subclasses name the config attributes and submodules of their family.

    Args:
        model: a ``transformers`` model of this adapter's family (base model or with a head).
        tokenizer: its tokenizer, if any; saved with the model by :meth:`save`.
    """

    family: ClassVar[str] = ""
    is_decoder: ClassVar[bool] = False
    # HF config attribute names: (layers, hidden, heads, ffn)
    _config_keys: ClassVar[tuple[str, str, str, str]] = (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
    )

    def __init__(self, model: nn.Module, tokenizer: Any = None):
        self.model = model
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, {self.shape})"

    # -- architecture ----------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return getattr(self.config, self._config_keys[0])

    @property
    def hidden_size(self) -> int:
        return getattr(self.config, self._config_keys[1])

    @property
    def num_heads(self) -> int:
        return getattr(self.config, self._config_keys[2])

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        return getattr(self.config, self._config_keys[3])

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def shape(self) -> Shape:
        """The model's :class:`Shape` (layers, hidden size, heads, FFN size)."""
        return Shape(self.num_layers, self.hidden_size, self.num_heads, self.ffn_size)

    def backbone(self) -> nn.Module:
        """The base model without its task head (the model itself when it has no head)."""
        return self.model.base_model

    def embeddings(self) -> nn.Module:
        """The embedding module, whose output is ``hidden_states[0]`` (before dropout)."""
        return self.backbone().embeddings

    def layers(self) -> nn.ModuleList:
        """The transformer blocks, first to last."""
        return self.backbone().encoder.layer

    def num_parameters(self) -> int:
        """Number of parameters, tied weights (e.g. GPT-2's LM head) counted once."""
        return sum(p.numel() for p in self.model.parameters())

    # -- running ---------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> AdapterOutput:
        """Run the model and return logits, every hidden state and optionally attentions.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T), 1 for real tokens, 0 for padding; None = all real.
            output_attentions: also return attention probabilities (B, heads, T, T) per layer;
                the call then runs the eager (non-fused) attention, which is slower.
            **kwargs: passed to the model (``token_type_ids``, ``labels``, ...).

        Returns:
            An :class:`AdapterOutput`.
        """
        ctx = _eager_attention(self.model) if output_attentions else contextlib.nullcontext()
        with ctx:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=True,
                output_attentions=output_attentions,
                return_dict=True,
                **kwargs,
            )
        logits = out.logits if "logits" in out else out.last_hidden_state
        attentions = tuple(out.attentions or ()) if output_attentions else None
        if attentions is not None and (
            len(attentions) != self.num_layers or any(a is None for a in attentions)
        ):
            raise EdgecError(
                f"{type(self.model).__name__} returned no attention probabilities with "
                f"attention implementation {self.config._attn_implementation!r}"
            )
        return AdapterOutput(logits, tuple(out.hidden_states), attentions)

    # -- new shapes ------------------------------------------------------------------------
    def config_for_shape(self, shape: Shape):
        """A copy of the model's config with layers, hidden size, heads and FFN size replaced.

        Everything else (vocabulary, positions, labels, problem type, ...) is kept.

        Args:
            shape: the new architecture.

        Returns:
            A ``transformers.PretrainedConfig`` of the same class as ``self.model.config``.
        """
        config = copy.deepcopy(self.config)
        for key, value in zip(self._config_keys, _shape_values(shape), strict=True):
            setattr(config, key, value)
        self._set_family_fields(config, shape)
        return config

    def _set_family_fields(self, config, shape: Shape) -> None:
        if shape.kv_heads is not None:
            raise ConfigError(
                f"kv_heads (':K{shape.kv_heads}') applies to llama models only, "
                f"not to {self.family}",
                key="kv_heads",
            )

    def build_for_shape(self, shape: Shape, *, seed: int | None = None) -> ModelAdapter:
        """A new, randomly initialised model of the same class as ``self.model`` with ``shape``.

        Args:
            shape: the new architecture.
            seed: seeds the initialisation (without touching the global RNG state); None = use
                the global RNG.

        Returns:
            An adapter of the same family, sharing this adapter's tokenizer (the vocabulary is
            unchanged).
        """
        config = self.config_for_shape(shape)
        with _seeded(seed):
            model = type(self.model)(config)
        return adapter_for(model, tokenizer=self.tokenizer)

    def save(self, path: str | Path) -> None:
        """Write the model (safetensors) and, if attached, the tokenizer into directory ``path``.

        Not atomic; see :func:`toolchain.models.loading.save_model` for that.
        """
        self.model.save_pretrained(str(path), safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(path))


class BertAdapter(ModelAdapter):
    """BERT and MiniLM (``BertModel`` and every ``Bert*`` head model)."""

    family = "bert"


class MPNetAdapter(ModelAdapter):
    """MPNet (``MPNetModel`` and its head models)."""

    family = "mpnet"


class GPT2Adapter(ModelAdapter):
    """GPT-2 (``GPT2Model``, ``GPT2LMHeadModel``, ``GPT2For*``)."""

    family = "gpt2"
    is_decoder = True
    _config_keys = ("n_layer", "n_embd", "n_head", "n_inner")

    @property
    def ffn_size(self) -> int:
        return self.config.n_inner or 4 * self.config.n_embd  # n_inner None means 4 * n_embd

    def embeddings(self) -> nn.Module:
        """The token embedding ``wte``; GPT-2's learned positions are ``backbone().wpe``."""
        return self.backbone().wte

    def layers(self) -> nn.ModuleList:
        return self.backbone().h


class LlamaAdapter(ModelAdapter):
    """Llama-family decoders (``LlamaForCausalLM``: Llama, SmolLM2, TinyLlama, ...)."""

    family = "llama"
    is_decoder = True

    @property
    def num_kv_heads(self) -> int:
        return self.config.num_key_value_heads or self.num_heads

    @property
    def head_size(self) -> int:
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.num_heads

    @property
    def shape(self) -> Shape:
        return Shape(
            self.num_layers, self.hidden_size, self.num_heads, self.ffn_size, self.num_kv_heads
        )

    def embeddings(self) -> nn.Module:
        """The token embedding ``embed_tokens`` (positions are rotary, inside attention)."""
        return self.backbone().embed_tokens

    def layers(self) -> nn.ModuleList:
        return self.backbone().layers

    def _set_family_fields(self, config, shape: Shape) -> None:
        # kv_heads None keeps the model's grouping; head_dim must follow the new hidden size
        kv_heads = shape.kv_heads or self.num_kv_heads
        if shape.heads % kv_heads:
            raise ConfigError(
                f"{shape.heads} heads cannot be grouped over the model's {kv_heads} key/value "
                f"heads; give them explicitly, e.g. '{shape}:K{shape.heads}'",
                key="kv_heads",
            )
        config.num_key_value_heads = kv_heads
        if hasattr(config, "head_dim"):
            config.head_dim = shape.hidden // shape.heads


_ADAPTERS: dict[str, type[ModelAdapter]] = {
    cls.family: cls for cls in (BertAdapter, MPNetAdapter, GPT2Adapter, LlamaAdapter)
}
FAMILIES: tuple[str, ...] = tuple(_ADAPTERS)  # the supported ``config.model_type`` values


def adapter_class(model_type: str | None) -> type[ModelAdapter]:
    """The adapter class for a ``config.model_type``.

    Raises:
        EdgecError: the model type is not one of the supported families (listed in the message).
    """
    cls = _ADAPTERS.get(model_type or "")
    if cls is None:
        raise EdgecError(
            f"unsupported model type {model_type!r}; supported families: {', '.join(FAMILIES)}"
        )
    return cls


def adapter_for(model: nn.Module, tokenizer: Any = None) -> ModelAdapter:
    """Wrap a ``transformers`` model in the adapter of its family (``config.model_type``).

    Args:
        model: a BERT/MiniLM, MPNet, GPT-2 or Llama-family model, with or without a head.
        tokenizer: its tokenizer, attached as ``adapter.tokenizer``.

    Returns:
        The family's :class:`ModelAdapter`.

    Raises:
        EdgecError: the model type is not one of the supported families.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return adapter_class(model_type)(model, tokenizer)


def _shape_values(shape: Shape) -> tuple[int, int, int, int]:
    return shape.layers, shape.hidden, shape.heads, shape.ffn


@contextlib.contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Run with eager attention: fused (sdpa) attention returns no probabilities. BERT's sdpa
    layers fall back to eager by themselves (with a warning we silence: it is expected here)."""
    from transformers.utils import logging as hf_logging

    config = model.config
    before, verbosity = config._attn_implementation, hf_logging.get_verbosity()
    config._attn_implementation = "eager"
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        config._attn_implementation = before
        hf_logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
