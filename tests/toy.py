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


# -- a toy NER task: names, places and companies among filler words ------------------------------
NER_WORDS = {
    "B-PER": ["John", "Mary", "Smith", "Anna"],
    "B-LOC": ["Paris", "London", "Berlin"],
    "B-ORG": ["Reuters", "Google"],
    "O": ["the", "said", "in", "visited", "today", "and", "of", "a", "."],
}
NER_VOCAB = sorted({w.lower() for ws in NER_WORDS.values() for w in ws} | {"inc"})


def toy_ner_sentence(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for _ in range(rng.randint(3, 8)):
        r = rng.random()
        if r < 0.3:
            kind = rng.choice(["B-PER", "B-LOC"])
            out.append((rng.choice(NER_WORDS[kind]), kind))
        elif r < 0.4:
            out += [(rng.choice(NER_WORDS["B-ORG"]), "B-ORG"), ("Inc", "I-ORG")]
        else:
            out.append((rng.choice(NER_WORDS["O"]), "O"))
    return out


def write_toy_conll(folder: Path, *, train: int = 300, valid: int = 40, seed: int = 0) -> Path:
    """``folder/conll2003/{train,valid,test}.txt`` in CoNLL-2003's layout (with -DOCSTART-
    lines), for ``--task conll2003 --data-dir folder``."""
    rng = random.Random(seed)
    d = folder / "conll2003"
    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.txt", train), ("valid.txt", valid), ("test.txt", valid)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(n):
            if i and i % 50 == 0:
                lines += ["-DOCSTART- -X- -X- O", ""]
            lines += [f"{w} NNP B-NP {t}" for w, t in toy_ner_sentence(rng)] + [""]
        (d / name).write_text("\n".join(lines))
    return folder
