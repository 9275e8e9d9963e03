"""Fetching a task with the ``datasets`` library, for online use. The record conversion it relies
on lives in :mod:`toolchain.data.readers` and is tested offline.

Used only when no data folder is given (no ``--data-dir``, no ``$EDGEC_DATA_DIR``).
"""

from __future__ import annotations

from toolchain.data.readers import DataError, examples_from_records
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
