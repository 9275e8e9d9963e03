"""toolchain/cli: --help of every verb, not-implemented verbs, devices, build --print-recipe."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from toolchain.cli import main as cli
from toolchain.cli.main import VERBS, main
from toolchain.devices.profiles import get_profile

ISSUE_VERBS = (
    "build",
    "teacher",
    "distill",
    "prune",  # issue 22
    "quantize",
    "search",
    "export",
    "profile",
    "bundle",
    "keygen",
    "run",
    "agent",
    "devices",
    "eval",
    "report",
)
NOT_YET = [v for v in VERBS if not cli.verb_module(v).IMPLEMENTED]


def test_verb_table_is_the_issue_list():
    assert VERBS == ISSUE_VERBS


def test_top_help_lists_every_verb_with_one_line(edgec):
    proc = edgec("--help")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    for verb in VERBS:
        (line,) = [ln for ln in lines if ln.startswith(f"  {verb} ")]
        assert cli.verb_module(verb).HELP in line
        assert ("[not implemented yet]" in line) == (verb in NOT_YET)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: edgec {verb}")
    assert cli.verb_module(verb).HELP.split(" (")[0].lower() in out.lower()


@pytest.mark.parametrize("verb", NOT_YET)
def test_unimplemented_verb_says_so_and_exits_2(verb, capsys):
    assert main([verb, "--some-option", "value", "positional"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"edgec {verb}: not implemented yet")


def test_no_verb_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "verbs:" in capsys.readouterr().err


def test_unknown_option_of_implemented_verb_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["devices", "--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_version(edgec):
    proc = edgec("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("edgec 0.")


def test_console_script_installed():
    exe = shutil.which("edgec")
    if exe is None:
        pytest.skip("edgec console script not on PATH (package not pip-installed)")
    proc = subprocess.run([exe, "devices", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) >= 11


# -- devices ---------------------------------------------------------------------------------
def test_devices_lists_at_least_11_profiles(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "ALIASES", "KIND", "MEMORY", "RUNTIMES"]
    rows = [ln for ln in out[1:] if ln and not ln.startswith(("11 profiles", " "))]
    assert len(rows) >= 11
    (nano,) = [r for r in rows if r.startswith("jetson-orin-nano-8gb ")]
    assert nano.split() == [
        "jetson-orin-nano-8gb",
        "jetson,orin-nano",
        "embedded-gpu",
        "8",
        "GB",
        "@",
        "68",
        "GB/s",
        "tensorrt,onnxruntime-cuda,onnxruntime-cpu",
    ]


def test_devices_json(capsys):
    assert main(["devices", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {d["name"]: d for d in data}
    assert len(by_name) >= 11
    nano = by_name["jetson-orin-nano-8gb"]
    assert nano["aliases"] == ["jetson", "orin-nano"] and nano["memory_gb"] == 8
    assert nano["runtimes"]["tensorrt"] == ["fp32", "fp16", "int8", "int4"]
    assert [b["name"] for b in nano["budgets"]] == ["tight", "balanced", "relaxed"]


def test_devices_show_alias(capsys):
    assert main(["devices", "show", "jetson"]) == 0
    captured = capsys.readouterr()
    assert "'jetson' is an alias: using profile jetson-orin-nano-8gb" in captured.err
    out = captured.out
    assert out.startswith("jetson-orin-nano-8gb: ")
    assert "gpu.int8_tops_dense" in out and "S3 (datasheet, 40 sparse / 20 dense)" in out
    tight = get_profile("jetson-orin-nano-8gb").budgets[0]
    assert f"tight     p90 <= {tight.latency_ms:g} ms" in out and "References" in out


@pytest.mark.parametrize(
    "args", [["devices", "show", "h100", "--json"], ["devices", "--json", "show", "h100"]]
)
def test_devices_show_json(args, capsys):
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "h100"
    assert data["hardware"]["gpu"]["compute_capability"] == "9.0"
    assert data["references"]["S30"]


def test_unknown_device_is_one_message_not_a_traceback(edgec):
    proc = edgec("devices", "show", "jetsom-nano")
    assert proc.returncode == 1
    assert proc.stderr.startswith("edgec: error: unknown device 'jetsom-nano'. Known devices")
    assert "Traceback" not in proc.stderr
    listed = [ln.split()[0] for ln in proc.stderr.splitlines() if ln.startswith("  ")]
    assert listed[0] == "jetson-nano" and len(listed) >= 11


# -- build --------------------------------------------------------------------------------
def test_print_recipe_fills_defaults(capsys, monkeypatch):
    monkeypatch.delenv("EDGEC_DATA_DIR", raising=False)
    assert (
        main(["build", "--device", "jetson", "--task", "rte", "--seed", "4", "--print-recipe"]) == 0
    )
    captured = capsys.readouterr()
    assert captured.out.startswith("# effective edgec")
    recipe = yaml.safe_load(captured.out)
    assert recipe["device"] == "jetson-orin-nano-8gb"
    assert recipe["task"] == "rte" and recipe["seed"] == 4
    assert [b["name"] for b in recipe["budgets"]] == ["tight", "balanced", "relaxed"]
    assert recipe["budgets"][0]["latency_ms"] == get_profile("jetson").budgets[0].latency_ms
    assert recipe["quantize"]["weight_bits"] == 8  # the quick preset (the default) is W8A8
    assert recipe["distill"]["ga"]["population"] == 12 and recipe["distill"]["steps"] == 800
    assert "'jetson' is an alias" in captured.err


def test_print_recipe_from_file_with_budget_option(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("device: raspberry-pi-5\ntask: sst2\nquantize: {weight_bits: 2}\n")
    assert main(["build", "--recipe", str(path), "--budget", "relaxed", "--print-recipe"]) == 0
    recipe = yaml.safe_load(capsys.readouterr().out)
    assert recipe["quantize"]["weight_bits"] == 2
    assert [b["name"] for b in recipe["budgets"]] == ["relaxed"]


def test_printed_recipe_is_accepted_back(tmp_path, edgec):
    first = edgec("build", "--device", "rpi4", "--print-recipe")
    assert first.returncode == 0
    path = tmp_path / "effective.yaml"
    path.write_text(first.stdout)
    again = edgec("build", "--recipe", str(path), "--print-recipe")
    assert again.returncode == 0
    assert yaml.safe_load(again.stdout) == yaml.safe_load(first.stdout)


def test_bad_recipe_via_cli_names_file_line_key(tmp_path, edgec):
    path = tmp_path / "r.yaml"
    path.write_text("task: sst2\nquantize:\n  weight_bits: 9\n")
    proc = edgec("build", "--recipe", str(path), "--print-recipe")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"edgec: error: {path}:3: quantize.weight_bits: must be in [2, 8], got 9"
    )


def test_missing_recipe_file(tmp_path, edgec):
    proc = edgec("build", "--recipe", str(tmp_path / "nope.yaml"), "--print-recipe")
    assert proc.returncode == 1 and "file not found" in proc.stderr


def test_build_validates_before_running(tmp_path, capsys):
    assert main(["build", "--device", "nowhere", "-o", str(tmp_path / "run")]) == 1
    assert "unknown device 'nowhere'" in capsys.readouterr().err
    assert main(["build", "--device", "host"]) == 1
    assert "name the output folder: -o OUT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse: not one of quick, full
        main(["build", "--device", "host", "--preset", "huge", "-o", "x"])
    assert info.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_set_overrides_any_recipe_key(capsys, monkeypatch):
    monkeypatch.delenv("EDGEC_DATA_DIR", raising=False)
    args = ["build", "--device", "host", "--task", "sst2", "--print-recipe"]
    sets = ["--set", "distill.steps=1234", "--set", "teacher_finetune.require_above_trivial=false"]
    assert main([*args, *sets]) == 0
    recipe = yaml.safe_load(capsys.readouterr().out)
    assert recipe["distill"]["steps"] == 1234
    assert recipe["teacher_finetune"]["require_above_trivial"] is False
    assert main([*args, "--set", "distill.steps"]) == 1  # not KEY=VALUE: a one-line error
    assert "expected KEY=VALUE" in capsys.readouterr().err
