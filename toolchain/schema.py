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

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from toolchain.errors import ConfigError


def load_yaml_node(text: str, *, file: str) -> yaml.Node | None:
    """Parse YAML text into a node tree (keeping line numbers); syntax errors name file and line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=file) from None


def from_yaml_file(cls: type, path: str | Path, *, overrides: dict | None = None) -> Any:
    """Load ``path`` into dataclass ``cls``; ``overrides`` (dotted keys) win over the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    return from_yaml_text(cls, text, file=str(path), overrides=overrides)


def from_yaml_text(cls: type, text: str, *, file: str = "<string>", overrides: dict | None = None):
    """Load YAML ``text`` into dataclass ``cls`` (see module docstring)."""
    node = load_yaml_node(text, file=file)
    if node is None:  # empty document: all defaults
        node = yaml.MappingNode("tag:yaml.org,2002:map", [])
    return _Loader(file).build(cls, node, "", overrides or {})


def from_dict(cls: type, data: dict, *, file: str = "<dict>") -> Any:
    """Load a plain dict (e.g. parsed JSON) into dataclass ``cls``, with the same checks."""
    node = yaml.compose(yaml.safe_dump(data), Loader=yaml.SafeLoader)
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
    """Raise ConfigError(key=...) unless lo <= obj.key <= hi (None means unbounded)."""
    value = getattr(obj, key)
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"must be in [{lo_s}, {hi_s}], got {value:g}", key=key)


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
                node = yaml.compose(yaml.safe_dump(overrides[head]), Loader=yaml.SafeLoader)
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
            return yaml.safe_load(yaml.serialize(node)) if node is not None else None
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
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(node.value)  # "8.7" written unquoted is still the string 8.7
        else:
            raise TypeError(f"schema: unsupported annotation {tp!r} at {path}")
        raise self.error(f"expected {_describe(tp)}, got {_kind(node)} {value!r}", path, node)

    def scalar(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(f"expected a single value, got {_kind(node)}", path, node)
        return yaml.safe_load(yaml.serialize(node))


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
