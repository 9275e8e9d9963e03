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

import codecs
import csv
import difflib
import io
import itertools
import json
import os
import random
import shlex
from collections import Counter
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
    its file does not exist, and ``train`` then excludes those examples; for running text
    (``format="text"``) the hold-out is the last articles instead of random lines. With no data
    folder at all (``data_dir`` None and no ``$EDGEC_DATA_DIR``), the split is fetched with
    ``datasets``.

    Raises:
        DataError: the file is missing, not UTF-8, malformed, or holds no example; a labelled
            split (every split but ``test``) lacks its label column or a row's label.
    """
    data_dir = resolve_data_dir(data_dir) if spec.folder else None
    if spec.folder and data_dir is None:
        return load_split_from_hub(spec, split)
    if split in ("train", "validation") and not _has_file(spec, "validation", data_dir):
        path = split_path(spec, "train", data_dir)
        train = read_file(spec, path, split="train")
        if len(train) < 2:
            raise DataError(
                f"{path}: {len(train)} example: too few to hold out a validation split; "
                "add examples or give a validation file"
            )
        if spec.format == "text":  # running text: whole articles at the end, not random lines
            held = _tail_holdout(train, spec.validation_fraction)
        else:
            held = _holdout(len(train), spec.validation_fraction, holdout_seed)
        if split == "validation":
            return [train[i] for i in sorted(held)]
        return [ex for i, ex in enumerate(train) if i not in held]
    return read_file(spec, split_path(spec, split, data_dir), split=split)


def _has_file(spec: TaskSpec, split: str, data_dir) -> bool:
    return split in spec.files and split_path(spec, split, data_dir).is_file()


def _holdout(n: int, fraction: float, seed: int) -> set[int]:
    k = max(1, int(round(n * fraction))) if n > 1 else 0
    return set(random.Random(seed).sample(range(n), k))


def _tail_holdout(lines: list[str], fraction: float) -> set[int]:
    """The last ``fraction`` of running text, starting at an article's title (a WikiText
    ``= Title =`` line) where there is one, so that no article is split between train and
    validation."""
    n = len(lines)
    start = n - max(1, int(round(n * fraction)))
    titles = [i for i in range(1, n) if _is_title(lines[i])]
    after = [i for i in titles if i >= start]
    before = [i for i in titles if i < start]
    if after:
        start = after[0]
    elif before:
        start = before[-1]
    return set(range(start, n))


def _is_title(line: str) -> bool:
    return line.startswith("= ") and line.endswith(" =") and not line.startswith("= =")


def read_file(spec: TaskSpec, path: Path, *, split: str | None = None) -> list:
    """Read one file of ``spec`` in its format.

    Args:
        split: the split the file holds; every split but ``test`` must be labelled (None: rows
            may be unlabelled, as in a test file).

    Raises:
        DataError: naming the file and line: missing, not UTF-8, malformed, or no example.
    """
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
    out = reader(spec, path, labelled=split not in (None, "test"))
    if not out:
        raise DataError(
            f"{path}: no examples (an empty file, or only a header line); expected format: "
            f"{FORMAT_HELP[spec.format]}"
        )
    return out


def open_text(path: Path, *, newline: str | None = None) -> Iterator[str]:
    """The lines of the file decoded as UTF-8 (a byte-order mark dropped), streamed as ``open``
    would with ``newline`` (None: universal newlines; "": line ends kept, for ``csv``).

    The file is opened now and read as the lines are consumed, so a large file is never held
    whole; it is closed when the lines run out (or the iterator is dropped).

    Raises:
        DataError: the file cannot be read, or is not UTF-8 (naming the line and byte); the
            first when called, the others while iterating.
    """
    try:
        raw = path.open("rb")
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    return _decoded_lines(path, raw, newline)


def _decoded_lines(path: Path, raw, newline: str | None) -> Iterator[str]:
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline) as text:
        try:
            yield from text
            return
        except UnicodeDecodeError:
            pass  # its offsets are within one buffered chunk: find the file's line and byte
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    line, what = _first_undecodable(path)
    raise DataError(f"{path}:{line}: not UTF-8: {what}; save the file as UTF-8")


def _first_undecodable(path: Path) -> tuple[int, str]:
    """(3, ``byte 25 (0xe9) cannot be decoded``): the line and file offset (a BOM counted) of
    the first byte that is not UTF-8; read again in chunks, on the error path only."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0  # bytes and newlines before ``chunk``
    with path.open("rb") as f:
        while True:
            chunk = f.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                # e.object = the decoder's held-back bytes of an unfinished character + chunk;
                # those bytes are never a newline, and they end ``offset``
                start = offset + len(chunk) - len(e.object) + e.start
                line = lines + e.object.count(b"\n", 0, e.start) + 1
                return line, f"byte {start} (0x{e.object[e.start]:02x}) cannot be decoded"
            if not chunk:
                return 1, "undecodable bytes"  # the file changed since the first read
            offset += len(chunk)
            lines += chunk.count(b"\n")


# -- GLUE TSV and tables ---------------------------------------------------------------------
def read_glue_tsv(spec: TaskSpec, path: Path, *, labelled: bool = False) -> list[Example]:
    rows = _tsv_rows(path)
    if spec.header:
        header = next(rows, (0, []))[1]
        if not header:
            return []
        text_idx, label_idx = _columns(spec, header, path, labelled)
    else:
        text_idx, label_idx = None, None
    out = []
    for lineno, row in rows:
        if text_idx is None:  # headerless (CoLA): decide the layout from the first row
            text_idx, label_idx = _headerless_columns(spec, row, path, lineno)
        out.append(_example(spec, row, text_idx, label_idx, f"{path}:{lineno}", labelled))
    return out


def read_table(spec: TaskSpec, path: Path, *, labelled: bool = False) -> list[Example]:
    indexed, records = _records(spec, path)
    out = []
    for lineno, record in records:
        missing = [c for c in (*spec.text_columns, spec.label_column) if c and c not in record]
        if missing:
            raise DataError(
                f"{path}:{lineno}: missing column(s) {', '.join(missing)}; this row has: "
                f"{', '.join(map(str, record))}; expected format: {FORMAT_HELP[spec.format]}"
            )
        where = f"{path}:{lineno}"
        row = [_text_cell(record, c, where) for c in spec.text_columns]
        label = record.get(spec.label_column) if spec.label_column else None
        row.append("" if label is None else str(label))
        n = len(spec.text_columns)
        try:
            out.append(_example(spec, row, list(range(n)), n, where, labelled))
        except DataError as e:
            if indexed and lineno == 1:
                raise DataError(f"{e}; {_FIRST_LINE_IS_DATA}") from None
            raise
    return out


_FIRST_LINE_IS_DATA = (
    "with column numbers (--text-column 0 --label-column 1) the first line is read as data; if "
    "it is a header, name the columns instead (--text-column sentence --label-column label)"
)


def _text_cell(record: dict, column: str, where: str) -> str:
    value = record[column]
    if value is None:
        raise DataError(f"{where}: no text in column '{column}' (the row is shorter, or null)")
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: column '{column}' holds {type(value).__name__}, not text")
    return str(value)


def infer_labels(spec: TaskSpec, data_dir=None) -> TaskSpec:
    """For a classification table task without label names: the sorted label values of train.

    Raises:
        DataError: fewer than two labels; a rare label that looks like a typo of a common one;
            with column numbers, a first line that looks like a header.
    """
    if spec.kind != "classification" or spec.labels or spec.format not in ("tsv", "csv", "jsonl"):
        return spec
    path = split_path(spec, "train", data_dir)
    if not path.is_file():
        raise DataError(f"{spec.name}: data file not found: {path}")
    indexed, records = _records(spec, path)
    counts: Counter[str] = Counter()
    first_line: dict[str, int] = {}
    for lineno, record in records:
        value = record.get(spec.label_column)
        if value is None or isinstance(value, (dict, list)) or not str(value).strip():
            continue
        counts[str(value).strip()] += 1
        first_line.setdefault(str(value).strip(), lineno)
    if indexed:
        _refuse_header_as_data(counts, first_line, path)
    if len(counts) < 2:
        raise DataError(
            f"{path}: column '{spec.label_column}' has {len(counts)} distinct label(s); a "
            "classification task needs at least 2"
            + ("" if indexed else f" (header: {_header_hint(spec, path)})")
        )
    _refuse_label_typos(counts, first_line, path)
    return replace(spec, labels=_sorted_labels(counts))


def _sorted_labels(counts: Counter) -> tuple[str, ...]:
    numeric = all(v.lstrip("-").isdigit() for v in counts)
    return tuple(sorted(counts, key=int) if numeric else sorted(counts))


def _refuse_header_as_data(counts: Counter, first_line: dict, path: Path) -> None:
    # a header's label cell ("label") occurs once, on line 1, beside labels that repeat
    first = next((v for v, line in first_line.items() if line == 1), None)
    others = [n for v, n in counts.items() if v != first]
    if first is not None and counts[first] == 1 and len(others) >= 2 and min(others) >= 2:
        raise DataError(
            f"{path}:1: the label {first!r} occurs only on this line; {_FIRST_LINE_IS_DATA}"
        )


def _refuse_label_typos(counts: Counter, first_line: dict, path: Path) -> None:
    # a label in at most 0.1% of the rows that nearly spells a label 10x more common
    total = sum(counts.values())
    for value, n in counts.items():
        if n > max(1, total // 1000):
            continue
        common = [v for v, m in counts.items() if m >= 10 * n and v != value]
        near = [v for v in common if v.lower() == value.lower()]
        near = near or difflib.get_close_matches(value, common, n=1, cutoff=0.75)
        if near:
            listed = ",".join(_sorted_labels(counts))  # a label with a comma: no --labels
            shown = len(listed) <= 100 and listed.count(",") == len(counts) - 1
            listed = shlex.quote(listed) if shown else "A,B,..."
            raise DataError(
                f"{path}:{first_line[value]}: label {value!r} ({n} row(s)) looks like a typo of "
                f"{near[0]!r} ({counts[near[0]]} rows); fix the row, or, if it is a class, name "
                f"every class: --labels {listed} (in Python: table_task(..., labels=...))"
            )


def _header_hint(spec: TaskSpec, path: Path) -> str:
    if spec.format == "jsonl":
        return "JSON Lines have none"
    header = next(_delimited_rows(path, spec.format), (0, []))[1]
    return ", ".join(header) or "none"


def _records(spec: TaskSpec, path: Path) -> tuple[bool, Iterator[tuple[int, dict]]]:
    """(whether columns are numbers, (line, record) pairs) of a TSV/CSV/JSONL table."""
    if spec.format == "jsonl":
        return False, _jsonl_records(path)
    rows = _delimited_rows(path, spec.format)
    first = next(rows, None)
    if first is None:
        return False, iter(())
    lineno, header = first
    names = [c for c in (*spec.text_columns, spec.label_column) if c]
    if all(n in header for n in names):
        return False, _dicts(header, rows)
    if all(n.isdigit() for n in names):  # a file without a header: the first line is data
        columns = [str(i) for i in range(max(int(n) for n in names) + 1)]
        return True, _dicts(columns, itertools.chain([first], rows))
    absent = [n for n in names if n not in header]
    shown = ", ".join(header)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise DataError(
        f"{path}:{lineno}: no column {', '.join(absent)} in the header line "
        f"({shown}); if the file has no header line, give column numbers counted "
        f"from 0 (--text-column 0 --label-column 1); expected format: {FORMAT_HELP[spec.format]}"
    )


def _dicts(names: list[str], rows) -> Iterator[tuple[int, dict]]:
    # cells past the row's end are None: a short row misses them (never the text 'None')
    for lineno, row in rows:
        yield lineno, {name: (row[i] if i < len(row) else None) for i, name in enumerate(names)}


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    # GLUE text holds quote characters that are not CSV quoting.
    return _delimited_rows(path, "glue-tsv")


def _delimited_rows(path: Path, fmt: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of the non-blank rows of a TSV or CSV file."""
    lines = open_text(path, newline="")
    if fmt == "glue-tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",")
    lineno = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}") from None
        if row and any(cell.strip() for cell in row):
            yield lineno, row
        lineno = reader.line_num + 1


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in enumerate(open_text(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg}): {line[:80]!r}") from None
        except RecursionError:
            raise DataError(f"{path}:{lineno}: JSON nested too deeply: {line[:80]!r}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {line[:80]!r}")
        yield lineno, record


def _find(header: list[str], alternatives: str) -> int | None:
    for name in alternatives.split("|"):
        if name in header:
            return header.index(name)
    return None


def _columns(spec: TaskSpec, header: list[str], path: Path, labelled: bool):
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
    if label_idx is None and labelled and spec.label_column:  # only a test file may lack it
        raise DataError(
            f"{path}:1: no label column {spec.label_column.replace('|', ' or ')} in the header "
            f"({', '.join(header)}); every split but test must be labelled"
        )
    return text_idx, label_idx


def _headerless_columns(spec, row, path, lineno) -> tuple[list[int], int]:
    if len(row) == 2:  # sentence, label
        return [0], 1
    if len(row) == 4:  # GLUE original CoLA: source, label, original label, sentence
        return [3], 1
    raise DataError(
        f"{path}:{lineno}: expected 2 columns (sentence, label) or 4 (source, label, "
        f"original label, sentence) separated by tabs, got {len(row)}"
    )


def _example(spec, row, text_idx, label_idx, where: str, labelled: bool) -> Example:
    need = max([*text_idx, label_idx or 0]) + 1
    if len(row) < need:
        raise DataError(
            f"{where}: expected at least {need} tab-separated columns, got {len(row)}: "
            f"{chr(9).join(row)[:120]!r}"
        )
    texts = [row[i].strip() for i in text_idx]
    raw = row[label_idx].strip() if label_idx is not None else ""
    label = parse_label(spec, raw, where)
    if label is None and labelled and spec.label_column:
        raise DataError(
            f"{where}: no label ({raw!r}); every split but test must be labelled: fix or drop "
            "the row"
        )
    return Example(text=texts[0], text_pair=texts[1] if len(texts) > 1 else None, label=label)


# -- CoNLL and text ---------------------------------------------------------------------------
def read_conll(spec: TaskSpec, path: Path, *, labelled: bool = False) -> list[TokenExample]:
    tag_index = {t: i for i, t in enumerate(spec.labels)}
    sentences, tokens, tags = [], [], []
    for lineno, line in enumerate(open_text(path), 1):
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


def read_text(spec: TaskSpec, path: Path, *, labelled: bool = False) -> list[str]:
    """Non-empty lines, stripped (WikiText paragraphs and headings)."""
    return [line.strip() for line in open_text(path) if line.strip()]


__all__ = [
    "DataError",
    "Example",
    "TokenExample",
    "load_split",
    "parse_label",
    "read_file",
    "resolve_data_dir",
]
