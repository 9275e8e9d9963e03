"""Typed loading of YAML into frozen dataclasses, with file, line and key path in every error.

Recipes and device profiles are both plain frozen dataclasses; this module turns a YAML document
into one of them, checking each value against the field's type annotation. Supported annotations:
``int``, ``float``, ``str``, ``bool``, ``X | None``, ``Literal[...]``, ``tuple[X, ...]``,
``dict[str, X]``, nested dataclasses, and unions of those (tried in order).

Range checks live in each dataclass's ``__post_init__``: it raises ``ConfigError(msg, key=field)``
and the loader adds the file, line and the full key path.

Example::

    >>> @dataclass(frozen=True)
    ... class Cfg:
    ...     bits: int = 4
    >>> from_yaml_text(Cfg, "bits: 9\\n", file="r.yaml")
    Cfg(bits=9)
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from toolchain.errors import ConfigError

# Bounds on a YAML document, checked while it is composed, before anything walks it: an alias
# counts as the whole subtree it repeats, so nested aliases ("billion laughs") are refused after at
# most MAX_YAML_NODES nodes of work. The shipped profiles have ~300 nodes, a full recipe ~150.
MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 64
MAX_YAML_BYTES = 1 << 20
# integers beyond 2**53 lose precision as floats (far beyond, float() overflows); no field needs one
MAX_INT = 2**53

# an override that sets a recipe key to None (a None override means "not given")
UNSET = object()


class _Refused(yaml.composer.ComposerError):
    """A document over the bounds above (raised while composing, with the position)."""


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents expanding past :data:`MAX_YAML_NODES` nodes
    (aliases counted at their full size), nested deeper than :data:`MAX_YAML_DEPTH`, or with an
    alias inside the node it names (a cycle)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._expanded = 0  # nodes composed so far, each alias counted as its subtree
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once the node is complete

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise _Refused(None, None, "an alias refers to a node that contains it", mark)
            self._count(size, mark)
            return node
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        before = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, mark)
        self._sizes[id(node)] = self._expanded - before
        return node

    def _count(self, n: int, mark) -> None:
        self._expanded += n
        if self._expanded > MAX_YAML_NODES:
            raise _Refused(
                None,
                None,
                f"the document expands to more than {MAX_YAML_NODES:,} values (aliases count "
                "as the values they repeat)",
                mark,
            )


def load_yaml_node(text: str, *, file: str) -> yaml.Node | None:
    """Parse YAML text into a node tree (keeping line numbers) with :class:`BoundedLoader`;
    syntax errors and documents over its bounds name file and line."""
    try:
        loader = BoundedLoader(text)  # checks every character is printable
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        problem = f"character #x{e.character:04x} is not allowed (a control character)"
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line) from None
    try:
        return loader.get_single_node()
    except _Refused as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise ConfigError(f"refused: {e.problem}", file=file, line=line) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=file) from None
    finally:
        loader.dispose()


def safe_load(text: str, *, file: str) -> Any:
    """``yaml.safe_load`` within the bounds of :class:`BoundedLoader`; errors are ConfigError."""
    node = load_yaml_node(text, file=file)
    if node is None:
        return None
    return _construct(node, file)


def _construct(node: yaml.Node, file: str) -> Any:
    try:
        return yaml.constructor.SafeConstructor().construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or node.start_mark
        raise ConfigError(f"invalid YAML: {e.problem}", file=file, line=mark.line + 1) from None
    # a bad explicit tag (!!int abc, !!bool maybe, !!timestamp x) fails each its own way; an
    # integer of more than 4300 digits is a ValueError (sys.int_info)
    except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"invalid value: {e}", file=file, line=node.start_mark.line + 1) from None


def read_yaml_text(path: str | Path) -> str:
    """The text of a YAML file (a UTF-8 byte-order mark dropped); ConfigError naming the file
    when it is missing, unreadable, over :data:`MAX_YAML_BYTES`, or not UTF-8 (with the byte
    offset and line of the first bad byte)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read {path}: {e}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(
            f"larger than {MAX_YAML_BYTES >> 20} MiB; recipes and profiles are small YAML files",
            file=str(path),
        )
    try:
        return decode_utf8(data)
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"not UTF-8: {undecodable(e)}; save the file as UTF-8",
            file=str(path),
            line=data.count(b"\n", 0, e.start) + 1,
        ) from None


def decode_utf8(data: bytes) -> str:
    """UTF-8 bytes -> text, a leading byte-order mark dropped (Windows tools and the GLUE
    download write one).

    Raises:
        UnicodeDecodeError: its ``start`` is the offset of the first bad byte in ``data``.
    """
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnicodeDecodeError("utf-8", data, bom + e.start, bom + e.end, e.reason) from None


def undecodable(e: UnicodeDecodeError) -> str:
    """``byte 17 (0xe9) cannot be decoded`` for a message."""
    return f"byte {e.start} (0x{e.object[e.start]:02x}) cannot be decoded"


def from_yaml_file(cls: type, path: str | Path, *, overrides: dict | None = None) -> Any:
    """Load ``path`` into dataclass ``cls``; ``overrides`` (dotted keys) win over the file."""
    text = read_yaml_text(path)
    return from_yaml_text(cls, text, file=str(path), overrides=overrides)


def from_yaml_text(cls: type, text: str, *, file: str = "<string>", overrides: dict | None = None):
    """Load YAML ``text`` into dataclass ``cls`` (see module docstring)."""
    node = load_yaml_node(text, file=file)
    if node is None:  # empty document: all defaults
        node = yaml.MappingNode("tag:yaml.org,2002:map", [])
    return _Loader(file).build(cls, node, "", overrides or {})


def list_from_yaml_text(cls: type, text: str, *, file: str, lines: bool = True) -> tuple:
    """Load YAML ``text`` holding a list of mappings, each into dataclass ``cls``; an error names
    the item (``[1].url``). ``lines``: False where ``text`` is not what the user wrote (a JSON
    file dumped as YAML), so no line is named."""
    node = load_yaml_node(text, file=file)
    if not isinstance(node, yaml.SequenceNode):
        got = "an empty file" if node is None else _kind(node)
        line = node.start_mark.line + 1 if node is not None and lines else None
        raise ConfigError(f"expected a list of {_describe(cls)}, got {got}", file=file, line=line)
    loader = _Loader(file, lines=lines)
    return tuple(loader.build(cls, item, f"[{i}]", {}) for i, item in enumerate(node.value))


def from_dict(cls: type, data: dict, *, file: str = "<dict>") -> Any:
    """Load a plain dict (e.g. parsed JSON) into dataclass ``cls``, with the same checks."""
    node = load_yaml_node(yaml.safe_dump(data), file=file)
    return _Loader(file, lines=False).build(cls, node, "", {})


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalar tree (tuples become lists), keeping field order."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def closest(word: str, candidates: typing.Iterable[str], n: int = 3) -> list[str]:
    """The candidates most similar to ``word``, best first (for 'did you mean' hints)."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError(message, key=key) unless ``ok`` (for dataclass ``__post_init__``)."""
    if not ok:
        raise ConfigError(message, key=key)


def check_range(obj, key: str, lo: float | None = None, hi: float | None = None) -> None:
    """Raise ConfigError(key=...) unless lo <= obj.key <= hi (None means unbounded); NaN and
    infinities are refused whatever the bounds."""
    value = getattr(obj, key)
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value}", key=key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        shown = _show(value) if isinstance(value, int) and abs(value) >= 10**15 else f"{value:g}"
        raise ConfigError(f"must be in [{lo_s}, {hi_s}], got {shown}", key=key)


_INT_TAG = "tag:yaml.org,2002:int"
_SCALAR_TAG = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:str": "a string",
}


class _Loader:
    def __init__(self, file: str, *, lines: bool = True):
        self.file = file
        self.lines = lines

    def line_of(self, node: yaml.Node | None) -> int | None:
        mark = getattr(node, "start_mark", None)
        return mark.line + 1 if (mark is not None and self.lines) else None

    def error(self, msg: str, key: str, node: yaml.Node | None) -> ConfigError:
        return ConfigError(msg, key=key or None, file=self.file, line=self.line_of(node))

    # -- dataclasses -----------------------------------------------------------------------
    def build(self, cls: type, node: yaml.Node, path: str, overrides: dict) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(
                f"expected a mapping of {_describe(cls)}, got {_kind(node)}", path, node
            )
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        key_nodes: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else None
            kpath = _join(path, str(key))
            if not isinstance(key, str) or key not in fields:
                hint = closest(str(key), fields)
                did = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self.error(
                    f"unknown key '{key}'{did}; expected one of: {', '.join(fields)}", kpath, knode
                )
            if key in values:
                raise self.error(f"duplicate key '{key}'", kpath, knode)
            sub = _sub_overrides(overrides, key)
            values[key] = self.convert(hints[key], vnode, kpath, sub)
            key_nodes[key] = knode
        self.apply_overrides(cls, fields, hints, values, path, overrides)
        for name, f in fields.items():
            if (
                name not in values
                and f.default is dataclasses.MISSING
                and (f.default_factory is dataclasses.MISSING)
            ):
                raise self.error(f"missing required key '{name}'", path, node)
        try:
            return cls(**values)
        except ConfigError as e:
            field_node = key_nodes.get(e.key or "", node)
            raise e.located(prefix=path, file=self.file, line=self.line_of(field_node)) from None

    def apply_overrides(self, cls, fields, hints, values, path, overrides):
        """Apply dotted-key overrides (from the command line) on top of the file's values."""
        for head in dict.fromkeys(k.split(".", 1)[0] for k in overrides):
            hpath = _join(path, head)
            if head not in fields:
                hint = closest(head, fields)
                did = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(f"unknown key '{head}'{did}", key=hpath, file="<command line>")
            if head in overrides:  # the whole value is replaced
                node = load_yaml_node(yaml.safe_dump(overrides[head]), file="<command line>")
                loader = _Loader("<command line>", lines=False)
                values[head] = loader.convert(hints[head], node, hpath, {})
            elif head not in values:  # nested keys into a section the file left out
                empty = yaml.MappingNode("tag:yaml.org,2002:map", [])
                loader = _Loader("<command line>", lines=False)
                values[head] = loader.convert(
                    hints[head], empty, hpath, _sub_overrides(overrides, head)
                )

    # -- values ----------------------------------------------------------------------------
    def convert(self, tp: Any, node: yaml.Node, path: str, overrides: dict) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, node, path, overrides)
        if origin in (Union, types.UnionType):
            return self.convert_union(args, node, path, overrides)
        if overrides:
            raise ConfigError(f"'{path}' is not a section; set it as a whole", key=path)
        if origin is Literal:
            value = self.scalar(node, path)
            if value not in args:
                choices = ", ".join(repr(a) for a in args)
                hint = closest(str(value), [str(a) for a in args])
                did = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self.error(f"expected one of {choices}, got {value!r}{did}", path, node)
            return value
        if origin is tuple:
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(f"expected a list, got {_kind(node)}", path, node)
            item_tp = args[0]
            return tuple(
                self.convert(item_tp, n, f"{path}[{i}]", {}) for i, n in enumerate(node.value)
            )
        if origin is dict:
            if not isinstance(node, yaml.MappingNode):
                raise self.error(f"expected a mapping, got {_kind(node)}", path, node)
            out = {}
            for knode, vnode in node.value:
                key = self.convert(args[0], knode, path, {})
                out[key] = self.convert(args[1], vnode, _join(path, str(key)), {})
            return out
        if tp is Any:
            return _construct(node, self.file) if node is not None else None
        return self.convert_scalar(tp, node, path)

    def convert_union(self, args, node, path, overrides):
        if type(None) in args and _is_null(node):
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return self.convert(option, node, path, overrides)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        # Report the error from the alternative matching the node's shape (mapping vs scalar).
        for option, err in zip(options, errors, strict=True):
            if dataclasses.is_dataclass(option) == isinstance(node, yaml.MappingNode):
                raise err
        expected = " or ".join(_describe(a) for a in args)
        raise self.error(f"expected {expected}, got {_kind(node)}", path, node)

    def convert_scalar(self, tp: type, node: yaml.Node, path: str) -> Any:
        value = self.scalar(node, path)
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return self.bounded_int(value, path, node)
        elif tp is float:
            if isinstance(value, int) and not isinstance(value, bool):
                return float(self.bounded_int(value, path, node))
            if isinstance(value, float):
                if not math.isfinite(value):
                    raise self.error(f"expected a finite number, got {node.value}", path, node)
                return value
        elif tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(node.value)  # "8.7" written unquoted is still the string 8.7
        else:
            raise TypeError(f"schema: unsupported annotation {tp!r} at {path}")
        raise self.error(f"expected {_describe(tp)}, got {_kind(node)} {value!r}", path, node)

    def bounded_int(self, value: int, path: str, node: yaml.Node) -> int:
        if abs(value) > MAX_INT:
            raise self.error(f"out of range: {_show(value)} (at most 2**53 here)", path, node)
        return value

    def scalar(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"expected a single value, got {_kind(node)}", path, node)
        if node.tag == _INT_TAG and len(node.value) > 30:  # not even 2**53 in binary digits
            raise self.error(f"out of range: a {len(node.value)}-digit integer", path, node)
        try:
            return yaml.constructor.SafeConstructor().construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as e:
            problem = getattr(e, "problem", None) or str(e)
            raise self.error(
                f"cannot read {_clip(node.value)} as {_short_tag(node.tag)}: {problem}", path, node
            ) from None


def _show(value: int) -> str:
    """An integer for a message: its digits, or its size when it is long."""
    if abs(value) < 10**15:
        return str(value)
    digits = int(value.bit_length() * math.log10(2)) + 1
    return f"{'-' if value < 0 else ''}an integer of about {digits} digits"


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _clip(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _SCALAR_TAG.get(node.tag, "a value")


def _describe(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return f"{tp.__name__} fields"
    if tp is type(None):
        return "null"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return str(tp)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _sub_overrides(overrides: dict, key: str) -> dict:
    prefix = key + "."
    return {k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)}
