"""toolchain/config.py: stage configs and recipes; error messages name file, line and key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from toolchain import config
from toolchain.config import (
    BudgetSpec,
    DistillConfig,
    QuantizeConfig,
    Recipe,
    load_recipe,
    recipe_to_yaml,
)
from toolchain.devices.budgets import resolve_recipe
from toolchain.devices.profiles import get_profile
from toolchain.errors import ConfigError, UnknownDeviceError


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def recipe_error(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        resolve_recipe(load_recipe(path), file=str(path))
    return str(info.value).replace(str(path), "recipe.yaml")


def test_defaults_are_valid_and_frozen():
    recipe = load_recipe(None)
    assert recipe == Recipe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.task = "rte"  # type: ignore[misc]


def test_every_stage_config_has_a_version():
    recipe = Recipe()
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if isinstance(value, config.StageConfig):
            assert value.version >= 1, f.name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "task: sst2\ndistil:\n  steps: 3\n",
            "recipe.yaml:2: distil: unknown key 'distil' (did you mean 'distill'?)",
        ),
        (
            "quantize:\n  weight_bits: 9\n",
            "recipe.yaml:2: quantize.weight_bits: must be in [2, 8], got 9",
        ),
        (
            "quantize:\n  weight_bits: four\n",
            "recipe.yaml:2: quantize.weight_bits: expected an integer, got a string 'four'",
        ),
        (
            "distill:\n  temperature: 0\n",
            "recipe.yaml:2: distill.temperature: must be in [0.05, 100], got 0",
        ),
        (
            "distill:\n  mapping: railkd\n",
            "recipe.yaml:2: distill.mapping: expected one of 'none', 'uniform', 'last', 'rail', "
            "'ga'",
        ),
        (
            "distill:\n  student_shape: L3-H384\n",
            "recipe.yaml:2: distill.student_shape: expected 'L<layers>:H<hidden>:A<heads>:F<ffn>'",
        ),
        (
            "distill:\n  student_shape: L3:H384:A5:F1536\n",
            "distill.student_shape: hidden size 384 must be divisible by the head count 5",
        ),
        (
            "distill:\n  ga:\n    mutation_rate: 1.5\n",
            "recipe.yaml:3: distill.ga.mutation_rate: must be in [0, 1], got 1.5",
        ),
        ("export:\n  opset: 28\n", "recipe.yaml:2: export.opset: must be in [14, 26], got 28"),
        (
            "quantize:\n  overrides: {'*.attention.*': 1}\n",
            "recipe.yaml:2: quantize.overrides.*.attention.*: must be in [2, 8], got 1",
        ),
        (
            "budgets:\n  - {name: fast, latency_ms: -1, memory_mb: 100}\n",
            "recipe.yaml:2: budgets[0].latency_ms: must be in [0.001, inf], got -1",
        ),
        (
            "budgets: [tight, tight]\n",
            "recipe.yaml:1: budgets: budget names must be unique, repeated: tight",
        ),
        ("seed: -3\n", "recipe.yaml:1: seed: must be in [0, 4.29497e+09], got -3"),
        (
            "profile:\n  target: localhost:9600\n",
            "recipe.yaml:2: profile.target: expected a URL such as http://HOST:9600",
        ),
        ("version: 2\n", "recipe.yaml:1: version: this edgec reads recipe version 1, got 2"),
        ("- a\n- b\n", "recipe.yaml:1: expected a mapping of Recipe fields, got a list"),
    ],
)
def test_recipe_errors_name_file_line_and_key(tmp_path, text, expected):
    assert expected in recipe_error(tmp_path, text)


def test_unknown_budget_name_lists_the_device_budgets(tmp_path):
    msg = recipe_error(tmp_path, "device: raspberry-pi-5\nbudgets: [tigth]\n")
    assert "device raspberry-pi-5 has no budget 'tigth' (did you mean 'tight'?)" in msg
    assert "its budgets: tight, balanced, relaxed" in msg


def test_unknown_device_in_recipe(tmp_path):
    path = write(tmp_path, "device: jetsn\n")
    with pytest.raises(UnknownDeviceError, match="unknown device 'jetsn'"):
        resolve_recipe(load_recipe(path))


def test_resolve_fills_device_budgets_and_alias(tmp_path, monkeypatch):
    monkeypatch.delenv(config.DATA_DIR_ENV, raising=False)
    recipe, notes = resolve_recipe(load_recipe(None, overrides={"device": "jetson"}))
    assert recipe.device == "jetson-orin-nano-8gb"
    assert [b.name for b in recipe.budgets] == ["tight", "balanced", "relaxed"]
    assert all(isinstance(b, BudgetSpec) for b in recipe.budgets)
    assert notes and "'jetson' is an alias: using profile jetson-orin-nano-8gb" in notes[0]


def test_custom_and_named_budgets_mix():
    recipe = load_recipe(
        None,
        overrides={
            "device": "raspberry-pi-5",
            "budgets": ["tight", {"name": "mine", "latency_ms": 7, "memory_mb": 300}],
        },
    )
    recipe, _ = resolve_recipe(recipe)
    assert recipe.budgets[0] == get_profile("raspberry-pi-5").budgets[0]
    assert recipe.budgets[1] == BudgetSpec(name="mine", latency_ms=7.0, memory_mb=300.0)


def test_data_dir_falls_back_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path))
    recipe, _ = resolve_recipe(load_recipe(None))
    assert recipe.data_dir == str(tmp_path)
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    recipe, _ = resolve_recipe(load_recipe(None, overrides={"data_dir": str(explicit)}))
    assert recipe.data_dir == str(explicit)


def test_missing_data_dir_is_named_with_its_origin(tmp_path, monkeypatch):
    monkeypatch.setenv(config.DATA_DIR_ENV, str(tmp_path / "gone"))
    with pytest.raises(
        ConfigError, match=r"data_dir: data folder not found: .*gone \(from \$EDGEC"
    ):
        resolve_recipe(load_recipe(None))
    monkeypatch.delenv(config.DATA_DIR_ENV)
    with pytest.raises(ConfigError, match=r"not found: /nope \(from data_dir\)"):
        resolve_recipe(load_recipe(None, overrides={"data_dir": "/nope"}))


def test_cli_style_overrides_ignore_none(tmp_path):
    path = write(tmp_path, "task: rte\ndistill: {mapping: uniform}\n")
    recipe = load_recipe(path, overrides={"task": None, "distill.mapping": "ga", "seed": 7})
    assert (recipe.task, recipe.distill.mapping, recipe.seed) == ("rte", "ga", 7)


def test_printed_recipe_reloads_to_the_same_recipe(tmp_path):
    original, _ = resolve_recipe(load_recipe(None, overrides={"device": "h100", "seed": 3}))
    text = recipe_to_yaml(original)
    assert "temperature: 2.0" in text and "weight_bits: 4" in text
    path = write(tmp_path, text)
    assert load_recipe(path) == original


def test_stage_configs_validate_directly():
    with pytest.raises(ConfigError, match="weight_bits: must be in"):
        QuantizeConfig(weight_bits=1)
    with pytest.raises(ConfigError, match="block_size: must be one of"):
        QuantizeConfig(block_size=48)
    assert DistillConfig(student_shape="L4:H192:A6:F768").student_shape == "L4:H192:A6:F768"


def test_empty_file_is_all_defaults(tmp_path):
    assert load_recipe(write(tmp_path, "")) == Recipe()
    assert load_recipe(write(tmp_path, "# only a comment\n")) == Recipe()


def test_yaml_dump_is_plain(tmp_path):
    data = yaml.safe_load(recipe_to_yaml(Recipe()))
    assert data["distill"]["ga"]["population"] == 12
    assert data["budgets"] == []


# -- hostile recipes: bounded YAML, non-finite and huge numbers, encodings ---------------------
def billion_laughs(levels: int = 9, *, mapping: bool = False) -> str:
    """Nested aliases: each level repeats the previous one 9 times (9**levels values), in lists
    or (``mapping``) in mappings."""
    if mapping:
        lines = ["a0: &a0 {" + ", ".join(f"k{j}: lol" for j in range(9)) + "}"]
    else:
        lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        refs = [f"k{j}: *a{i - 1}" if mapping else f"*a{i - 1}" for j in range(9)]
        lines.append(f"a{i}: &a{i} " + ("{%s}" if mapping else "[%s]") % ", ".join(refs))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("mapping", [False, True])
@pytest.mark.parametrize("key", ["budgets", "quantize", "unknown"])
def test_billion_laughs_is_refused_fast(tmp_path, key, mapping):
    import time

    text = billion_laughs(mapping=mapping).replace("a9:", f"{key}:", 1)
    assert len(text) < 1000
    path = write(tmp_path, text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"refused: the document expands to more than 10,000"):
        load_recipe(path)
    assert time.perf_counter() - start < 5  # about 10 ms; the unbounded loader took minutes
    from toolchain.presets import preset_overrides

    assert preset_overrides("quick", str(path))["preset"] == "quick"  # walks nothing large


def test_a_recipe_using_aliases_still_loads(tmp_path):
    path = write(tmp_path, "distill: {temperature: &t 3.0, steps: &n 500}\n"
                           "quantize: {temperature: *t, steps: *n}\n")  # fmt: skip
    recipe = load_recipe(path)
    assert (recipe.distill.temperature, recipe.quantize.temperature) == (3.0, 3.0)
    assert (recipe.distill.steps, recipe.quantize.steps) == (500, 500)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "budgets: &a [*a]\n",
            "recipe.yaml:1: refused: an alias refers to a node that contains it",
        ),
        (
            "budgets: " + "[" * 100 + "]" * 100 + "\n",
            "recipe.yaml:1: refused: nested deeper than 64",
        ),
        ("seed: !!python/name:os.system\n", "recipe.yaml:1: seed: cannot read '' as !!python/name"),
        ("seed: !!int abc\n", "recipe.yaml:1: seed: cannot read 'abc' as !!int"),
        ("seed: 3\nname: a\x07b\n", "recipe.yaml:2: invalid YAML: character #x0007 is not allowed"),
    ],
)
def test_hostile_yaml_is_refused_with_its_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert expected in str(info.value).replace(str(path), "recipe.yaml")


BIG = "1" + "0" * 400  # 10**400


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("distill:\n  temperature: .nan\n", "recipe.yaml:2: distill.temperature: expected a finite "
         "number, got .nan"),
        ("distill:\n  temperature: .inf\n", "distill.temperature: expected a finite number, got "
         ".inf"),
        ("quantize:\n  kd_weight: -.inf\n", "quantize.kd_weight: expected a finite number, got "
         "-.inf"),
        ("teacher_finetune:\n  time_budget_s: .inf\n", "teacher_finetune.time_budget_s: expected "
         "a finite number"),
        (f"seed: {BIG}\n", "recipe.yaml:1: seed: out of range: a 401-digit integer"),
        (f"seed: 1{'0' * 20}\n", "seed: out of range: an integer of about 21 digits (at most"),
        (f"distill:\n  temperature: {BIG}\n", "distill.temperature: out of range: a 401-digit"),
        (f"distill:\n  steps: -{BIG}\n", "distill.steps: out of range: a 402-digit integer"),
        ("budgets:\n  - {name: x, latency_ms: .nan, memory_mb: 100}\n", "recipe.yaml:2: "
         "budgets[0].latency_ms: expected a finite number, got .nan"),
        ("budgets:\n  - {name: x, latency_ms: 5, memory_mb: .inf}\n", "budgets[0].memory_mb: "
         "expected a finite number, got .inf"),
        (f"budgets:\n  - {{name: x, latency_ms: 5, memory_mb: {BIG}}}\n", "budgets[0].memory_mb: "
         "out of range"),
        ("profile:\n  iterations: 100000000000\n", "profile.iterations: must be in [1, 1e+06]"),
    ],
)  # fmt: skip
def test_non_finite_and_huge_numbers_are_refused_naming_the_key(tmp_path, text, expected):
    assert expected in recipe_error(tmp_path, text)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", BIG])
@pytest.mark.parametrize(
    ("section", "key", "where"),
    [
        ("budgets", "latency_ms", "budgets[0].latency_ms"),
        ("budgets", "memory_mb", "budgets[0].memory_mb"),
        ("protocol", "percentile", "protocol.percentile"),
    ],
)
def test_profiles_refuse_non_finite_and_huge_numbers(tmp_path, section, key, where, value):
    from toolchain.devices.names import builtin_profiles_dir
    from toolchain.devices.profiles import load_profile_file

    text = (builtin_profiles_dir() / "raspberry-pi-5.yaml").read_text()
    head, sep, rest = text.partition(f"\n{section}:\n")
    line = next(ln for ln in rest.splitlines() if ln.strip().startswith(f"{key}:"))
    path = tmp_path / "raspberry-pi-5.yaml"
    path.write_text(head + sep + rest.replace(line, line.split(":")[0] + f": {value}", 1))
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:") and f"{where}: " in msg
    assert ("finite number" in msg) if value != BIG else ("out of range" in msg)


def _float_fields():
    import math
    import typing

    from toolchain.devices.facts import GpuFacts, MemoryFacts
    from toolchain.devices.profiles import LatencyAnchor, MeasurementProtocol

    required = {
        config.BudgetSpec: {"name": "b", "latency_ms": 1.0, "memory_mb": 10.0},
        MemoryFacts: {"size_gb": 8.0, "type": "x", "sources": {"size_gb": "S1", "type": "S1"}},
        GpuFacts: {"model": "g", "arch": "a", "compute_capability": "8.7"},
        LatencyAnchor: {"benchmark": "b", "model": "m", "layers": 1, "hidden": 8, "heads": 1,
                        "ffn": 8, "seq": 8, "precision": "fp32", "latency_ms": 1.0,
                        "runtime": "pytorch", "software": "s", "source": "S1"},
    }  # fmt: skip
    classes = [*required, config.DataConfig, config.TeacherConfig, config.GAConfig,
               config.DistillConfig, config.QuantizeConfig, config.SearchConfig,
               config.ExportConfig, config.ProfileConfig, config.QualityConfig,
               config.CVTConfig, MeasurementProtocol]  # fmt: skip
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if float in (hints[f.name], *typing.get_args(hints[f.name])):
                for bad in (math.nan, math.inf, -math.inf):
                    yield pytest.param(cls, required.get(cls, {}), f.name, bad,
                                       id=f"{cls.__name__}.{f.name}={bad}")  # fmt: skip


@pytest.mark.parametrize(("cls", "required", "key", "bad"), list(_float_fields()))
def test_every_float_field_refuses_nan_and_infinities(cls, required, key, bad):
    """Every float of every config and profile dataclass, built from Python (no YAML)."""
    if cls.__name__ == "GpuFacts":
        required = {**required, "sources": {key: "S1"}}
    with pytest.raises(ConfigError) as info:
        cls(**{**required, key: bad})
    assert info.value.key == key and "finite" in info.value.message


def test_non_utf8_recipe_names_file_line_and_byte(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"seed: 1\nname: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value) == (
        f"{path}:2: not UTF-8: byte 17 (0xe9) cannot be decoded; save the file as UTF-8"
    )


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"\xef\xbb\xbfseed: 3\ntask: rte\n")
    recipe = load_recipe(path)
    assert (recipe.seed, recipe.task) == (3, "rte")


def test_set_values_go_through_the_bounded_loader():
    from toolchain.schema import safe_load

    assert safe_load("{a: &x [1, 2], b: *x}", file="--set x") == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(ConfigError, match=r"--set x:5: refused: the document expands"):
        safe_load(billion_laughs(), file="--set x")
    with pytest.raises(ConfigError, match=r"--set x:1: invalid value"):
        safe_load("!!int abc", file="--set x")
