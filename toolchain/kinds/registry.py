"""The task-kind registry (see :mod:`toolchain.kinds`): entries, registration, look-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from toolchain.data.tasks import TaskSpec
from toolchain.errors import ConfigError


@dataclass(frozen=True)
class TaskKind:
    """What `edgec build` needs to know about one kind of task.

    Attributes:
        name: the entry's name (``sequence-classification``).
        spec_kinds: the :attr:`TaskSpec.kind` values it serves (``classification``, ...).
        head: the model head its models load with (``toolchain.models.loading.load_model``).
        export_task: optimum's task name for the teacher baseline's export.
        dev_scorer: ``dev_scorer(spec, teacher_dir, data_dir, *, confidence) -> DevScorer``:
            scores shipped ONNX files on the dev split against the teacher and the trivial
            baseline (``trivial_scores()``: the trivial baseline's own dev scores).
        baseline: ``baseline(teacher_dir, folder) -> Path``: the teacher as a user of optimum
            would ship it (an ONNX file in ``folder`` with its tokenizer).
        bundle_runner: the class that runs a bundle of this kind without torch.
    """

    name: str
    spec_kinds: tuple[str, ...]
    head: str
    export_task: str
    dev_scorer: Callable
    baseline: Callable
    bundle_runner: Callable


_KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind) -> TaskKind:
    """Add ``kind`` to the registry (one entry per :attr:`TaskSpec.kind` value)."""
    for spec_kind in kind.spec_kinds:
        if spec_kind in _KINDS and _KINDS[spec_kind].name != kind.name:
            raise ValueError(f"task kind {spec_kind!r} is already served by {_KINDS[spec_kind]}")
        _KINDS[spec_kind] = kind
    return kind


def supported_kinds() -> tuple[str, ...]:
    """The task kinds `edgec build` can carry end to end."""
    return tuple(sorted(_KINDS))


def kind_for(spec: TaskSpec) -> TaskKind:
    """The registry entry for ``spec``'s kind.

    Raises:
        ConfigError: no entry for that kind; the message names the supported kinds.
    """
    if spec.kind not in _KINDS:
        raise ConfigError(
            f"edgec build cannot carry task {spec.name!r} ({spec.kind}) through the pipeline yet: "
            f"supported task kinds are {', '.join(supported_kinds())}. The single stages "
            "(`edgec teacher`, `edgec distill`, `edgec export`, `edgec eval`) may still take it",
            key="task",
        )
    return _KINDS[spec.kind]


__all__ = ["TaskKind", "kind_for", "register_kind", "supported_kinds"]
