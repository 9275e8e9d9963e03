"""toolchain/kinds: the task-kind registry; a kind without an entry is refused before any work."""

from __future__ import annotations

import dataclasses

import pytest

from toolchain.data.tasks import get_task
from toolchain.errors import ConfigError
from toolchain.kinds import kind_for, register_kind, supported_kinds
from toolchain.kinds.sequence import SEQUENCE, DevScorer


def test_sequence_tasks_have_an_entry():
    assert kind_for(get_task("sst2")) is SEQUENCE and kind_for(get_task("stsb")) is SEQUENCE
    assert SEQUENCE.head == "sequence-classification"
    assert SEQUENCE.export_task == "text-classification"
    assert SEQUENCE.dev_scorer is DevScorer
    assert supported_kinds() == (
        "classification", "language-modeling", "regression", "token-classification"
    )  # fmt: skip


def test_language_modelling_has_its_entry():
    from toolchain.kinds.causal_lm import LANGUAGE_MODELING, LMDevScorer

    assert kind_for(get_task("wikitext2")) is LANGUAGE_MODELING
    assert LANGUAGE_MODELING.head == "causal-lm" and LANGUAGE_MODELING.dev_scorer is LMDevScorer


@pytest.mark.parametrize("task", ["conll2003", "conll2000"])
def test_tagging_tasks_have_their_entry(task):
    from toolchain.bundle.tagger import TaggerRunner
    from toolchain.kinds.token import TOKEN, TokenDevScorer

    kind = kind_for(get_task(task))
    assert kind is TOKEN and kind.head == "token-classification"
    assert kind.export_task == "token-classification"  # optimum's task for the baseline
    assert kind.dev_scorer is TokenDevScorer and kind.bundle_runner is TaggerRunner


def test_a_kind_without_an_entry_is_refused_naming_the_supported_ones():
    spec = dataclasses.replace(get_task("sst2"), name="speech", kind="speech-recognition")
    with pytest.raises(ConfigError) as e:
        kind_for(spec)
    msg = str(e.value)
    assert "task 'speech' (speech-recognition)" in msg
    assert (
        "supported task kinds are classification, language-modeling, regression, "
        "token-classification" in msg
    )


def test_a_kind_is_served_by_one_entry():
    other = dataclasses.replace(SEQUENCE, name="another")
    with pytest.raises(ValueError, match="already served"):
        register_kind(other)
