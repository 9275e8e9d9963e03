"""Token classification: word splitting and span reading of the tagger runtime, the CoNLL
baseline, scoring with unseen words, and the semi-supervised split of the training labels."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from toolchain.bundle.tagger import split_words, tag_spans, word_bytes
from toolchain.config import DataConfig
from toolchain.data.clean import clean, split_labelled, unlabelled_rest
from toolchain.data.readers import TokenExample
from toolchain.data.tasks import get_task
from toolchain.errors import ConfigError
from toolchain.evaluate.metrics import spans
from toolchain.evaluate.trivial import WordTagBaseline
from toolchain.kinds.token import tags_of, words_from_subwords

SPEC = get_task("conll2003")
TAG = {t: i for i, t in enumerate(SPEC.labels)}


def test_split_words_keeps_offsets_and_splits_punctuation():
    text = "John Smith's firm, in Paris."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["John", "Smith's", "firm", ",", "in", "Paris", "."]
    assert all(text[a:b] == w for w, a, b in words)


@pytest.mark.parametrize(
    "tags",
    [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "I-ORG", "B-ORG", "O", "I-LOC"], ["O", "O"], []],
)
def test_tag_spans_read_iob_as_conlleval(tags):
    assert set(tag_spans(tags)) == spans(tags)  # the scorer's reading (conlleval's)
    assert tag_spans(tags) == sorted(tag_spans(tags), key=lambda s: s[1])


def test_word_bytes_are_utf8_plus_one_and_cut():
    out = word_bytes([["ab", "é"], ["abcdefgh"]], 4)
    assert out.shape == (2, 2, 4)
    assert out[0, 0].tolist() == [98, 99, 0, 0]
    assert out[0, 1].tolist() == [0xC3 + 1, 0xA9 + 1, 0, 0]
    assert out[1, 0].tolist() == [98, 99, 100, 101] and out[1, 1].tolist() == [0, 0, 0, 0]


def _ex(pairs):
    return TokenExample(tuple(w for w, _ in pairs), tuple(TAG[t] for _, t in pairs))


def test_word_tag_baseline_is_the_conll_baseline():
    train = [_ex([("EU", "B-ORG"), ("rejects", "O")]), _ex([("EU", "B-ORG"), ("said", "O")]),
             _ex([("EU", "B-LOC"), ("Paris", "B-LOC"), ("and", "O")])]  # fmt: skip
    base = WordTagBaseline.fit(SPEC, train)
    assert base.predict([("EU", "Paris", "unseen")]) == [[TAG["B-ORG"], TAG["B-LOC"], TAG["O"]]]
    dev = [_ex([("EU", "B-ORG"), ("Paris", "B-LOC")]), _ex([("unseen", "B-PER")])]
    assert base.scores(SPEC, dev)["span_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    perfect = [list(ex.tags) for ex in dev]
    gain = base.compare(SPEC, dev, perfect, resamples=200)
    assert gain.model == 1.0 and gain.gain == pytest.approx(1 - 0.8)
    same = base.compare(SPEC, dev, base.predict([ex.tokens for ex in dev]), resamples=200)
    assert same.gain == 0 and not same.clearly_above


def test_words_from_subwords_reads_each_first_subtoken_and_marks_unseen_words():
    logits = np.arange(6 * 2, dtype=float).reshape(6, 2)
    word_ids = [None, 0, 0, 1, 2, None]  # [CLS] w0 w0 w1 w2 [SEP]; word 3 cut off
    out = words_from_subwords(word_ids, logits, 4)
    assert out[:3].tolist() == [logits[1].tolist(), logits[3].tolist(), logits[4].tolist()]
    assert np.isnan(out[3]).all()
    assert tags_of(out, fallback=0) == [1, 1, 1, 0]  # the unseen word counts as predicted O


def test_labelled_fraction_is_seeded_disjoint_and_shared_by_every_stage():
    examples = [TokenExample((f"w{i}", "x"), (0, 0)) for i in range(200)]
    cfg = DataConfig(clean=False, labelled_fraction=0.1)
    kept, report = clean(examples, cfg)
    rest = unlabelled_rest(examples, cfg)
    assert len(kept) == 20 and len(rest) == 180 and report.unlabelled == 180
    assert set(kept).isdisjoint(rest) and set(kept) | set(rest) == set(examples)
    assert kept == clean(examples, cfg)[0]  # the same sentences for the teacher and CVT
    assert kept == [ex for ex in examples if ex in set(kept)]  # original order
    assert "labels kept on 20 (10%)" in report.summary()
    assert clean(examples, DataConfig(clean=False))[0] == examples
    assert split_labelled(examples[:3], 0.01)[0] and len(split_labelled([], 0.5)[0]) == 0
    shuffled = random.Random(1).sample(examples, len(examples))
    assert len(split_labelled(shuffled, 0.5)[0]) == 100


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_labelled_fraction_out_of_range_is_refused(bad):
    with pytest.raises(ConfigError, match="labelled_fraction"):
        DataConfig(labelled_fraction=bad)


def test_cli_candidates_and_labelled_fraction_reach_the_recipe(edgec, tmp_path):
    res = edgec("build", "--task", "conll2003", "--device", "host", "--candidates", "cvt",
                "--labelled-fraction", "0.1", "--print-recipe", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    text = res.stdout
    recipe = json.loads(text) if text.lstrip().startswith("{") else None
    if recipe is None:
        import yaml

        recipe = yaml.safe_load(text)
    assert recipe["cvt"]["enabled"] is True
    assert recipe["data"]["labelled_fraction"] == 0.1
    bad = edgec("build", "--task", "conll2003", "--labelled-fraction", "2", "--print-recipe",
                cwd=tmp_path)  # fmt: skip
    assert bad.returncode != 0 and "labelled_fraction" in bad.stderr
    assert "Traceback" not in bad.stderr
