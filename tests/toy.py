"""A toy sentiment task shared by the fast tests: the label is carried by one word (good/great vs
bad/awful) among shuffled filler words, so a tiny model learns it in a few dozen steps."""

from __future__ import annotations

import random
from pathlib import Path

from toolchain.data.readers import Example
from toolchain.data.tasks import TaskSpec

TOY_SPEC = TaskSpec(
    name="toy",
    kind="classification",
    folder="",
    format="tsv",
    files={},
    text_columns=("text",),
    label_column="label",
    labels=("neg", "pos"),
)


def toy_examples(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(["the", "movie", "is", "was", "a", "hello", "world"], 3)
        words.append(rng.choice(["good", "great"] if label else ["bad", "awful"]))
        rng.shuffle(words)
        out.append(Example(" ".join(words), None, label))
    return out


def write_toy_table(path: Path, n: int, seed: int) -> Path:
    """``n`` toy examples as a TSV with a ``text`` and a ``label`` column."""
    rows = ["text\tlabel"] + [f"{e.text}\t{e.label}" for e in toy_examples(n, seed)]
    path.write_text("\n".join(rows) + "\n")
    return path
