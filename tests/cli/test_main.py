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
    "supernet",  # issue 25: the task-agnostic supernet
    "mapping",  # issue 25: the task-agnostic GA layer mapping
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


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_no_fragment_of_the_docstring_summary(verb, capsys):
    """The docstring's first paragraph is the summary HELP already says; help starts after it,
    never in the middle of its wrapped sentence."""
    doc = cli.verb_module(verb).__doc__ or ""
    summary = doc.partition("\n\n")[0].splitlines()
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    for line in summary[1:]:
        assert line.strip() not in out


def _examples() -> list[tuple[str, str]]:
    import re

    out = []
    for verb in VERBS:
        doc = (cli.verb_module(verb).__doc__ or "").replace("\\\n", " ")
        for line in doc.splitlines():
            if line.strip().startswith("edgec "):
                out.append((verb, line.strip()))
    assert len(out) > 15 and all(re.match(r"edgec \w", x) for _, x in out)
    return out


@pytest.mark.parametrize(("verb", "example"), _examples())
def test_every_help_example_names_real_devices_and_budgets(verb, example):
    words = example.split()
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "--device":
            profile = get_profile(value)
            budgets = [w2 for w1, w2 in zip(words, words[1:], strict=False) if w1 == "--budget"]
            for b in budgets:
                assert b in {x.name for x in profile.budgets}, (example, b)


TRAINING_VERBS = ("teacher", "distill", "prune", "quantize", "eval")
PROFILE_VERBS = ("build", "search", "profile", "bundle", "export")


@pytest.mark.parametrize("verb", VERBS)
def test_device_means_a_target_profile_on_every_verb(verb):
    parser = cli.build_parser().verb_parsers[verb]
    actions = {o: a for a in parser._actions for o in a.option_strings}
    if verb in TRAINING_VERBS:
        assert "--device" not in actions and "--train-device" in actions
        assert "torch device" in actions["--train-device"].help
    if verb in PROFILE_VERBS:
        assert "profile" in actions["--device"].help.lower()
    if "--train-device" in actions:
        assert actions["--train-device"].dest == "train_device"


def test_a_torch_device_given_as_device_points_to_train_device(capsys):
    with pytest.raises(SystemExit) as info:
        main(["distill", "--teacher", "t", "--device", "cuda", "-o", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --device cuda. Did you mean --train-device" in err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["biuld"], "Did you mean build?"),
        (["export", "m", "-o", "x", "--fromat", "fp32"], "Did you mean --format?"),
        (["export", "m", "-o", "x", "--format", "fp23"], "Did you mean fp32?"),
        (["devices", "--jsn"], "Did you mean --json?"),
    ],
)
def test_mistyped_verbs_flags_and_choices_get_a_suggestion(argv, hint, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert hint in capsys.readouterr().err


def test_nothing_close_gets_no_suggestion(capsys):
    with pytest.raises(SystemExit):
        main(["devices", "--zzzzzz"])
    assert "Did you mean" not in capsys.readouterr().err


def test_size_and_budget_lines_say_what_holds():
    from toolchain.cli.profile import budget_line
    from toolchain.cli.quantize import size_vs_fp32

    assert size_vs_fp32(3.2) == "3.2x smaller than fp32"
    assert size_vs_fp32(0.7) == "1.43x larger than fp32"
    b = {"verdict": "missed", "percentile": 90, "latency_ms": 0.58, "latency_budget_ms": 3,
         "peak_memory_mb": 900.0, "memory_budget_mb": 800, "memory_kind": "peak RSS"}  # fmt: skip
    assert budget_line(b) == "missed: p90 0.58 ms <= 3 ms, peak RSS 900 MB > 800 MB"
    assert "?" not in budget_line(b)


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
