"""Fuzz targets: bytes in, one of edgec's readers (data, recipe, profile, bundle manifest, bundle
archive) run on them, and a crash is any exception that is
not an :class:`~toolchain.errors.EdgecError` (the typed error bad input must give).

Used by the property tests (tests/test_fuzz_config.py, tests/data/test_fuzz_readers.py) and by
benchmarks that count crashes over many cases::

    import sys; sys.path.insert(0, "tests")
    from fuzz import FUZZ_TARGETS, run_case
    for name in FUZZ_TARGETS:
        run_case(name, b"sentence\tlabel\nfine\t1\n")   # raises only on a crash

Each target writes the bytes to a file of the name its reader expects (in ``workdir``, by
default one temporary folder per process) and reads it the way the CLI does.
"""

from __future__ import annotations

import atexit
import copy
import io
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from fake_bundle import write_fake_bundle
from hypothesis import strategies as st

from toolchain.bundle.manifest import MANIFEST, digest, pack, unpack, verify
from toolchain.config import Recipe, load_recipe, recipe_to_yaml
from toolchain.data.readers import infer_labels, read_file
from toolchain.data.tasks import get_task, table_task
from toolchain.devices.budgets import resolve_recipe
from toolchain.devices.names import builtin_profiles_dir
from toolchain.devices.profiles import load_profile_file
from toolchain.errors import EdgecError
from toolchain.presets import preset_overrides
from toolchain.schema import safe_load

# A profile under fuzzing keeps this name, so that its file name matches and the fuzz reaches
# past the name check into the schema.
PROFILE_NAME = "raspberry-pi-5"


def _recipe(path: Path) -> None:
    recipe = load_recipe(path)
    resolve_recipe(recipe, file=str(path))


def _recipe_with_preset(path: Path) -> None:
    # what api.build_recipe does: the preset reads the file first, for the keys it sets
    load_recipe(path, overrides=preset_overrides("quick", str(path)))


def _set_option(path: Path) -> None:
    # `edgec build --set KEY=VALUE`: the value is YAML (argv bytes decode as Python decodes them)
    value = safe_load(path.read_bytes().decode("utf-8", "surrogateescape"), file="--set")
    for key in ("seed", "budgets", "distill", "quantize.overrides", "distill.temperature"):
        try:
            load_recipe(None, overrides={key: value})
        except EdgecError:
            pass


def _profile(path: Path) -> None:
    load_profile_file(path)


def _registered(task: str, split: str) -> Callable[[Path], None]:
    def target(path: Path) -> None:
        read_file(get_task(task), path, split=split)

    return target


def _table(text: tuple[str, ...], label: str, kind: str = "classification"):
    def target(path: Path) -> None:
        spec = table_task({"train": path}, text_columns=text, label_column=label, kind=kind)
        read_file(infer_labels(spec), path, split="train")

    return target


def _manifest(path: Path) -> None:
    # `edgec bundle verify` of a bundle whose manifest.json is these bytes
    folder = path.parent / "case.edgec"
    shutil.rmtree(folder, ignore_errors=True)
    write_fake_bundle(folder)
    shutil.copyfile(path, folder / MANIFEST)
    verify(folder)


def _archive(path: Path) -> None:
    # what the agent does with an upload: unpack under the limits, then verify
    out = path.parent / "unpacked"
    shutil.rmtree(out, ignore_errors=True)
    verify(unpack(path, out))


# name -> (file name written, reader)
FUZZ_TARGETS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "recipe": ("recipe.yaml", _recipe),
    "recipe-preset": ("recipe.yaml", _recipe_with_preset),
    "set-option": ("value.yaml", _set_option),
    "profile": (f"{PROFILE_NAME}.yaml", _profile),
    "glue-sst2": ("train.tsv", _registered("sst2", "train")),
    "glue-rte-test": ("test.tsv", _registered("rte", "test")),
    "glue-cola": ("dev.tsv", _registered("cola", "dev")),
    "stsb": ("dev.tsv", _registered("stsb", "dev")),
    "conll": ("train.txt", _registered("conll2003", "train")),
    "text": ("valid.txt", _registered("wikitext2", "train")),
    "table-tsv": ("train.tsv", _table(("text",), "label")),
    "table-tsv-indexed": ("train.tsv", _table(("0",), "1")),
    "table-csv": ("train.csv", _table(("text",), "label")),
    "table-csv-pair": ("train.csv", _table(("a", "b"), "label")),
    "table-jsonl": ("train.jsonl", _table(("text",), "label")),
    "table-jsonl-regression": ("train.jsonl", _table(("text",), "label", "regression")),
    "manifest": ("manifest.json", _manifest),
    "archive": ("upload.edgec.tar.gz", _archive),
}
YAML_TARGETS = ("recipe", "recipe-preset", "set-option", "profile")
BUNDLE_TARGETS = ("manifest", "archive")
DATA_TARGETS = tuple(t for t in FUZZ_TARGETS if t not in YAML_TARGETS + BUNDLE_TARGETS)

_workdir: Path | None = None


def _default_workdir() -> Path:
    global _workdir
    if _workdir is None:
        _workdir = Path(tempfile.mkdtemp(prefix="edgec-fuzz-"))
        atexit.register(shutil.rmtree, _workdir, ignore_errors=True)
    return _workdir


def run_case(target_name: str, data: bytes, workdir: Path | None = None) -> None:
    """Feed ``data`` to the target; return when it read the data or refused it with an
    EdgecError, raise anything else (a crash).

    Args:
        target_name: a key of :data:`FUZZ_TARGETS`.
        data: the whole file's bytes.
        workdir: a folder for the file (default: a temporary folder of this process).
    """
    file_name, target = FUZZ_TARGETS[target_name]
    path = (workdir or _default_workdir()) / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        target(path)
    except EdgecError:
        pass


# -- strategies: bytes for each target ----------------------------------------------------------
# Characters that break readers: separators, quotes, line ends of every kind, NUL, a BOM.
SPECIALS = ["\t", ",", '"', "'", "\n", "\r", "\r\n", "\x00", "\ufeff", "\u2028", "\x85", " "]
LABELISH = ["", "0", "1", "2", "-1", "-", "positive", "negative", "posiitve", "nan", "inf",
            "1e400", "4.8", "label", "None", "null", "1" + "0" * 400]  # fmt: skip
NAMES = ["text", "label", "sentence", "sentence1", "sentence2", "a", "b", "0", "1", "index"]


def _piece() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(SPECIALS + LABELISH + NAMES),
        st.lists(st.sampled_from(SPECIALS + NAMES), max_size=5).map("".join),
    )


@st.composite
def encoded(draw, text: str) -> bytes:
    """``text`` as UTF-8, sometimes with a BOM, in another encoding, truncated or with a byte
    changed."""
    how = draw(st.sampled_from(["utf-8"] * 6 + ["bom", "latin-1", "utf-16", "cut", "flip"]))
    data = text.encode("utf-8", "surrogatepass")
    if how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "latin-1":
        data = text.encode("latin-1", "replace")
    elif how == "utf-16":
        data = text.encode("utf-16", "surrogatepass")
    elif how == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    return data


def _text_cell() -> st.SearchStrategy[str]:
    words = st.text(alphabet="abcdefghij ,.'\"", min_size=1, max_size=20)
    return st.one_of(words, words, words, _piece())


@st.composite
def delimited(draw, header: list[str] | None, labels: list[str], sep: str) -> bytes:
    """Rows of a table: mostly well formed (text cells, a label from ``labels``) under
    ``header`` (None: no header line), some broken (awkward cells, wrong counts, odd labels)."""
    end = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    columns = header or ["0", "1"]
    lines = []
    if header is not None and draw(st.integers(0, 9)):
        lines.append(sep.join(header))
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 5)) == 0:
            lines.append(sep.join(draw(st.lists(_piece(), max_size=5))))
            continue
        row = []
        for name in columns:
            if name in ("label", "score", "1"):
                row.append(draw(st.sampled_from(labels) | st.sampled_from(LABELISH)))
            elif name == "index":
                row.append(str(draw(st.integers(0, 99))))
            else:
                row.append(draw(_text_cell()))
        lines.append(sep.join(row))
    text = end.join(lines) + draw(st.sampled_from(["", end]))
    return draw(encoded(text))


def _json_value():
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
        st.sampled_from(LABELISH), st.just(10**400),
    )  # fmt: skip

    def nest(inner):
        return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)

    return st.recursive(scalars, nest, max_leaves=8)


JSON_LABELS = ["pos", "neg", 0, 1, 2.5, -1, None, True, float("nan"), float("inf"), 10**30, [1]]


@st.composite
def json_lines(draw) -> bytes:
    """JSON Lines whose objects use the known column names, with garbage lines among them."""
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["object"] * 12 + ["value", "garbage", "blank", "deep"]))
        if kind == "object" and draw(st.integers(0, 2)):
            record = {"text": draw(_text_cell()), "label": draw(st.sampled_from(JSON_LABELS))}
            lines.append(json.dumps(record))
        elif kind == "object":
            keys = draw(st.lists(st.sampled_from(NAMES) | st.text(max_size=4), max_size=4))
            lines.append(json.dumps({k: draw(_json_value()) for k in keys}))
        elif kind == "value":
            lines.append(json.dumps(draw(_json_value())))
        elif kind == "garbage":
            lines.append(draw(_piece()))
        elif kind == "deep":
            lines.append("[" * draw(st.integers(1, 100_000)))
        else:
            lines.append("")
    return draw(encoded("\n".join(lines)))


CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "B-LOC", "I-MISC", "B-XYZ", "NNP", ""]


@st.composite
def conll(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.sampled_from(["token"] * 5 + ["blank", "docstart", "garbage"]))
        if kind == "token":
            extra = draw(st.lists(st.sampled_from(["NNP", "B-NP", "-X-"]), max_size=2))
            token = draw(st.text(min_size=1, max_size=8))
            lines.append(" ".join([token, *extra, draw(st.sampled_from(CONLL_TAGS))]))
        elif kind == "docstart":
            lines.append("-DOCSTART- -X- O O")
        elif kind == "garbage":
            lines.append(draw(_piece()))
        else:
            lines.append("")
    return draw(encoded("\n".join(lines)))


# YAML values that break loaders: non-finite and huge numbers, other types, aliases, tags.
YAML_VALUES = [
    ".nan", ".inf", "-.inf", "1" + "0" * 400, "1" + "0" * 5000, "-1", "0", "1e400", "0x7fffffff",
    "2.5", "''", "null", "true", "[1, 2]", "{a: 1}", "[]", "{}", "*x", "&x 3", "!!binary xyz",
    "!!python/name:os.system", "!!int abc", "!!bool maybe", "!!timestamp x", "!!float abc",
    "\"\\x00\"", "a\tb", "[[[[[[[[[[1]]]]]]]]]]", "&y [*y]", "1:30", "~", "? a", "|",
]  # fmt: skip
YAML_LINES = ["<<: *x", "- *x", "x: &x {a: [1, 2, 3]}", "%YAML 1.1", "---", "...", "? [a]",
              "\t", "{", "]", "'", "&a", "*undefined", ":"]  # fmt: skip
_KEY_VALUE = re.compile(r"^(\s*(?:- )?[\w.]+:)( .*)?$")


@st.composite
def mutated_yaml(draw, base: str) -> bytes:
    """``base`` with a few lines changed: a value replaced, a line deleted, duplicated or
    inserted; then encoded (see :func:`encoded`)."""
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "value", "delete", "duplicate", "insert"]))
        m = _KEY_VALUE.match(lines[i])
        if op == "value" and m:
            value = draw(st.sampled_from(YAML_VALUES) | st.text(max_size=8))
            lines[i] = f"{m.group(1)} {value}"
        elif op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        else:
            indent = len(lines[i]) - len(lines[i].lstrip())
            lines.insert(i, " " * indent + draw(st.sampled_from(YAML_LINES) | _piece()))
    return draw(encoded("\n".join(lines) + "\n"))


def _base_recipe() -> str:
    text = recipe_to_yaml(Recipe())
    return text.replace(
        "budgets: []", "budgets:\n- tight\n- {name: mine, latency_ms: 5, memory_mb: 300}"
    )


def _base_profile() -> str:
    return (builtin_profiles_dir() / f"{PROFILE_NAME}.yaml").read_text(encoding="utf-8")


def yaml_documents() -> st.SearchStrategy[bytes]:
    """Free-form YAML of recipe-like keys and awkward values (no base document)."""
    keys = st.sampled_from(["seed", "task", "budgets", "distill", "temperature", "quantize",
                            "weight_bits", "overrides", "x", "<<"])  # fmt: skip
    leaf = st.sampled_from(YAML_VALUES) | st.text(max_size=6)

    def block(pairs):
        return "\n".join(f"{k}: {v}" for k, v in pairs)

    doc = st.lists(st.tuples(keys, leaf), max_size=8).map(block)
    return doc.flatmap(encoded)


# target -> (header, labels, separator) of its structured tables
TABLE_LAYOUTS = {
    "glue-sst2": (["sentence", "label"], ["0", "1"], "\t"),
    "glue-rte-test": (["index", "sentence1", "sentence2", "label"], ["entailment", "-1"], "\t"),
    "glue-cola": (None, ["0", "1"], "\t"),
    "stsb": (["index", "sentence1", "sentence2", "score"], ["4.8", "0", "5.0", "-0.5"], "\t"),
    "table-tsv": (["text", "label"], ["pos", "neg", "Pos"], "\t"),
    "table-tsv-indexed": (None, ["pos", "neg", "label"], "\t"),
    "table-csv": (["text", "label"], ["1", "2", "3"], ","),
    "table-csv-pair": (["a", "b", "label"], ["yes", "no"], ","),
    "text": (None, [""], " "),
}


def strategy(target_name: str) -> st.SearchStrategy[bytes]:
    """Structured inputs for ``target_name`` (st.binary() is the unstructured complement)."""
    if target_name in ("recipe", "recipe-preset"):
        return st.one_of(mutated_yaml(_base_recipe()), yaml_documents())
    if target_name == "set-option":
        values = st.sampled_from(YAML_VALUES + YAML_LINES) | _piece()
        return st.one_of(values.flatmap(lambda v: encoded(v)), yaml_documents())
    if target_name == "profile":
        return st.one_of(mutated_yaml(_base_profile()), yaml_documents())
    if target_name == "conll":
        return conll()
    if target_name == "manifest":
        return manifests()
    if target_name == "archive":
        return archives()
    if target_name.startswith("table-jsonl"):
        return json_lines()
    return delimited(*TABLE_LAYOUTS[target_name])


# -- bundles ------------------------------------------------------------------------------------
_GOOD: dict[str, object] = {}


def _good_bundle() -> tuple[dict, bytes]:
    """The fake bundle's manifest and its archive (made once per process)."""
    if not _GOOD:
        folder = write_fake_bundle(Path(tempfile.mkdtemp(prefix="edgec-fuzz-good-")) / "toy.edgec")
        atexit.register(shutil.rmtree, folder.parent, ignore_errors=True)
        _GOOD["manifest"] = json.loads((folder / MANIFEST).read_text())
        _GOOD["archive"] = pack(folder, folder.with_name("toy.edgec.tar.gz")).read_bytes()
    return _GOOD["manifest"], _GOOD["archive"]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


_ODD_NAMES = ["/etc/hostname", "../../x.onnx", "C:/x", "a\\b", "", ".", "./model.onnx",
              "model.onnx/", "x\x00y", "manifest.json", "signature.json", "a" * 300]  # fmt: skip


@st.composite
def manifests(draw) -> bytes:
    """The fake bundle's manifest with a few values replaced or removed (awkward types, escaping
    paths, huge numbers), its digest resealed or not, or its JSON text damaged."""
    manifest = copy.deepcopy(_good_bundle()[0])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(manifest))[1:]))
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_json_value() | st.sampled_from(_ODD_NAMES))
    if draw(st.booleans()):  # resealed: the checks after the digest are reached
        manifest.pop("digest", None)
        try:
            manifest["digest"] = digest(manifest)
        except (TypeError, ValueError):
            pass
    text = json.dumps(manifest, allow_nan=True)
    if draw(st.integers(0, 4)) == 0:  # damaged text
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", "}", '"', "\\", "\ud800", ",,"])) + text[cut:]
    return text.encode("utf-8", "surrogatepass")


_TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
          tarfile.CHRTYPE, tarfile.GNUTYPE_SPARSE, b"Z"]  # fmt: skip
_MEMBER_NAMES = ["toy.edgec", "toy.edgec/manifest.json", "toy.edgec/model.onnx", "./",
                 "./manifest.json", "other.edgec/x", "toy.edgec/../x", "/abs", "toy.edgec//a",
                 "toy.edgec/a/../../b", "toy.edgec/extra", "toy.edgec/extra/notes.txt"]  # fmt: skip


_LONG_NAMES = ["toy.edgec/" + "d/" * 40 + "f", "a/" * 2000 + "f", "toy.edgec/" + "x" * 256,
               "toy.edgec/" + "/".join(["y" * 200] * 6), "toy.edgec/" + "é" * 128]  # fmt: skip
_PAX_KEYS = ["path", "linkpath", "size", "comment", "mtime", "uid", "hdrcharset", "GNU.sparse.map",
             "GNU.sparse.size", "GNU.sparse.major", "x"]  # fmt: skip


@st.composite
def archives(draw) -> bytes:
    """A good bundle archive with bytes changed or cut (in the tar or the gzip stream), a tar
    of hostile members (odd, long or deep names; links, devices, sparse files; pax headers and
    GNU long names; sizes declared but not there), or a chain of extended headers."""
    good = _good_bundle()[1]
    kind = draw(st.sampled_from(["damaged", "members", "headers"]))
    if kind == "damaged":
        in_tar = draw(st.booleans())
        raw = bytearray(tarfile_bytes(good) if in_tar else good)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        raw = bytes(raw[: draw(st.integers(1, len(raw)))])
        return _gzip(raw) if in_tar else raw
    if kind == "headers":
        return _gzip(draw(_extended_headers()))
    buf = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for _ in range(draw(st.integers(0, 8))):
            names = st.sampled_from(_MEMBER_NAMES + _LONG_NAMES) | st.text(max_size=20)
            info = tarfile.TarInfo(draw(names))
            info.type = draw(st.sampled_from(_TYPES))
            info.linkname = draw(st.sampled_from(["", "/etc/passwd", "../x", "toy.edgec"]))
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = draw(st.dictionaries(st.sampled_from(_PAX_KEYS), _pax_value()))
            data = draw(st.binary(max_size=64))
            info.size = len(data) if info.isreg() else 0
            try:
                tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
            except (ValueError, UnicodeError):  # a name tarfile itself cannot write
                continue
    raw = buf.getvalue()
    if draw(st.booleans()):  # a size declared far beyond what follows
        raw = raw[:124] + b"77777777777\0" + raw[136:]
    return _gzip(raw)


def _pax_value():
    return st.sampled_from(["", "-1", "0", "1,2", "x" * 600, "a/" * 2000]) | st.text(max_size=8)


@st.composite
def _extended_headers(draw) -> bytes:
    """Extended headers (pax, global pax, GNU long name or link) before a member, in a chain of
    up to 50, each declaring its size or a size (huge, negative) it does not hold."""
    out = []
    for _ in range(draw(st.sampled_from([1, 2, 3, 4, 5, 50]))):
        info = tarfile.TarInfo(draw(st.sampled_from(["././@PaxHeader", "././@LongLink"])))
        info.type = draw(st.sampled_from(_EXTENDED_TYPES))
        body = draw(st.sampled_from([b"", b"11 path=ab\n", b"toy.edgec/x\0", b"9 a=b\n" * 10]))
        odd = draw(st.integers(0, 19))  # one in ten: a size it does not hold
        info.size = draw(st.sampled_from([2**20, 2**40, 70_000])) if odd == 0 else len(body)
        out.append(_with_size(info.tobuf(format=tarfile.GNU_FORMAT), negative=odd == 1))
        out.append(body + b"\0" * (-len(body) % 512))
    member = tarfile.TarInfo(draw(st.sampled_from(_MEMBER_NAMES + _LONG_NAMES[:1])))
    out.append(member.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)
    return b"".join(out)


_EXTENDED_TYPES = [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                   tarfile.GNUTYPE_LONGLINK, tarfile.SOLARIS_XHDTYPE]  # fmt: skip


def _with_size(header: bytes, *, negative: bool) -> bytes:
    """``header`` as it is, or declaring a negative size (base-256), its checksum redone."""
    if not negative:
        return header
    header = bytearray(header)
    header[124:136] = b"\xff" * 12
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def tarfile_bytes(archive: bytes) -> bytes:
    import gzip

    return gzip.decompress(archive)


def _gzip(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw, mtime=0)
