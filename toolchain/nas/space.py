"""The search space of a NAS-BERT supernet: which subnets exist and the evolution operators.

A subnet (:class:`Arch`) keeps a subset of the teacher's layers (elastic depth: the dropped
layers are NAS-BERT's identity operation) and one width per dimension: hidden size, attention
heads and FFN size. Widths are uniform over the kept layers because the subnet must extract into
a plain Hugging Face model (``BertConfig`` has one ``intermediate_size`` and one head count), so
every later stage takes it unchanged. A head keeps ``hidden / heads`` of its dimensions, never
more than the teacher's head size.

Example::

    space = SearchSpace.for_teacher(Shape(6, 384, 12, 1536))
    arch = space.sample(random.Random(0))
    child = space.mutate(arch, random.Random(1), rate=0.3)
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from toolchain.errors import ConfigError
from toolchain.models.adapters import Shape

_ARCH_RE = re.compile(r"L\[([\d,\s]+)\]:H(\d+):A(\d+):F(\d+)")


@dataclass(frozen=True, order=True)
class Arch:
    """One subnet: the teacher layers it keeps (sorted) and its widths."""

    layers: tuple[int, ...]
    hidden: int
    heads: int
    ffn: int

    @property
    def shape(self) -> Shape:
        return Shape(len(self.layers), self.hidden, self.heads, self.ffn)

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads

    def macs(self, seq_len: int) -> int:
        """Multiply-accumulates of the kept layers for one sequence of ``seq_len`` tokens (Q, K,
        V and output projections, attention scores and context, FFN; embeddings and the head
        left out): a device-free cost, the same on every device."""
        inner = self.heads * self.head_size
        per_token = 4 * self.hidden * inner + 2 * seq_len * inner + 2 * self.hidden * self.ffn
        return len(self.layers) * seq_len * per_token

    def __str__(self) -> str:
        kept = ",".join(str(i) for i in self.layers)
        return f"L[{kept}]:H{self.hidden}:A{self.heads}:F{self.ffn}"

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Parse ``"L[1,3,5]:H384:A12:F1536"`` (the form :meth:`__str__` writes)."""
        match = _ARCH_RE.fullmatch(text.strip())
        if match is None:
            raise ConfigError(f"invalid subnet {text!r}: expected e.g. 'L[1,3,5]:H384:A12:F1536'")
        kept, hidden, heads, ffn = match.groups()
        layers = tuple(sorted(int(i) for i in kept.split(",")))
        return cls(layers, int(hidden), int(heads), int(ffn))

    def as_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers), "arch": str(self)}


@dataclass(frozen=True)
class SearchSpace:
    """Choices per dimension; an arch is valid when it uses them and its heads fit the teacher.

    Args:
        teacher_layers: layers of the teacher (= of the supernet).
        teacher_heads: a subnet has at most this many heads.
        teacher_head_size: a subnet's head keeps at most this many dimensions.
        hidden / heads / ffn: the allowed widths.
        min_layers / max_layers: the allowed depths.
    """

    teacher_layers: int
    teacher_heads: int
    teacher_head_size: int
    hidden: tuple[int, ...]
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    min_layers: int = 1
    max_layers: int | None = None
    _valid_heads: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self):
        if not (self.hidden and self.heads and self.ffn):
            raise ConfigError("the search space needs at least one hidden, heads and FFN choice")
        top = self.max_layers or self.teacher_layers
        if not 1 <= self.min_layers <= top <= self.teacher_layers:
            raise ConfigError(
                f"depth range {self.min_layers}..{top} does not fit a teacher of "
                f"{self.teacher_layers} layers"
            )
        for h in self.hidden:
            ok = tuple(a for a in self.heads if self._fits(h, a))
            if not ok:
                raise ConfigError(
                    f"hidden {h}: no head count among {self.heads} (at most "
                    f"{self.teacher_heads}) divides it into heads of at most "
                    f"{self.teacher_head_size} dimensions"
                )
            self._valid_heads[h] = ok

    def _fits(self, hidden: int, heads: int) -> bool:
        return (
            heads <= self.teacher_heads
            and hidden % heads == 0
            and hidden // heads <= self.teacher_head_size
        )

    @classmethod
    def for_teacher(cls, shape: Shape, *, head_size: int | None = None) -> SearchSpace:
        """The default space of a teacher: hidden in sixths of the teacher's width (multiples
        of its head size), FFN in quarters, heads of full or half the teacher's head size, any
        depth."""
        hs = head_size or shape.hidden // shape.heads
        hidden = sorted({max(hs, round(shape.hidden * k / 6 / hs) * hs) for k in (2, 3, 4, 5, 6)})
        heads = sorted(
            {
                h // d
                for h in hidden
                for d in (hs, max(1, hs // 2))
                if h % d == 0 and h // d <= shape.heads
            }
        )
        ffn = sorted({max(1, shape.ffn * k // 4) for k in (1, 2, 3, 4)})
        return cls(shape.layers, shape.heads, hs, tuple(hidden), tuple(heads), tuple(ffn))

    @property
    def depths(self) -> range:
        return range(self.min_layers, (self.max_layers or self.teacher_layers) + 1)

    def contains(self, arch: Arch) -> bool:
        return (
            len(arch.layers) in self.depths
            and len(set(arch.layers)) == len(arch.layers)
            and list(arch.layers) == sorted(arch.layers)
            and all(0 <= i < self.teacher_layers for i in arch.layers)
            and arch.hidden in self.hidden
            and arch.ffn in self.ffn
            and arch.heads in self._valid_heads[arch.hidden]
        )

    def check(self, arch: Arch) -> Arch:
        if not self.contains(arch):
            raise ConfigError(f"subnet {arch} is outside the search space {self.describe()}")
        return arch

    def describe(self) -> str:
        depths = f"{self.depths.start}..{self.depths.stop - 1}"
        return (
            f"depth {depths} of {self.teacher_layers} layers, hidden {list(self.hidden)}, "
            f"heads {list(self.heads)} (at most {self.teacher_heads}, head size <= "
            f"{self.teacher_head_size}), "
            f"FFN {list(self.ffn)}"
        )

    def size(self) -> int:
        from math import comb

        widths = sum(len(v) for v in self._valid_heads.values()) * len(self.ffn)
        return widths * sum(comb(self.teacher_layers, d) for d in self.depths)

    def largest(self) -> Arch:
        h = max(self.hidden)
        return Arch(tuple(range(self.teacher_layers)), h, max(self._valid_heads[h]), max(self.ffn))

    def smallest(self) -> Arch:
        h = min(self.hidden)
        layers = _spread(self.teacher_layers, self.depths.start)
        return Arch(layers, h, min(self._valid_heads[h]), min(self.ffn))

    def smaller(self, arch: Arch) -> list[Arch]:
        """The subnets one step smaller than ``arch`` in one dimension: a layer dropped, or the
        next smaller hidden size (heads kept where they divide it, else the most that fit),
        head count or FFN size."""
        out = []
        if len(arch.layers) > self.depths.start:
            out += [
                Arch(tuple(i for i in arch.layers if i != drop), arch.hidden, arch.heads, arch.ffn)
                for drop in arch.layers
            ]
        below = [h for h in self.hidden if h < arch.hidden]
        if below:
            h = max(below)
            valid = self._valid_heads[h]
            fit = [a for a in valid if a <= arch.heads]
            heads = arch.heads if arch.heads in valid else max(fit) if fit else min(valid)
            out.append(Arch(arch.layers, h, heads, arch.ffn))
        fewer = [a for a in self._valid_heads[arch.hidden] if a < arch.heads]
        if fewer:
            out.append(Arch(arch.layers, arch.hidden, max(fewer), arch.ffn))
        narrower = [f for f in self.ffn if f < arch.ffn]
        if narrower:
            out.append(Arch(arch.layers, arch.hidden, arch.heads, max(narrower)))
        return out

    # -- evolution operators ----------------------------------------------------------------
    def sample(self, rng: random.Random) -> Arch:
        depth = rng.choice(self.depths)
        layers = tuple(sorted(rng.sample(range(self.teacher_layers), depth)))
        hidden = rng.choice(self.hidden)
        return Arch(layers, hidden, rng.choice(self._valid_heads[hidden]), rng.choice(self.ffn))

    def mutate(self, arch: Arch, rng: random.Random, *, rate: float) -> Arch:
        """Each gene re-drawn with probability ``rate``; layers: one layer added or dropped."""
        layers, hidden, heads, ffn = list(arch.layers), arch.hidden, arch.heads, arch.ffn
        if rng.random() < rate:
            layers = self._toggle_layer(layers, rng)
        if rng.random() < rate:
            hidden = rng.choice(self.hidden)
        if rng.random() < rate or heads not in self._valid_heads[hidden]:
            heads = rng.choice(self._valid_heads[hidden])
        if rng.random() < rate:
            ffn = rng.choice(self.ffn)
        return Arch(tuple(sorted(layers)), hidden, heads, ffn)

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Uniform crossover: each gene from either parent; the layer set per layer index, its
        depth repaired into the allowed range; heads repaired to fit the hidden size."""
        pick = lambda x, y: x if rng.random() < 0.5 else y  # noqa: E731
        layers = [i for i in range(self.teacher_layers) if pick(i in a.layers, i in b.layers)]
        while len(layers) < self.depths.start:
            layers = sorted(set(layers) | {rng.randrange(self.teacher_layers)})
        while len(layers) > self.depths.stop - 1:
            layers.remove(rng.choice(layers))
        hidden = pick(a.hidden, b.hidden)
        heads = pick(a.heads, b.heads)
        if heads not in self._valid_heads[hidden]:
            heads = rng.choice(self._valid_heads[hidden])
        return Arch(tuple(layers), hidden, heads, pick(a.ffn, b.ffn))

    def _toggle_layer(self, layers: list[int], rng: random.Random) -> list[int]:
        can_drop = len(layers) > self.depths.start
        can_add = len(layers) < self.depths.stop - 1
        if can_add and (not can_drop or rng.random() < 0.5):
            return layers + [rng.choice([i for i in range(self.teacher_layers) if i not in layers])]
        if can_drop:
            drop = rng.choice(layers)
            return [i for i in layers if i != drop]
        return layers

    def as_dict(self) -> dict:
        return {
            "teacher_layers": self.teacher_layers,
            "teacher_heads": self.teacher_heads,
            "teacher_head_size": self.teacher_head_size,
            "hidden": list(self.hidden),
            "heads": list(self.heads),
            "ffn": list(self.ffn),
            "min_layers": self.min_layers,
            "max_layers": self.max_layers,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpace:
        return cls(
            d["teacher_layers"],
            d["teacher_heads"],
            d["teacher_head_size"],
            tuple(d["hidden"]),
            tuple(d["heads"]),
            tuple(d["ffn"]),
            d.get("min_layers", 1),
            d.get("max_layers"),
        )


def _spread(teacher_layers: int, depth: int) -> tuple[int, ...]:
    """Evenly spread layers ending at the last one (as layer truncation keeps them)."""
    return tuple(round((i + 1) * teacher_layers / depth) - 1 for i in range(depth))
