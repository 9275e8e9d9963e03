"""Readers for task files: GLUE TSV, CoNLL columns, raw text, and TSV/CSV/JSONL tables.

Data is found under a data directory with the layout of ``shared/data`` (``--data-dir`` or
``$EDGEC_DATA_DIR``), or, with no data directory, fetched with the ``datasets`` library when it is
installed and the machine is online. A missing or malformed file raises :class:`DataError` naming
the expected path, the format and the offending line.

Example::

    >>> examples = load_split(get_task("sst2"), "dev", data_dir="../shared/data")
    >>> len(examples), examples[0].label
    (872, 1)
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from toolchain.config import DATA_DIR_ENV
from toolchain.data.examples import DataError, Example, TokenExample, parse_label
from toolchain.data.hub import load_split_from_hub
from toolchain.data.tasks import TaskSpec

csv.field_size_limit(1 << 24)  # long RTE/QNLI passages exceed csv's default 128 KiB


FORMAT_HELP = {
    "glue-tsv": "GLUE TSV: tab-separated, a header naming the columns, one example per line",
    "conll": "CoNLL columns: 'token ... TAG' per line, a blank line between sentences",
    "text": "plain text, one paragraph per line",
    "tsv": "TSV with a header line naming the columns",
    "csv": "CSV with a header line naming the columns",
    "jsonl": "JSON Lines: one JSON object per line",
}


def resolve_data_dir(explicit: str | Path | None = None) -> Path | None:
    """``explicit``, else ``$EDGEC_DATA_DIR``, else None (then tasks come from the hub)."""
    value = explicit or os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if explicit else f"${DATA_DIR_ENV}"
        raise DataError(f"data folder not found: {path} (from {origin})")
    return path


def split_path(spec: TaskSpec, split: str, data_dir: str | Path | None) -> Path:
    """Where ``split`` of ``spec`` lives (tables keep absolute paths)."""
    if split not in spec.files:
        raise DataError(
            f"task {spec.name} has no '{split}' split; its splits: {', '.join(spec.files)}"
        )
    name = spec.files[split]
    if spec.folder == "":
        return Path(name)
    if data_dir is None:
        raise DataError(f"no data folder: pass --data-dir or set {DATA_DIR_ENV}")
    return Path(data_dir) / spec.folder / name


def load_split(
    spec: TaskSpec, split: str, data_dir: str | Path | None = None, *, holdout_seed: int = 0
) -> list:
    """Load one split: a list of :class:`Example`, :class:`TokenExample` or str (text lines).

    ``validation`` falls back to a seeded hold-out of ``train`` (``spec.validation_fraction``) when
    its file does not exist, and ``train`` then excludes those examples. With no data folder at
    all (``data_dir`` None and no ``$EDGEC_DATA_DIR``), the split is fetched with ``datasets``.
    """
    data_dir = resolve_data_dir(data_dir) if spec.folder else None
    if spec.folder and data_dir is None:
        return load_split_from_hub(spec, split)
    if split in ("train", "validation") and not _has_file(spec, "validation", data_dir):
        train = read_file(spec, split_path(spec, "train", data_dir))
        held = _holdout(len(train), spec.validation_fraction, holdout_seed)
        if split == "validation":
            return [train[i] for i in sorted(held)]
        return [ex for i, ex in enumerate(train) if i not in held]
    return read_file(spec, split_path(spec, split, data_dir))


def _has_file(spec: TaskSpec, split: str, data_dir) -> bool:
    return split in spec.files and split_path(spec, split, data_dir).is_file()


def _holdout(n: int, fraction: float, seed: int) -> set[int]:
    k = max(1, int(round(n * fraction))) if n > 1 else 0
    return set(random.Random(seed).sample(range(n), k))


def read_file(spec: TaskSpec, path: Path) -> list:
    """Read one file of ``spec`` in its format."""
    if not path.is_file():
        raise DataError(
            f"{spec.name}: data file not found: {path}\n  expected format: "
            f"{FORMAT_HELP[spec.format]}"
        )
    reader = {
        "glue-tsv": read_glue_tsv,
        "tsv": read_table,
        "csv": read_table,
        "jsonl": read_table,
        "conll": read_conll,
        "text": read_text,
    }[spec.format]
    return reader(spec, path)


# -- GLUE TSV and tables ---------------------------------------------------------------------
def read_glue_tsv(spec: TaskSpec, path: Path) -> list[Example]:
    rows = _tsv_rows(path)
    if spec.header:
        header = next(rows, (0, []))[1]
        text_idx, label_idx = _columns(spec, header, path)
    else:
        text_idx, label_idx = None, None
    out = []
    for lineno, row in rows:
        if text_idx is None:  # headerless (CoLA): decide the layout from the first row
            text_idx, label_idx = _headerless_columns(spec, row, path, lineno)
        out.append(_example(spec, row, text_idx, label_idx, path, lineno))
    return out


def read_table(spec: TaskSpec, path: Path) -> list[Example]:
    records = _jsonl_records(path) if spec.format == "jsonl" else _csv_records(path, spec.format)
    out = []
    for lineno, record in records:
        missing = [c for c in (*spec.text_columns, spec.label_column) if c and c not in record]
        if missing:
            raise DataError(
                f"{path}:{lineno}: missing column(s) {', '.join(missing)}; this row has: "
                f"{', '.join(record)}; expected format: {FORMAT_HELP[spec.format]}"
            )
        row = [str(record[c]) for c in spec.text_columns]
        label = record.get(spec.label_column) if spec.label_column else None
        row.append("" if label is None else str(label))
        out.append(
            _example(spec, row, list(range(len(spec.text_columns))), len(row) - 1, path, lineno)
        )
    return out


def infer_labels(spec: TaskSpec, data_dir=None) -> TaskSpec:
    """For a classification table task without label names: the sorted label values of train."""
    if spec.kind != "classification" or spec.labels or spec.format not in ("tsv", "csv", "jsonl"):
        return spec
    path = split_path(spec, "train", data_dir)
    if not path.is_file():
        raise DataError(f"{spec.name}: data file not found: {path}")
    records = _jsonl_records(path) if spec.format == "jsonl" else _csv_records(path, spec.format)
    values = {str(r.get(spec.label_column, "")) for _, r in records} - {"", "None"}
    if len(values) < 2:
        raise DataError(f"{path}: column '{spec.label_column}' has {len(values)} distinct label(s)")
    numeric = all(v.lstrip("-").isdigit() for v in values)
    labels = sorted(values, key=int) if numeric else sorted(values)
    return replace(spec, labels=tuple(labels))


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        # GLUE text holds quote characters that are not CSV quoting.
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if row and any(cell.strip() for cell in row):
                yield lineno, row


def _csv_records(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        for record in reader:
            yield reader.line_num, record


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg}): {line[:80]!r}") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {line[:80]!r}")
            yield lineno, record


def _find(header: list[str], alternatives: str) -> int | None:
    for name in alternatives.split("|"):
        if name in header:
            return header.index(name)
    return None


def _columns(spec: TaskSpec, header: list[str], path: Path) -> tuple[list[int], int | None]:
    text_idx = []
    for alternatives in spec.text_columns:
        i = _find(header, alternatives)
        if i is None:
            raise DataError(
                f"{path}:1: no column {alternatives.replace('|', ' or ')} in the header "
                f"({', '.join(header)}); expected format: {FORMAT_HELP[spec.format]}"
            )
        text_idx.append(i)
    label_idx = _find(header, spec.label_column) if spec.label_column else None
    return text_idx, label_idx  # a test file may have no label column


def _headerless_columns(spec, row, path, lineno) -> tuple[list[int], int]:
    if len(row) == 2:  # sentence, label
        return [0], 1
    if len(row) == 4:  # GLUE original CoLA: source, label, original label, sentence
        return [3], 1
    raise DataError(
        f"{path}:{lineno}: expected 2 columns (sentence, label) or 4 (source, label, "
        f"original label, sentence) separated by tabs, got {len(row)}"
    )


def _example(spec, row, text_idx, label_idx, path, lineno) -> Example:
    need = max([*text_idx, label_idx or 0]) + 1
    if len(row) < need:
        raise DataError(
            f"{path}:{lineno}: expected at least {need} tab-separated columns, got {len(row)}: "
            f"{chr(9).join(row)[:120]!r}"
        )
    texts = [row[i].strip() for i in text_idx]
    raw = row[label_idx].strip() if label_idx is not None else ""
    return Example(
        text=texts[0],
        text_pair=texts[1] if len(texts) > 1 else None,
        label=parse_label(spec, raw, f"{path}:{lineno}"),
    )


# -- CoNLL and text ---------------------------------------------------------------------------
def read_conll(spec: TaskSpec, path: Path) -> list[TokenExample]:
    tag_index = {t: i for i, t in enumerate(spec.labels)}
    sentences, tokens, tags = [], [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    sentences.append(TokenExample(tuple(tokens), tuple(tags)))
                    tokens, tags = [], []
                continue
            if len(parts) < 2:
                raise DataError(
                    f"{path}:{lineno}: expected 'token ... TAG', got {line.rstrip()!r}; "
                    f"expected format: {FORMAT_HELP['conll']}"
                )
            if parts[-1] not in tag_index:
                raise DataError(
                    f"{path}:{lineno}: unknown tag {parts[-1]!r}; {spec.name} tags: "
                    f"{', '.join(spec.labels)}"
                )
            tokens.append(parts[0])
            tags.append(tag_index[parts[-1]])
    if tokens:
        sentences.append(TokenExample(tuple(tokens), tuple(tags)))
    return sentences


def read_text(spec: TaskSpec, path: Path) -> list[str]:
    """Non-empty lines, stripped (WikiText paragraphs and headings)."""
    with path.open(encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


__all__ = [
    "DataError",
    "Example",
    "TokenExample",
    "load_split",
    "parse_label",
    "read_file",
    "resolve_data_dir",
]
