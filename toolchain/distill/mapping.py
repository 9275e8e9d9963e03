"""Layer mappings: which teacher layer supervises which student layer, per training step.

- ``none``: logits only, no intermediate supervision;
- ``uniform``: evenly spaced teacher layers (skip), ending at the last (6 -> 3: 1, 3, 5);
- ``last``: the last k teacher layers;
- ``rail``: RAIL-KD, every step a fresh random sample of as many teacher layers as the student
  has, kept in order;
- ``ga``: a fixed mapping found by :mod:`toolchain.distill.ga`.

A mapping is a list of 0-based teacher layer indices, one per student layer, strictly increasing.

Example::

    mapper = LayerMapper("rail", teacher_layers=6, student_layers=3, seed=0)
    mapper()  # e.g. [0, 2, 5]; a new sample at every call
"""

from __future__ import annotations

import random

from toolchain.distill.init import uniform_layers
from toolchain.errors import ConfigError

MAPPINGS = ("none", "uniform", "last", "rail", "ga")


def is_valid(mapping: list[int], teacher_layers: int, student_layers: int) -> bool:
    """Strictly increasing, in range, one teacher layer per student layer."""
    return (
        len(mapping) == student_layers
        and all(0 <= m < teacher_layers for m in mapping)
        and all(a < b for a, b in zip(mapping, mapping[1:], strict=False))
    )


class LayerMapper:
    """Gives the mapping to use at each step (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        teacher_layers: int,
        student_layers: int,
        *,
        seed: int = 0,
        genome: list[int] | None = None,
    ):
        if kind not in MAPPINGS:
            raise ConfigError(f"unknown mapping {kind!r}; expected one of {', '.join(MAPPINGS)}")
        if student_layers > teacher_layers and kind != "none":
            raise ConfigError(
                f"{kind} mapping needs student layers ({student_layers}) <= "
                f"teacher layers ({teacher_layers})"
            )
        self.kind, self.teacher_layers, self.student_layers = kind, teacher_layers, student_layers
        self.rng = random.Random(seed)
        if kind == "ga":
            if genome is None or not is_valid(list(genome), teacher_layers, student_layers):
                raise ConfigError(f"ga mapping needs a valid genome, got {genome}")
            self.fixed = list(genome)
        elif kind == "uniform":
            self.fixed = uniform_layers(teacher_layers, student_layers)
        elif kind == "last":
            self.fixed = list(range(teacher_layers - student_layers, teacher_layers))
        else:
            self.fixed = []

    def __call__(self) -> list[int]:
        if self.kind == "rail":
            return sorted(self.rng.sample(range(self.teacher_layers), self.student_layers))
        return list(self.fixed)

    def state(self) -> object:
        return self.rng.getstate()

    def set_state(self, state) -> None:
        if state is not None:
            self.rng.setstate(_as_rng_state(state))


def _as_rng_state(state):
    # JSON/torch round trips turn the tuple into lists; random wants (int, tuple, None|float).
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
