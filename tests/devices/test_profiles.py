"""toolchain/devices/profiles.py: every shipped profile validates; aliases; unknown names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from toolchain.devices import profiles as devices
from toolchain.devices.names import builtin_profiles_dir, profile_names
from toolchain.devices.profiles import (
    get_profile,
    list_profiles,
    load_profile_file,
    resolve_device,
)
from toolchain.errors import ConfigError, UnknownDeviceError

EXPECTED = {
    "jetson-agx-orin-64gb",
    "jetson-orin-nx-16gb",
    "jetson-orin-nano-8gb",
    "jetson-orin-nano-4gb",
    "jetson-agx-xavier",
    "jetson-xavier-nx",
    "jetson-nano",
    "raspberry-pi-5",
    "raspberry-pi-4",
    "x86-64-host",
    "h100",
}
PROFILE_FILES = sorted(builtin_profiles_dir().glob("*.yaml"))


def test_all_expected_profiles_ship():
    assert {p.name for p in list_profiles()} == EXPECTED
    assert len(PROFILE_FILES) == len(EXPECTED)


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_loads_and_is_complete(path: Path):
    p = load_profile_file(path)
    assert p.name == path.stem
    assert 2 <= len(p.budgets) <= 3
    for b in p.budgets:
        # Budgets are for a BERT-class classifier at batch 1, seq 128, p90 (the definition).
        assert (b.batch, b.seq_len, b.percentile) == (1, 128, 90.0)
        assert b.latency_ms > 0 and b.memory_mb > 0 and b.description
    latencies = [b.latency_ms for b in p.budgets]
    assert latencies == sorted(latencies), "budgets go from tight to relaxed"
    assert p.budget_rationale.strip()
    assert p.runtimes and all(r.precisions for r in p.runtimes)
    assert p.hardware is not None and p.hardware.memory.size_gb > 0
    assert (p.protocol.batch, p.protocol.seq_len) == (1, 128)
    assert p.software and all(s.source for s in p.software)


@pytest.mark.parametrize("name", ["jetson-orin-nano-8gb", "jetson-agx-orin-64gb", "h100"])
def test_gpu_facts_carry_sources(name):
    gpu = get_profile(name).hardware.gpu
    assert gpu.int8_tops_dense and gpu.fp16_tflops_dense
    for fact in ("compute_capability", "int8_tops_dense", "fp16_tflops_dense"):
        assert devices.REFERENCE_TAG.search(gpu.sources[fact]), fact


def test_known_facts_match_the_reference_sheet():
    nano = get_profile("jetson-orin-nano-8gb").hardware
    assert (nano.gpu.sm, nano.gpu.int8_tops_dense, nano.memory.bandwidth_gbps) == ("sm_87", 20, 68)
    agx = get_profile("jetson-agx-orin-64gb").hardware
    assert (agx.gpu.int8_tops_dense, agx.memory.bandwidth_gbps) == (85, 204.8)
    assert get_profile("jetson-agx-xavier").hardware.gpu.sm == "sm_72"
    assert get_profile("jetson-nano").hardware.gpu.int8_tops_dense is None  # no INT8 on sm_53
    assert "asimddp" in get_profile("raspberry-pi-5").hardware.cpu.features
    assert "asimddp" not in get_profile("raspberry-pi-4").hardware.cpu.features


def test_host_profile_reads_this_machine():
    import os

    host = get_profile("x86-64-host")
    assert host.hardware.cpu.cores == len(os.sched_getaffinity(0))
    assert host.hardware.cpu.sources["cores"].startswith(devices.HOST_SOURCE)
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    assert host.hardware.memory.size_gb == pytest.approx(int(meminfo[1]) / 1024**2, abs=0.1)
    assert host.software[0].python


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("jetson", "jetson-orin-nano-8gb"),
        ("host", "x86-64-host"),
        ("rpi5", "raspberry-pi-5"),
        ("agx-orin", "jetson-agx-orin-64gb"),
        ("xavier", "jetson-agx-xavier"),
    ],
)
def test_alias_resolves_and_says_which(alias, name):
    res = resolve_device(alias)
    assert res.profile.name == name and res.via_alias
    assert res.note.startswith(f"'{alias}' is an alias: using profile {name}")


def test_exact_name_has_no_note():
    res = resolve_device("jetson-nano")
    assert not res.via_alias and res.note == ""


def test_unknown_device_lists_known_ones_closest_first():
    with pytest.raises(UnknownDeviceError) as info:
        resolve_device("raspbery-pi")
    msg = str(info.value)
    assert msg.startswith("unknown device 'raspbery-pi'. Known devices, closest first:")
    listed = [line.split()[0] for line in msg.splitlines()[1:] if line.startswith("  ")]
    assert set(listed) == EXPECTED
    assert listed[:2] == ["raspberry-pi-4", "raspberry-pi-5"]
    assert "(aliases: jetson, orin-nano)" in msg


def test_profile_path_accepted(tmp_path):
    src = builtin_profiles_dir() / "raspberry-pi-5.yaml"
    custom = tmp_path / "raspberry-pi-5.yaml"
    shutil.copy(src, custom)
    assert resolve_device(str(custom)).profile.name == "raspberry-pi-5"


def _variant(tmp_path, old: str, new: str, name: str = "raspberry-pi-5") -> Path:
    text = (builtin_profiles_dir() / f"{name}.yaml").read_text()
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("      cores: S23\n", "", "hardware.cpu.sources: fact 'cores' has no source"),
        (
            "      cores: S23\n",
            "      cores: S23\n      corez: S23\n",
            "source given for unknown fact 'corez' (did you mean 'cores'?)",
        ),
        (
            "      model: S23\n",
            "      model: S99\n",
            "hardware.cpu.sources.model: cites S99, which 'references' does not define",
        ),
        (
            "      model: S23\n",
            "      model: a blog\n",
            "cite a reference tag (e.g. S3), got 'a blog'",
        ),
        (
            "kind: embedded-cpu",
            "kind: embedded",
            "kind: expected one of 'embedded-gpu', 'embedded-cpu', 'host-cpu', 'server-gpu'",
        ),
        ("    cores: 4\n", "    cores: four\n", "hardware.cpu.cores: expected an integer"),
        ("    latency_ms: 5.7\n", "    latency_ms: 0\n", "budgets[0].latency_ms: must be in"),
        (
            "    precisions: [fp32, int8, int4, int2]",
            "    precisions: [fp32, int3]",
            "runtimes[0].precisions[1]: expected one of",
        ),
        (
            "name: raspberry-pi-5\n",
            "name: raspberry-pi-5b\n",
            "name: profile name 'raspberry-pi-5b' must match its file name 'raspberry-pi-5'",
        ),
    ],
)
def test_schema_errors_name_file_and_key(tmp_path, old, new, expected):
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_profile_file(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_profile_path_env_adds_and_overrides(tmp_path, monkeypatch):
    path = _variant(tmp_path, "    latency_ms: 5.7\n", "    latency_ms: 5.1\n")
    (tmp_path / "my-board.yaml").write_text(
        path.read_text()
        .replace("name: raspberry-pi-5\n", "name: my-board\n")
        .replace("aliases: [rpi5, pi5]", "aliases: [board]")
    )
    monkeypatch.setenv("EDGEC_PROFILE_PATH", str(tmp_path))
    assert get_profile("raspberry-pi-5").budgets[0].latency_ms == 5.1  # earlier folder wins
    assert resolve_device("board").profile.name == "my-board"
    assert len(list_profiles()) == len(EXPECTED) + 1


def test_duplicate_alias_across_profiles_refused(tmp_path, monkeypatch):
    _variant(tmp_path, "aliases: [rpi5, pi5]", "aliases: [jetson]")
    monkeypatch.setenv("EDGEC_PROFILE_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="alias 'jetson' is already used"):
        list_profiles()


def test_names_read_without_pyyaml_agree_with_the_full_loader():
    """`edgec agent` on a device with edgec[runtime] only (no pyyaml) reads profile names and
    aliases line by line (devices/names.py): the same as the YAML loader's, for every profile."""
    expected = {}
    for p in list_profiles():
        for label in (p.name, *p.aliases):
            expected[label.lower()] = p.name
    assert profile_names() == expected
