"""Task kinds as plug-ins: one registry entry per kind of task `edgec build` can carry from a
teacher to bundles (sequence classification/regression, token classification, and language
modelling with decoder LMs). For the build plan, another kind is one new entry plus its module;
its bundles also need :mod:`toolchain.bundle.build` to accept the kind and a runner for it.

An entry says, for its kind, which model head to load, how to score a shipped ONNX file on the
dev split (the task's metric and loyalty to the teacher), which optimum task exports the teacher
for the baseline, how to build that baseline, and how the bundle is run. `edgec build` looks the
task's kind up before any work starts and refuses a kind without an entry, naming what is
supported (as optimum registers one export spec per architecture).

Example::

    kind = kind_for(get_task("sst2"))      # the sequence-classification entry
    kind.head                              # 'sequence-classification'
    kind_for(get_task("conll2003")).head   # 'token-classification'
"""

from toolchain.kinds import causal_lm, sequence, token
from toolchain.kinds.registry import TaskKind, kind_for, register_kind, supported_kinds

__all__ = [
    "TaskKind",
    "causal_lm",
    "kind_for",
    "register_kind",
    "sequence",
    "supported_kinds",
    "token",
]
