"""toolchain/schema.py: typed YAML loading with file, line and key path in every error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from toolchain.errors import ConfigError
from toolchain.schema import closest, from_dict, from_yaml_file, from_yaml_text, to_dict


@dataclass(frozen=True)
class Inner:
    bits: int = 4
    names: tuple[str, ...] = ()

    def __post_init__(self):
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"must be in [2, 8], got {self.bits}", key="bits")


@dataclass(frozen=True)
class Outer:
    name: str
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None
    table: dict[str, int] = field(default_factory=dict)
    items: tuple[str | Inner, ...] = ()
    flag: bool = False


def load(text: str) -> Outer:
    return from_yaml_text(Outer, text, file="r.yaml")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return str(info.value)


def test_values_convert_to_field_types():
    cfg = load(
        "name: x\nrate: 1\nmode: b\ninner: {bits: 8, names: [p, q]}\nmaybe: null\n"
        "table: {k: 3}\nitems: [s, {bits: 2}]\nflag: true\n"
    )
    assert cfg == Outer(
        name="x",
        rate=1.0,
        mode="b",
        inner=Inner(8, ("p", "q")),
        maybe=None,
        table={"k": 3},
        items=("s", Inner(bits=2)),
        flag=True,
    )
    assert isinstance(cfg.rate, float)


def test_defaults_fill_missing_keys():
    assert load("name: x\n") == Outer(name="x")


def test_unknown_key_names_file_line_key_and_suggestion():
    msg = error("name: x\ninner:\n  bitz: 3\n")
    assert msg.startswith("r.yaml:3: inner.bitz: unknown key 'bitz'")
    assert "did you mean 'bits'" in msg
    assert "expected one of: bits, names" in msg


def test_wrong_type_names_expected_type():
    assert error("name: x\nrate: fast\n") == (
        "r.yaml:2: rate: expected a number, got a string 'fast'"
    )
    assert "expected an integer, got a boolean True" in error("name: x\ninner: {bits: true}\n")
    assert "maybe: expected an integer" in error("name: x\nmaybe: 1.5\n")


def test_out_of_range_from_post_init_gets_location():
    assert error("name: x\ninner:\n  names: []\n  bits: 9\n") == (
        "r.yaml:4: inner.bits: must be in [2, 8], got 9"
    )


def test_literal_choices_listed():
    msg = error("name: x\nmode: c\n")
    assert "r.yaml:2: mode: expected one of 'a', 'b', got 'c'" in msg


def test_missing_required_key():
    assert "missing required key 'name'" in error("rate: 0.1\n")


def test_duplicate_key_refused():
    assert "r.yaml:2: name: duplicate key 'name'" in error("name: x\nname: y\n")


def test_list_item_errors_carry_index():
    assert "items[1].bits: must be in [2, 8], got 1" in error("name: x\nitems: [a, {bits: 1}]\n")


def test_mapping_expected():
    assert "inner: expected a mapping of Inner fields, got a list" in error("name: x\ninner: [1]\n")


def test_syntax_error_names_line():
    msg = error("name: x\ninner: {bits: 3\nrate: 2\n")
    assert msg.startswith("r.yaml:") and "invalid YAML" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        from_yaml_file(Outer, tmp_path / "nope.yaml")


def test_overrides_win_and_nest():
    cfg = from_yaml_text(
        Outer,
        "name: x\ninner: {bits: 3}\n",
        overrides={"rate": 0.9, "inner.names": ["z"], "name": "y"},
    )
    assert (cfg.name, cfg.rate, cfg.inner) == ("y", 0.9, Inner(bits=3, names=("z",)))
    cfg = from_yaml_text(Outer, "name: x\n", overrides={"inner.bits": 6})
    assert cfg.inner == Inner(bits=6)


def test_bad_override_is_named():
    with pytest.raises(ConfigError, match=r"inner\.bits: must be in \[2, 8\], got 1"):
        from_yaml_text(Outer, "name: x\n", overrides={"inner.bits": 1})
    with pytest.raises(ConfigError, match="unknown key 'rat'"):
        from_yaml_text(Outer, "name: x\n", overrides={"rat": 1})


def test_to_dict_round_trip():
    cfg = Outer(name="x", inner=Inner(3, ("a",)), items=("s", Inner()))
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert to_dict(cfg)["inner"] == {"bits": 3, "names": ["a"]}


def test_closest():
    assert closest("distil", ["distill", "export"]) == ["distill"]
    assert closest("zzz", ["distill"]) == []
