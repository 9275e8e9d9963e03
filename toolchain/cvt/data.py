"""Words for the Cross-View Training tagger: the vocabulary (a ``tokenizers`` WordLevel
tokenizer, so bundles run it like any tokenizer), the unlabelled text, and batches.

Unlabelled text (sentences split into words as the bundle runtime splits them,
:func:`toolchain.bundle.tagger.split_words`):

- ``train-rest``: the task's training sentences whose labels ``data.labelled_fraction`` sets
  aside; ``train``: every training sentence without its label (at any fraction);
- ``text``: the sentences of ``text/mr_train.tsv`` and ``text/subj_train.tsv`` of the data
  folder (movie reviews: their labels are never read);
- ``wikitext``: WikiText-2's validation articles (``wikitext-2/valid.txt``), cut into sentences
  at `` . ``; its test text is never read (perplexity is scored there);
- or a path to the user's own text file (one sentence or paragraph per line).

Example::

    words = unlabelled_sentences(spec, data_dir, ("train", "text", "wikitext"), DataConfig())
    tok = build_vocab([ex.tokens for ex in train] + words, size=20000, min_count=2)
    batch = collate([ex.tokens for ex in train[:32]], tok, max_word_bytes=16)
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from toolchain.bundle.tagger import split_words, word_bytes
from toolchain.data.readers import DataError
from toolchain.data.text import text_sentences
from toolchain.errors import ConfigError

log = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"
SOURCES = ("train-rest", "train", "text", "wikitext")
MAX_WORDS = 60  # unlabelled sentences are cut to this many words


def build_vocab(sentences, *, size: int, min_count: int):
    """A lower-casing WordLevel tokenizer over the ``size`` most frequent words of
    ``sentences`` seen at least ``min_count`` times (id 0 pads, 1 is the unknown word); its
    pre-tokenizer splits at white space only (words arrive split)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    counts = Counter(w.lower() for words in sentences for w in words)
    kept = [w for w, c in counts.most_common() if c >= min_count][: max(size - 2, 0)]
    vocab = {PAD: 0, UNK: 1, **{w: i + 2 for i, w in enumerate(kept)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.enable_padding(pad_id=0, pad_token=PAD)
    return tok


def word_ids(tokenizer, sentences: list[list[str]]) -> list[list[int]]:
    """One id per word, normalised (lower-cased) as the tokenizer does at run time."""
    norm = tokenizer.normalizer.normalize_str if tokenizer.normalizer else str
    out = []
    for words in sentences:
        ids = []
        for w in words:
            got = tokenizer.token_to_id(norm(w))
            ids.append(1 if got is None else got)
        out.append(ids)
    return out


def collate(sentences: list[list[str]], tokenizer, *, max_word_bytes: int, tags=None) -> dict:
    """Tensors of a batch: ``word_ids`` (B, W), ``char_ids`` (B, W, bytes), ``mask`` (B, W)
    and, with ``tags`` (one list per sentence), ``labels`` (B, W; -100 pads)."""
    width = max(1, max(len(s) for s in sentences))
    ids = torch.zeros((len(sentences), width), dtype=torch.long)
    mask = torch.zeros((len(sentences), width), dtype=torch.long)
    for b, row in enumerate(word_ids(tokenizer, sentences)):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    chars = torch.from_numpy(word_bytes(sentences, max_word_bytes)[:, :width].copy())
    out = {"word_ids": ids, "char_ids": chars, "mask": mask}
    if tags is not None:
        labels = torch.full((len(sentences), width), -100, dtype=torch.long)
        for b, t in enumerate(tags):
            labels[b, : len(t)] = torch.tensor(t, dtype=torch.long)
        out["labels"] = labels
    return out


def _text_sentences(path: Path, *, tsv_column: int | None = None) -> list[list[str]]:
    out = []
    for piece in text_sentences(path, tsv_column=tsv_column):
        words = [w for w, _, _ in split_words(piece)]
        if len(words) >= 2:
            out.append(words[:MAX_WORDS])
    return out


def unlabelled_sentences(spec, data_dir, sources, data_cfg, *, train=None) -> list[list[str]]:
    """The unlabelled sentences of ``sources`` (see the module docstring), each a list of
    words. ``train``: the raw training split (read from ``data_dir`` when None).

    Raises:
        ConfigError: an unknown source name that is not a file either.
        DataError: a source's files are missing from the data folder.
    """
    from toolchain.data.clean import unlabelled_rest
    from toolchain.data.readers import load_split, resolve_data_dir

    out: list[list[str]] = []
    for source in sources:
        if source in ("train", "train-rest"):
            raw = train if train is not None else load_split(spec, "train", data_dir)
            if source == "train-rest":
                rows = unlabelled_rest(raw, data_cfg)
            else:
                rows = raw
            got = [list(ex.tokens) for ex in rows]
        elif source in ("text", "wikitext"):
            root = resolve_data_dir(data_dir)
            if root is None:
                raise DataError(f"unlabelled text {source!r} needs a data folder (--data-dir)")
            if source == "text":
                files = [root / "text" / "mr_train.tsv", root / "text" / "subj_train.tsv"]
                column = 1
            else:
                files, column = [root / "wikitext-2" / "valid.txt"], None
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise DataError(
                    f"unlabelled text {source!r}: {', '.join(missing)} not found; drop the "
                    f"source (cvt.unlabelled_sources) or give a data folder that has it"
                )
            got = [s for f in files for s in _text_sentences(f, tsv_column=column)]
        else:
            path = Path(source)
            if not path.is_file():
                raise ConfigError(
                    f"unlabelled source {source!r} is neither one of {', '.join(SOURCES)} nor "
                    "a text file",
                    key="cvt.unlabelled_sources",
                )
            got = _text_sentences(path)
        log.info("unlabelled text %s: %d sentences", source, len(got))
        out.extend(got)
    return out


def length_batches(n_or_lengths, batch_size: int, rng: np.random.Generator):
    """Shuffled batches of indices, each of similar lengths (sorted within chunks of 50
    batches), in random order."""
    lengths = np.asarray(n_or_lengths)
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    groups = []
    for s in range(0, len(order), chunk):
        part = order[s : s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        groups += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(groups)
    return groups


__all__ = [
    "SOURCES",
    "build_vocab",
    "collate",
    "length_batches",
    "unlabelled_sentences",
    "word_ids",
]
