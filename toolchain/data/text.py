"""Unlabelled text from the data folder or the user's files, for training that needs no labels
(the task-agnostic supernet, :mod:`toolchain.nas.agnostic`; the CVT tagger's unlabelled
batches, :mod:`toolchain.cvt.data`).

Sources, by name (files of the data folder, ``--data-dir`` / ``$EDGEC_DATA_DIR``):

- ``wikitext``: WikiText-2's validation articles (``wikitext-2/valid.txt``), cut into sentences
  at `` . ``; its test text is never read (perplexity is scored there);
- ``text``: the sentences of ``text/mr_train.tsv`` and ``text/subj_train.tsv`` (movie reviews
  and subjectivity: their labels are never read);
- ``sst2``: the sentences of ``glue/SST-2/train.tsv`` (their labels are never read);
- ``conll``: the sentences of ``conll2003/train.txt`` (the first column; tags never read);
- or a path to the user's own text file: one sentence or paragraph per line, UTF-8 (a byte-order
  mark is dropped).

Example::

    sentences = unlabelled_text(("wikitext", "text"), data_dir)   # list of str
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Iterator
from pathlib import Path

from toolchain.data.readers import DataError, open_text, resolve_data_dir
from toolchain.errors import ConfigError

log = logging.getLogger(__name__)

# name -> (files under the data folder, the TSV column holding the text or None for raw lines,
# whether the first line is a header)
NAMED_SOURCES: dict[str, tuple[tuple[str, ...], int | None, bool]] = {
    "wikitext": (("wikitext-2/valid.txt",), None, False),
    "text": (("text/mr_train.tsv", "text/subj_train.tsv"), 1, False),
    "sst2": (("glue/SST-2/train.tsv",), 0, True),
}
CONLL = "conll2003/train.txt"
TEXT_SOURCES = (*NAMED_SOURCES, "conll")


def text_sentences(path: Path, *, tsv_column: int | None = None, header: bool = False):
    """The sentences of a text file (WikiText lines cut at `` . ``), or of one TSV column."""
    lines = iter(open_text(path))
    if header:
        next(lines, None)
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if tsv_column is not None:
            parts = line.split("\t")
            line = parts[tsv_column] if len(parts) > tsv_column else parts[-1]
        for piece in re.split(r"(?<=\s\.)\s+", line):  # WikiText: sentences end " . "
            piece = piece.strip()
            if piece and not (piece.startswith("=") and piece.endswith("=")):  # headings
                yield piece


def conll_sentences(path: Path) -> Iterator[str]:
    """The sentences of a CoNLL file (first column, blank lines between sentences)."""
    words: list[str] = []
    for line in open_text(path):
        line = line.strip()
        if not line or line.startswith("-DOCSTART-"):
            if words:
                yield " ".join(words)
            words = []
            continue
        words.append(line.split()[0])
    if words:
        yield " ".join(words)


def source_files(source: str, data_dir) -> list[Path]:
    """The files a source reads; raises a clear error when they are missing."""
    if source not in TEXT_SOURCES:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(
                f"unlabelled text source {source!r} is neither one of "
                f"{', '.join(TEXT_SOURCES)} nor a text file (paths are relative to the working "
                "directory)",
                key="text",
            )
        return [path]
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(f"unlabelled text {source!r} needs a data folder (--data-dir)")
    names = NAMED_SOURCES[source][0] if source in NAMED_SOURCES else (CONLL,)
    files = [root / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"unlabelled text {source!r}: {', '.join(missing)} not found; name another source "
            "or give a data folder that has it"
        )
    return files


def read_source(source: str, data_dir) -> list[str]:
    """The sentences of one source (see the module docstring)."""
    files = source_files(source, data_dir)
    if source == "conll":
        return [s for f in files for s in conll_sentences(f)]
    column, header = NAMED_SOURCES.get(source, ((), None, False))[1:]
    return [s for f in files for s in text_sentences(f, tsv_column=column, header=header)]


def unlabelled_text(sources, data_dir, *, min_words: int = 2) -> list[str]:
    """The sentences of every source, in order, each of at least ``min_words`` words.

    Raises:
        ConfigError: an unknown source that is not a file either; no sentence at all.
        DataError: a source's files are missing from the data folder.
    """
    out: list[str] = []
    for source in sources:
        got = [s for s in read_source(source, data_dir) if len(s.split()) >= min_words]
        log.info("unlabelled text %s: %d sentences", source, len(got))
        out.extend(got)
    if not out:
        raise ConfigError(
            f"no sentence of {min_words}+ words in the unlabelled text {', '.join(sources)}",
            key="text",
        )
    return out


def text_batches(
    texts: list[str], tokenizer, *, max_len: int, batch_size: int, seed: int, skip: int = 0
):
    """Endless shuffled batches of tokenised ``texts`` (a new order every pass, seeded by the
    pass), the first ``skip`` left out (a resumed run)."""
    per_pass = math.ceil(len(texts) / batch_size)
    epoch, first = divmod(skip, per_pass)
    while True:
        order = list(range(len(texts)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(first * batch_size, len(order), batch_size):
            rows = [texts[i] for i in order[start : start + batch_size]]
            enc = tokenizer(rows, truncation=True, max_length=max_len, padding=True,
                            return_tensors="pt")  # fmt: skip
            yield {key: enc[key] for key in ("input_ids", "attention_mask",
                                                       "token_type_ids") if key in enc}  # fmt: skip
        epoch, first = epoch + 1, 0


__all__ = ["TEXT_SOURCES", "read_source", "text_batches", "text_sentences", "unlabelled_text"]
