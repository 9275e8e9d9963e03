"""Tokenisation and batching for every task kind.

Sequence tasks encode (text, text_pair) with truncation; token tasks label the first sub-word of
each word (the rest get -100, ignored by the loss); language modelling concatenates the text and
cuts it into blocks. Batches are length-grouped (shuffled in chunks, sorted inside a chunk) so
padding stays small, and padded per batch.

Example::

    enc = encode(spec, examples, tokenizer, max_len=128)
    for batch in batches(enc, 32, pad_id=tokenizer.pad_token_id, shuffle=True, seed=0):
        loss = model(**batch).loss
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from toolchain.data.readers import DataError, Example, TokenExample
from toolchain.data.tasks import TaskSpec

IGNORE = -100  # label ignored by the loss (non-first sub-words, padding)


@dataclass
class Encoded:
    """One tokenised example; ``word_ids`` maps tokens to words (token tasks)."""

    input_ids: list[int]
    label: int | float | list[int] | None
    token_type_ids: list[int] | None = None
    word_ids: list[int | None] | None = None


def encode(spec: TaskSpec, examples: list, tokenizer, max_len: int) -> list[Encoded]:
    """Tokenise ``examples`` of ``spec`` (see module docstring)."""
    if spec.kind == "language-modeling":
        return _encode_lm(examples, tokenizer, max_len)
    if spec.kind == "token-classification":
        return [_encode_tokens(ex, tokenizer, max_len) for ex in examples]
    return _encode_sequences(examples, tokenizer, max_len)


def _encode_sequences(examples: list[Example], tokenizer, max_len: int) -> list[Encoded]:
    texts = [ex.text for ex in examples]
    pairs = [ex.text_pair for ex in examples]
    kwargs = {"truncation": True, "max_length": max_len}
    if any(p is not None for p in pairs):
        enc = tokenizer(texts, [p or "" for p in pairs], **kwargs)
    else:
        enc = tokenizer(texts, **kwargs)
    types = enc.get("token_type_ids")
    return [
        Encoded(ids, ex.label, types[i] if types is not None else None)
        for i, (ids, ex) in enumerate(zip(enc["input_ids"], examples, strict=True))
    ]


def _encode_tokens(ex: TokenExample, tokenizer, max_len: int) -> Encoded:
    enc = tokenizer(list(ex.tokens), is_split_into_words=True, truncation=True, max_length=max_len)
    word_ids = enc.word_ids()
    labels, previous = [], None
    for w in word_ids:
        first = w is not None and w != previous
        labels.append(ex.tags[w] if (first and ex.tags is not None) else IGNORE)
        previous = w
    return Encoded(enc["input_ids"], labels, enc.get("token_type_ids"), word_ids)


def _encode_lm(lines: list[str], tokenizer, max_len: int) -> list[Encoded]:
    ids: list[int] = []
    for line in lines:
        ids.extend(tokenizer(line + "\n", add_special_tokens=False)["input_ids"])
    blocks = [ids[i : i + max_len] for i in range(0, len(ids) - 1, max_len)]
    return [Encoded(b, None) for b in blocks if len(b) > 1]


def batches(
    encoded: list[Encoded],
    batch_size: int,
    *,
    pad_id: int,
    shuffle: bool = False,
    seed: int = 0,
    group_chunk: int = 50,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield ``(indices, tensors)``; tensors hold input_ids, attention_mask, labels and, when the
    tokenizer makes them, token_type_ids. Shuffled batches are length-grouped."""
    order = list(range(len(encoded)))
    if shuffle:
        rng = random.Random(seed)
        rng.shuffle(order)
        chunk = batch_size * group_chunk
        order = [
            i
            for s in range(0, len(order), chunk)
            for i in sorted(order[s : s + chunk], key=lambda k: len(encoded[k].input_ids))
        ]
        groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        rng.shuffle(groups)
    else:
        groups = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    for group in groups:
        yield group, collate([encoded[i] for i in group], pad_id)


def lm_labels(batch: dict) -> dict:
    """``batch`` with causal-LM labels where it has none: the input itself, padding ignored (the
    model shifts them by one)."""
    if "labels" not in batch:
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)
    return batch


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[i, : len(e.input_ids)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if items[0].token_type_ids is not None:
        types = torch.zeros_like(ids)
        for i, e in enumerate(items):
            types[i, : len(e.token_type_ids)] = torch.tensor(e.token_type_ids)
        out["token_type_ids"] = types
    labels = _labels(items, width)
    if labels is not None:
        out["labels"] = labels
    return out


def _labels(items: list[Encoded], width: int) -> torch.Tensor | None:
    first = items[0].label
    if isinstance(first, list):  # token tags: (B, T), padded with IGNORE
        out = torch.full((len(items), width), IGNORE, dtype=torch.long)
        for i, e in enumerate(items):
            out[i, : len(e.label)] = torch.tensor(e.label)
        return out
    if all(e.label is None for e in items):  # language modelling, unlabelled test data
        return None
    if any(e.label is None for e in items):  # the readers refuse this in a labelled split
        raise DataError("a batch mixes labelled and unlabelled examples: label every row")
    if isinstance(first, float):
        return torch.tensor([float(e.label) for e in items], dtype=torch.float32)
    return torch.tensor([int(e.label) for e in items], dtype=torch.long)
