"""Student initialisation: random, layer truncation, and Extract-Then-Distill (ETD-Rand/ETD-Impt).

- ``random``: a fresh model of the student shape (the baseline).
- ``truncation``: keep a list of the teacher's layers, full width (the DistilGPT-2 route: every
  other layer); any family.
- ``etd-rand`` / ``etd-impt``: extract a smaller model of any shape (layers, hidden size, heads,
  FFN size) from the teacher's weights, choosing the units (layers, heads, FFN neurons, hidden
  dimensions) at random or by importance (:mod:`toolchain.distill.importance`). Chosen units keep
  their original order, so extracting at full size reproduces the teacher exactly.

Extraction knows each family's parameter layout through a table of (name pattern -> axis kinds),
the only family-specific part.

Example::

    student = init_student(teacher, Shape.parse("L3:H384:A12:F1536"), "etd-impt",
                           importance=importance)
"""

from __future__ import annotations

import random
import re

import torch

from toolchain.errors import ConfigError
from toolchain.models.adapters import ModelAdapter, Shape

INITS = ("random", "truncation", "etd-rand", "etd-impt")

# Axis kinds: "hidden" (model width), "attn" (query/key/value/output features = heads x head
# size), "kv" (Llama's key/value features), "ffn" (intermediate neurons), "heads" (one per head),
# None (kept whole). One tuple entry per tensor dimension.
AXES: dict[str, list[tuple[str, tuple]]] = {
    "bert": [
        (r"embeddings\.(word|position|token_type)_embeddings\.weight$", (None, "hidden")),
        (r"LayerNorm\.(weight|bias)$", ("hidden",)),
        (r"attention\.self\.(query|key|value)\.weight$", ("attn", "hidden")),
        (r"attention\.self\.(query|key|value)\.bias$", ("attn",)),
        (r"attention\.output\.dense\.weight$", ("hidden", "attn")),
        (r"attention\.output\.dense\.bias$", ("hidden",)),
        (r"intermediate\.dense\.weight$", ("ffn", "hidden")),
        (r"intermediate\.dense\.bias$", ("ffn",)),
        (r"\.output\.dense\.weight$", ("hidden", "ffn")),
        (r"\.output\.dense\.bias$", ("hidden",)),
        (r"pooler\.dense\.weight$", ("hidden", "hidden")),
        (r"pooler\.dense\.bias$", ("hidden",)),
        (r"classifier\.weight$", (None, "hidden")),
        (r"classifier\.bias$", (None,)),
    ],
    "mpnet": [
        (r"relative_attention_bias\.weight$", (None, "heads")),
        (r"embeddings\.(word|position)_embeddings\.weight$", (None, "hidden")),
        (r"LayerNorm\.(weight|bias)$", ("hidden",)),
        (r"attention\.attn\.(q|k|v)\.weight$", ("attn", "hidden")),
        (r"attention\.attn\.(q|k|v)\.bias$", ("attn",)),
        (r"attention\.attn\.o\.weight$", ("hidden", "attn")),
        (r"attention\.attn\.o\.bias$", ("hidden",)),
        (r"intermediate\.dense\.weight$", ("ffn", "hidden")),
        (r"intermediate\.dense\.bias$", ("ffn",)),
        (r"\.output\.dense\.weight$", ("hidden", "ffn")),
        (r"\.output\.dense\.bias$", ("hidden",)),
        (r"pooler\.dense\.weight$", ("hidden", "hidden")),
        (r"pooler\.dense\.bias$", ("hidden",)),
        (r"classifier\.dense\.weight$", ("hidden", "hidden")),
        (r"classifier\.dense\.bias$", ("hidden",)),
        (r"classifier\.out_proj\.weight$", (None, "hidden")),
        (r"classifier\.weight$", (None, "hidden")),
        (r"(classifier\.bias|classifier\.out_proj\.bias)$", (None,)),
        (r"lm_head\.dense\.weight$", ("hidden", "hidden")),
        (r"lm_head\.(dense\.bias|layer_norm\.(weight|bias))$", ("hidden",)),
        (r"lm_head\.bias$", (None,)),
        (r"lm_head\.decoder\.weight$", (None, "hidden")),
    ],
    "llama": [
        (r"embed_tokens\.weight$", (None, "hidden")),
        (r"(input_layernorm|post_attention_layernorm|norm)\.weight$", ("hidden",)),
        (r"self_attn\.q_proj\.weight$", ("attn", "hidden")),
        (r"self_attn\.(k|v)_proj\.weight$", ("kv", "hidden")),
        (r"self_attn\.o_proj\.weight$", ("hidden", "attn")),
        (r"mlp\.(gate|up)_proj\.weight$", ("ffn", "hidden")),
        (r"mlp\.down_proj\.weight$", ("hidden", "ffn")),
        (r"lm_head\.weight$", (None, "hidden")),
        (r"score\.weight$", (None, "hidden")),
    ],
    # GPT-2's Conv1D stores weights as (in, out), the transpose of nn.Linear; c_attn's output
    # is Q, K and V side by side ("attn3")
    "gpt2": [
        (r"wte\.weight$", (None, "hidden")),
        (r"wpe\.weight$", (None, "hidden")),
        (r"ln_(1|2|f)\.(weight|bias)$", ("hidden",)),
        (r"attn\.c_attn\.weight$", ("hidden", "attn3")),
        (r"attn\.c_attn\.bias$", ("attn3",)),
        (r"attn\.c_proj\.weight$", ("attn", "hidden")),
        (r"attn\.c_proj\.bias$", ("hidden",)),
        (r"mlp\.c_fc\.weight$", ("hidden", "ffn")),
        (r"mlp\.c_fc\.bias$", ("ffn",)),
        (r"mlp\.c_proj\.weight$", ("ffn", "hidden")),
        (r"mlp\.c_proj\.bias$", ("hidden",)),
        (r"lm_head\.weight$", (None, "hidden")),
        (r"score\.weight$", (None, "hidden")),
    ],
}
_LAYER = re.compile(r"(\.|^)(layer|layers|h)\.(\d+)\.")


def uniform_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spread teacher layers ending at the last one: 6 -> 3 gives [1, 3, 5]."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(
            f"a student of {student_layers} layers cannot come from a teacher of {teacher_layers}"
        )
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def init_student(
    teacher: ModelAdapter,
    shape: Shape,
    method: str,
    *,
    layers: list[int] | None = None,
    importance: dict | None = None,
    seed: int = 0,
) -> ModelAdapter:
    """Make a student of ``shape`` from ``teacher`` (see the module docstring).

    Args:
        teacher: the fine-tuned teacher (its head is kept: the student has the same task head).
        shape: the student's shape; ``truncation`` needs the teacher's width.
        method: one of :data:`INITS`.
        layers: teacher layers to keep (default: :func:`uniform_layers`, or by importance).
        importance: for ``etd-impt``: scores from :func:`toolchain.distill.importance.importance`.
        seed: for ``random`` weights and ``etd-rand`` choices.

    Returns:
        A new :class:`ModelAdapter` of the same family and class, sharing the teacher's tokenizer.
    """
    if method not in INITS:
        raise ConfigError(f"unknown init {method!r}; expected one of {', '.join(INITS)}")
    if method == "random":
        return teacher.build_for_shape(shape, seed=seed)
    t = teacher.shape
    if method == "truncation":
        if (shape.hidden, shape.heads, shape.ffn) != (t.hidden, t.heads, t.ffn):
            raise ConfigError(
                f"truncation keeps the teacher's width ({t.hidden}/{t.heads}/{t.ffn}); for "
                f"{shape} use etd-rand or etd-impt"
            )
        keep = layers or uniform_layers(t.layers, shape.layers)
        return extract(teacher, shape, _full_choice(teacher, keep))
    if method == "etd-impt" and importance is None:
        raise ConfigError("etd-impt needs importance scores (toolchain.distill.importance)")
    choice = choose_units(
        teacher, shape, importance if method == "etd-impt" else None, seed=seed, layers=layers
    )
    return extract(teacher, shape, choice)


def _full_choice(teacher: ModelAdapter, layers: list[int]) -> dict:
    t = teacher.shape
    return {
        "layers": list(layers),
        "hidden": list(range(t.hidden)),
        "heads": [list(range(t.heads)) for _ in layers],
        "head_dims": list(range(teacher.head_size)),
        "ffn": [list(range(t.ffn)) for _ in layers],
    }


def choose_units(
    teacher: ModelAdapter,
    shape: Shape,
    importance: dict | None,
    *,
    seed: int = 0,
    layers: list[int] | None = None,
) -> dict:
    """Which teacher units the student keeps: by importance (highest first) or at random; each
    list sorted so that the original order is preserved.

    Returns:
        ``{"layers": [..], "hidden": [..], "heads": [[..] per layer], "head_dims": [..],
        "ffn": [[..] per layer]}``
    """
    t = teacher.shape
    if shape.heads > t.heads or shape.hidden > t.hidden or shape.ffn > t.ffn:
        raise ConfigError(f"the student {shape} must not be wider than the teacher {t}")
    head_size = shape.hidden // shape.heads
    if head_size > teacher.head_size:
        raise ConfigError(
            f"student head size {head_size} exceeds the teacher's "
            f"{teacher.head_size}: use more heads"
        )
    rng = random.Random(seed)

    def top(scores, k: int, n: int) -> list[int]:
        if scores is None:
            return sorted(rng.sample(range(n), k))
        order = torch.as_tensor(scores).float().argsort(descending=True)[:k]
        return sorted(int(i) for i in order)

    imp = importance or {}
    if layers is None:
        layers = (
            top(imp.get("layers"), shape.layers, t.layers)
            if imp.get("layers") is not None
            else uniform_layers(t.layers, shape.layers)
        )
    return {
        "layers": list(layers),
        "hidden": top(imp.get("hidden"), shape.hidden, t.hidden),
        "heads": [top(imp["heads"][i] if imp else None, shape.heads, t.heads) for i in layers],
        "head_dims": list(range(head_size)),  # inside a head: the first dims (ordered)
        "ffn": [top(imp["ffn"][i] if imp else None, shape.ffn, t.ffn) for i in layers],
    }


def extract(teacher: ModelAdapter, shape: Shape, choice: dict) -> ModelAdapter:
    """Build the student of ``shape`` and copy the chosen slices of the teacher's weights."""
    table = AXES.get(teacher.family)
    if table is None and (shape.hidden, shape.heads, shape.ffn) != (
        teacher.hidden_size,
        teacher.num_heads,
        teacher.ffn_size,
    ):
        raise ConfigError(
            f"width extraction is not available for {teacher.family} models; use "
            "truncation (same width, fewer layers)"
        )
    student = teacher.build_for_shape(shape, seed=0)
    teacher_state = teacher.model.state_dict()
    new_state = {}
    for name, param in student.model.state_dict().items():
        source, layer_pos = _teacher_name(name, choice["layers"])
        if source not in teacher_state:
            new_state[name] = param  # e.g. buffers absent from the teacher
            continue
        full = teacher_state[source]
        axes = _axes(table, name, full.dim(), teacher.family) if table else (None,) * full.dim()
        new_state[name] = _slice(full, axes, choice, layer_pos, teacher).to(param.dtype).clone()
        if new_state[name].shape != param.shape:
            raise RuntimeError(
                f"extract: {name} got {tuple(new_state[name].shape)}, expected {tuple(param.shape)}"
            )
    student.model.load_state_dict(new_state)
    return student


def _teacher_name(name: str, layers: list[int]) -> tuple[str, int | None]:
    m = _LAYER.search(name)
    if not m:
        return name, None
    pos = int(m.group(3))
    start, end = m.span(3)
    return name[:start] + str(layers[pos]) + name[end:], pos


def _axes(table, name: str, ndim: int, family: str) -> tuple:
    for pattern, axes in table:
        if re.search(pattern, name):
            if len(axes) != ndim:
                break
            return axes
    raise RuntimeError(f"extract: no axis rule for {family} parameter {name} ({ndim}-d)")


def _slice(
    t: torch.Tensor, axes: tuple, choice: dict, layer_pos: int | None, teacher
) -> torch.Tensor:
    for dim, kind in enumerate(axes):
        index = _index(kind, choice, layer_pos, teacher)
        if index is not None:
            t = t.index_select(dim, torch.as_tensor(index, dtype=torch.long))
    return t


def _index(kind, choice: dict, pos: int | None, teacher) -> list[int] | None:
    if kind is None:
        return None
    if kind == "hidden":
        return choice["hidden"]
    if kind == "ffn":
        return choice["ffn"][pos]
    if kind == "heads":
        return choice["heads"][pos or 0]
    dh = teacher.head_size
    heads = choice["heads"][pos]
    if kind == "kv":  # Llama: keep the key/value groups that the kept query heads use
        group = teacher.num_heads // teacher.num_kv_heads
        heads = sorted({h // group for h in heads})
    index = [h * dh + d for h in heads for d in choice["head_dims"]]
    if kind == "attn3":  # GPT-2's fused Q, K, V: the same units in each of the three blocks
        width = teacher.num_heads * dh
        return [part * width + i for part in range(3) for i in index]
    return index
