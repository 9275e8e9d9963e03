"""Fetching a task with the ``datasets`` library, for online use. The record conversion
(:func:`examples_from_records`) is tested offline.

Used only when no data folder is given (no ``--data-dir``, no ``$EDGEC_DATA_DIR``).
"""

from __future__ import annotations

from collections.abc import Iterable

from toolchain.data.examples import DataError, Example, TokenExample, parse_label
from toolchain.data.tasks import TaskSpec

# Our split names -> the datasets library's.
_HUB_SPLITS = {"train": "train", "validation": "validation", "dev": "validation", "test": "test"}


def load_split_from_hub(spec: TaskSpec, split: str) -> list:
    """Load ``split`` of ``spec`` with ``datasets.load_dataset`` (needs network and `datasets`)."""
    if not spec.source:
        raise DataError(f"task {spec.name} has no online source; pass --data-dir")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"no data folder for task {spec.name}: pass --data-dir D (or set EDGEC_DATA_DIR) "
            "pointing to a folder with the layout of shared/data, or `pip install datasets` to "
            "fetch it online"
        ) from None
    path, _, config = spec.source.rpartition("/")
    hub_split = _HUB_SPLITS.get(split, split)
    if spec.name == "mnli" and hub_split == "validation":
        hub_split = "validation_matched"
    if spec.kind == "language-modeling" and split == "dev":
        hub_split = "test"  # perplexity is reported on the test articles, as with local files
    try:
        ds = datasets.load_dataset(path, config or None, split=hub_split)
    except Exception as e:  # network, unknown config, ...: say what was tried
        raise DataError(
            f"could not fetch {spec.name} ({path} {config} split {hub_split}) with datasets: {e}; "
            "pass --data-dir for local files"
        ) from e
    return examples_from_records(spec, ds, tag_names=_label_names(ds))


def _label_names(ds) -> list[str] | None:
    features = getattr(ds, "features", {}) or {}
    for key in ("label", "ner_tags", "chunk_tags"):
        feature = features.get(key)
        names = getattr(feature, "names", None) or getattr(
            getattr(feature, "feature", None), "names", None
        )
        if names:
            return list(names)
    return None


def examples_from_records(spec: TaskSpec, records: Iterable[dict], *, tag_names=None) -> list:
    """Convert ``datasets``-style records (dicts) to examples; used by the hub loader.

    Args:
        tag_names: the dataset's own label names for integer tags/labels, mapped onto
            ``spec.labels`` by name (datasets may order classes differently).
    """
    out: list = []
    for n, r in enumerate(records, 1):
        where = f"{spec.source} record {n}"
        if spec.kind == "language-modeling":
            if str(r.get("text", "")).strip():
                out.append(str(r["text"]).strip())
        elif spec.kind == "token-classification":
            raw = r.get("ner_tags", r.get("chunk_tags", r.get("tags")))
            names = [tag_names[t] if tag_names else spec.labels[t] for t in raw]
            out.append(TokenExample(tuple(r["tokens"]), tuple(spec.labels.index(t) for t in names)))
        else:
            texts = [_record_text(r, cols, where) for cols in spec.text_columns]
            label = r.get("label")
            if spec.kind == "classification" and tag_names and label is not None and label >= 0:
                label = tag_names[label]
            out.append(
                Example(
                    texts[0],
                    texts[1] if len(texts) > 1 else None,
                    parse_label(spec, "" if label is None else str(label), where),
                )
            )
    return out


_HUB_ALIASES = {"sentence1": "premise", "sentence2": "hypothesis"}


def _record_text(record: dict, alternatives: str, where: str) -> str:
    names = alternatives.split("|")
    names += [_HUB_ALIASES[n] for n in names if n in _HUB_ALIASES]
    names += [n.replace("#1 String", "sentence1").replace("#2 String", "sentence2") for n in names]
    for name in names:
        if name in record:
            return str(record[name]).strip()
    raise DataError(f"{where}: no field {' or '.join(names)}; fields: {', '.join(record)}")
