"""toolchain/data/clean.py: each rule on crafted examples, counts, switches, near-duplicates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from toolchain.config import DataConfig
from toolchain.data.clean import clean, jaccard, near_duplicates, normalise, shingles
from toolchain.data.readers import DataError, Example, TokenExample

CRAFTED = [
    Example("A fine film.", None, 1),  # kept
    Example("a fine film", None, 1),  # exact duplicate after normalising
    Example("   ", None, 0),  # empty
    Example("-- !!", None, 0),  # garbage: no letters or digits
    Example("Mixed feelings here", None, 1),  # label conflict (with the next)
    Example("mixed feelings here!", None, 0),  # label conflict
    Example("x" * 50, None, 1),  # too long for max_chars=40
    Example("the plot is thin but the actors carry every single scene well", None, 1),
    Example("the plot is thin but the actors carry every single scene well .", None, 1),  # exact
    Example("the plot is thin but the actors carry every single scene well indeed", None, 1),
    Example("A different sentence entirely", None, 0),  # kept
]


def test_each_rule_counts_its_removals():
    kept, report = clean(CRAFTED, DataConfig(max_chars=40, near_duplicate_threshold=0.8))
    # length: the 50 x's and the three 60+-character "plot" sentences.
    assert report.removed == {
        "empty": 2,
        "length": 4,
        "label_conflict": 2,
        "exact_duplicate": 1,
        "near_duplicate": 0,
    }
    assert [ex.text for ex in kept] == ["A fine film.", "A different sentence entirely"]
    assert report.total == 11 and report.kept == 2
    assert report.as_dict()["removed"]["empty"] == 2


def test_near_duplicates_without_length_filter():
    kept, report = clean(CRAFTED, DataConfig(near_duplicate_threshold=0.8))
    assert report.removed["exact_duplicate"] == 2 and report.removed["near_duplicate"] == 1
    texts = [ex.text for ex in kept]
    assert texts.count("the plot is thin but the actors carry every single scene well") == 1
    assert not any(t.endswith("indeed") for t in texts)


def test_rules_switch_off():
    kept, report = clean(CRAFTED, DataConfig(clean=False))
    assert kept == CRAFTED and not report.enabled and sum(report.removed.values()) == 0
    cfg = DataConfig(dedup_exact=False, dedup_near=False, drop_label_conflicts=False)
    kept, report = clean(CRAFTED, cfg)
    assert report.removed == {
        "empty": 2,
        "length": 0,
        "label_conflict": 0,
        "exact_duplicate": 0,
        "near_duplicate": 0,
    }
    assert len(kept) == 9


def test_first_copy_is_kept_in_order():
    exs = [Example("b", None, 0), Example("a", None, 1), Example("B", None, 0)]
    kept, _ = clean(exs, replace(DataConfig(), dedup_near=False))
    assert kept == exs[:2]


def test_token_examples_and_text_lines():
    toks = [
        TokenExample(("EU", "rejects"), (3, 0)),
        TokenExample(("EU", "rejects"), (3, 0)),
        TokenExample(("EU", "rejects"), (1, 0)),
        TokenExample(("-",), (0,)),
    ]
    kept, report = clean(toks[:2] + toks[3:], DataConfig())
    assert kept == toks[:1] and report.removed == {
        "empty": 1, "length": 0, "label_conflict": 0, "exact_duplicate": 1, "near_duplicate": 0,
    }  # fmt: skip
    with pytest.raises(DataError) as info:  # conflicts and garbage: nothing left
        clean(toks, DataConfig())
    assert str(info.value) == (
        "cleaning kept 0/4 (removed: empty 1, label_conflict 3): no training example is left; "
        "check the training file, or relax the rules (data: {clean: false}, or "
        "min_chars/max_chars/dedup_near)"
    )
    lines, report = clean(["= Title =", "= title =", "", "Body text ."], DataConfig())
    assert lines == ["= Title =", "Body text ."]


def test_helpers():
    assert normalise("It's  GREAT!!") == "it s great"
    assert shingles("a b c d") == {"a b c", "b c d"} and shingles("a b") == {"a b"}
    assert jaccard({1, 2}, {2, 3}) == 1 / 3
    texts = [
        normalise(t)
        for t in (
            "one two three four five six seven eight nine ten",
            "one two three four five six seven eight nine ten eleven",
            "completely unrelated words in this line here",
        )
    ]
    assert near_duplicates(texts, 0.8) == {1}
    assert near_duplicates(texts, 0.95) == set()


def test_near_duplicate_recall_on_planted_pairs():
    """200 random 40-word texts and 100 planted near-copies (one word changed: shingle Jaccard
    about 0.85): every copy is found, and no original is dropped."""
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    originals = [" ".join(rng.choices(vocab, k=40)) for _ in range(200)]
    copies = []
    for text in originals[:100]:
        words = text.split()
        words[rng.randrange(40)] = rng.choice(vocab)
        copies.append(" ".join(words))
    texts = [normalise(t) for t in originals + copies]
    for i in range(len(copies)):
        assert jaccard(shingles(texts[i]), shingles(texts[200 + i])) >= 0.8
    assert near_duplicates(texts, 0.8) == set(range(200, 300))
