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
