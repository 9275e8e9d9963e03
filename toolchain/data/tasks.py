"""The task registry: what a task's data looks like, where its files are, and how it is scored.

Built-in tasks: the GLUE tasks (sst2, cola, rte, mrpc, stsb, qnli, qqp, mnli, wnli) in the standard
GLUE TSV layouts, conll2003 (NER) and conll2000 (chunking), and wikitext2 (language modelling).
:func:`table_task` makes a task from any TSV/CSV/JSONL files with named text and label columns.

Splits: ``train``; ``validation`` (early stopping and search: a file of its own where the data has
one, else a seeded hold-out of train); ``dev`` (the split papers report, e.g. the official GLUE dev
set); ``test`` (may be unlabelled).

Example::

    >>> spec = get_task("sst2")
    >>> spec.kind, spec.labels, spec.metrics
    ('classification', ('negative', 'positive'), ('accuracy',))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from toolchain.errors import ConfigError
from toolchain.schema import closest

TaskKind = Literal["classification", "regression", "token-classification", "language-modeling"]
DataFormat = Literal["glue-tsv", "conll", "text", "tsv", "csv", "jsonl"]


@dataclass(frozen=True)
class TaskSpec:
    """What a task's files look like and how it is scored.

    Attributes:
        name: registry name (``sst2``).
        kind: classification, regression, token-classification or language-modeling.
        folder: the task's folder relative to the data directory (``glue/SST-2``).
        format: file format; see :mod:`toolchain.data.readers`.
        files: split -> file name inside ``folder`` (absolute paths for table tasks).
        text_columns: header names of the text column(s), tried as alternatives per position:
            each entry is ``"a|b"`` meaning column ``a`` or else ``b``. For headerless files,
            column indices (``"0"``).
        label_column: header name (``"label|gold_label"``) or index of the label column.
        labels: label names in index order (classification, token tags); () otherwise.
        metrics: metric names; the first is the main one (early stopping, search).
        header: whether the files start with a header line.
        validation_fraction: share of train held out as ``validation`` when there is no file.
    """

    name: str
    kind: TaskKind
    folder: str
    format: DataFormat
    files: dict[str, str]
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("accuracy",)
    header: bool = True
    validation_fraction: float = 0.1
    description: str = ""
    source: str = ""  # how to fetch it with the `datasets` library: "glue/sst2"

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


def _glue(name, folder, text, label, labels, metrics=("accuracy",), dev="dev.tsv", source=""):
    kind: TaskKind = "regression" if not labels else "classification"
    return TaskSpec(
        name=name,
        kind=kind,
        folder=f"glue/{folder}",
        format="glue-tsv",
        files={"train": "train.tsv", "validation": "valid.tsv", "dev": dev, "test": "test.tsv"},
        text_columns=text,
        label_column=label,
        labels=labels,
        metrics=metrics,
        source=source or f"nyu-mll/glue/{name}",
    )


_ENTAIL = ("entailment", "not_entailment")
_CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
_CONLL2000_TAGS = ("O",) + tuple(
    f"{p}-{c}"
    for c in ("NP", "VP", "PP", "ADJP", "ADVP", "SBAR", "PRT", "CONJP", "INTJ", "LST", "UCP")
    for p in ("B", "I")
)

TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (a later registration of the same name replaces it)."""
    TASKS[spec.name] = spec
    return spec


for _spec in (
    _glue("sst2", "SST-2", ("sentence",), "label", ("negative", "positive")),
    # CoLA ships headerless: 2 columns (sentence, label) in some copies, 4 in the GLUE original
    # (source, label, original label, sentence); the reader handles both.
    replace(
        _glue(
            "cola",
            "CoLA",
            ("sentence",),
            "label",
            ("unacceptable", "acceptable"),
            metrics=("mcc", "accuracy"),
        ),
        header=False,
    ),
    _glue("rte", "RTE", ("sentence1", "sentence2"), "label", _ENTAIL),
    _glue(
        "mrpc",
        "MRPC",
        ("#1 String|sentence1", "#2 String|sentence2"),
        "Quality|label",
        ("not_equivalent", "equivalent"),
        metrics=("f1", "accuracy"),
    ),
    _glue(
        "stsb",
        "STS-B",
        ("sentence1", "sentence2"),
        "score|label",
        (),
        metrics=("pearson", "spearman"),
    ),
    _glue("qnli", "QNLI", ("question", "sentence"), "label", _ENTAIL),
    _glue(
        "qqp",
        "QQP",
        ("question1", "question2"),
        "is_duplicate|label",
        ("not_duplicate", "duplicate"),
        metrics=("accuracy", "f1"),
    ),
    _glue(
        "mnli",
        "MNLI",
        ("sentence1", "sentence2"),
        "gold_label|label",
        ("contradiction", "entailment", "neutral"),
        dev="dev_matched.tsv",
    ),
    _glue("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("not_entailment", "entailment")),
    TaskSpec(
        name="conll2003",
        kind="token-classification",
        folder="conll2003",
        format="conll",
        files={
            "train": "train.txt",
            "validation": "valid.txt",
            "dev": "valid.txt",
            "test": "test.txt",
        },
        labels=_CONLL2003_TAGS,
        metrics=("span_f1", "accuracy"),
        header=False,
        description="CoNLL-2003 English NER (IOB2), entity span F1 (exact match)",
        source="eriktks/conll2003",
    ),
    TaskSpec(
        name="conll2000",
        kind="token-classification",
        folder="conll2000",
        format="conll",
        files={"train": "train.txt", "dev": "test.txt", "test": "test.txt"},
        labels=_CONLL2000_TAGS,
        metrics=("span_f1", "accuracy"),
        header=False,
        description="CoNLL-2000 chunking, chunk span F1 (exact match)",
        source="eriktks/conll2000",
    ),
    # WikiText-2's train split is not in shared/data: decoders train on valid.txt and are scored on
    # the raw test split that perplexity papers use.
    TaskSpec(
        name="wikitext2",
        kind="language-modeling",
        folder="wikitext-2",
        format="text",
        # The train split is not available here: train on valid.txt (WikiText-2's validation
        # articles) and hold out its last articles for selection. test.txt covers the same
        # articles as wiki.test.raw, so it is never read: selection must not see the test text.
        files={"train": "valid.txt", "dev": "wiki.test.raw", "test": "wiki.test.raw"},
        metrics=("perplexity",),
        header=False,
        description="WikiText-2 language modelling, perplexity on wiki.test.raw (selection on "
        "held-out articles of valid.txt, none of the test articles)",
        source="Salesforce/wikitext/wikitext-2-raw-v1",
    ),
):
    register_task(_spec)


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; an unknown name lists the known ones."""
    if name in TASKS:
        return TASKS[name]
    hint = closest(name, TASKS)
    did = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise ConfigError(
        f"unknown task '{name}'{did}; known tasks: {', '.join(sorted(TASKS))}; or use "
        "--train-file with --text-column/--label-column for your own TSV/CSV/JSONL data"
    )


def table_task(
    files: dict[str, str | Path],
    *,
    text_columns: tuple[str, ...],
    label_column: str,
    kind: TaskKind = "classification",
    labels: tuple[str, ...] = (),
    name: str = "table",
    metrics: tuple[str, ...] | None = None,
) -> TaskSpec:
    """A task over your own TSV, CSV or JSONL files (format from the extension).

    Args:
        files: split -> path; needs ``train`` (or only evaluation splits for ``edgec eval``).
        text_columns: one column (single text) or two (pairs).
        label_column: the label column; class names are taken from the training file when
            ``labels`` is empty.
        kind: classification or regression.

    Example::

        table_task({"train": "reviews.csv"}, text_columns=("text",), label_column="stars")
    """
    paths = {split: str(Path(p).resolve()) for split, p in files.items()}
    suffixes = {Path(p).suffix.lower() for p in paths.values()}
    fmt = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
    if len(suffixes) != 1 or next(iter(suffixes)) not in fmt:
        raise ConfigError(
            f"table files must all be .tsv, .csv or .jsonl, got {sorted(paths.values())}"
        )
    if not 1 <= len(text_columns) <= 2:
        raise ConfigError(f"give one or two text columns, got {len(text_columns)}")
    if kind not in ("classification", "regression"):
        raise ConfigError(f"table tasks are classification or regression, got {kind!r}")
    default_metrics = ("accuracy",) if kind == "classification" else ("pearson", "spearman")
    return TaskSpec(
        name=name,
        kind=kind,
        folder="",
        format=fmt[next(iter(suffixes))],  # type: ignore[arg-type]
        files=paths,
        text_columns=tuple(text_columns),
        label_column=label_column,
        labels=tuple(labels),
        metrics=metrics or default_metrics,
    )
