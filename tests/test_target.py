"""toolchain/target.py: a device resolved once, how its latencies are obtained, and the one
predictor the search, the bundles and `edgec profile --predict` share."""

from __future__ import annotations

import pytest
from conftest import write_fake_predictor

from toolchain.config import BudgetSpec, ProfileConfig
from toolchain.devices.predict import Shape, predictor_for
from toolchain.errors import ConfigError, UnknownDeviceError
from toolchain.models.adapters import Shape as ModelShape
from toolchain.nas.space import Arch
from toolchain.profile.runners import ProfileError
from toolchain.target import MEASURED_HERE, PREDICTED, DeviceTarget

BUDGET = BudgetSpec(name="b", latency_ms=5.0, memory_mb=1024, batch=2, seq_len=64)


def test_an_alias_is_resolved_once_and_remembered():
    t = DeviceTarget.resolve("jetson")
    assert t.name == "jetson-orin-nano-8gb" and t.requested == "jetson" and not t.is_host
    assert t.note.startswith("'jetson' is an alias: using profile jetson-orin-nano-8gb")
    assert t.latency_source == PREDICTED and not t.measurable
    host = DeviceTarget.resolve("host")
    assert host.is_host and host.latency_source == MEASURED_HERE and host.requested == "host"
    assert DeviceTarget.resolve(host.name).note == ""  # the profile's own name: no alias note
    with pytest.raises(UnknownDeviceError, match="jetson"):
        DeviceTarget.resolve("jetsn")


def test_an_agent_needs_its_token_file(tmp_path):
    with pytest.raises(ConfigError, match="--target needs --token-file"):
        DeviceTarget.resolve("jetson", agent_url="http://127.0.0.1:9600")
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o600)  # a token others can read is refused
    t = DeviceTarget.resolve("jetson", agent_url="http://127.0.0.1:9600", token_file=token)
    assert t.agent.token == "secret-token" and t.measurable and "secret" not in repr(t)
    with pytest.raises(ConfigError, match="--ca-cert goes with an https:// --target"):
        DeviceTarget.resolve("jetson", ca_cert="agent.crt")
    with pytest.raises(ProfileError, match="http://127.0.0.1:9600 is not https://"):
        DeviceTarget.resolve(
            "jetson", agent_url="http://127.0.0.1:9600", token_file=token, ca_cert="agent.crt"
        )


def test_a_relative_ca_cert_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    import toolchain.target as target_module
    from toolchain.config import load_recipe

    token = tmp_path / "token"
    token.write_text("secret-token\n")
    token.chmod(0o600)
    seen = []
    monkeypatch.setattr(target_module, "client_tls", lambda url, ca: seen.append(ca))
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(None, overrides={"profile.ca_cert": "certs/agent.crt"})
    assert recipe.profile.ca_cert == "certs/agent.crt"
    t = DeviceTarget.resolve(
        "jetson", agent_url="https://127.0.0.1:9600", token_file=token,
        ca_cert=recipe.profile.ca_cert,
    )  # fmt: skip
    assert seen == ["certs/agent.crt"]
    assert t.agent.ca_file == str(tmp_path / "certs" / "agent.crt")


def test_the_recipe_overrides_the_profile_protocol():
    t = DeviceTarget.resolve("host", overrides=ProfileConfig(warmup=3, iterations=7, threads=1))
    base = DeviceTarget.resolve("host").protocol
    assert (t.protocol.warmup, t.protocol.iterations, t.protocol.threads) == (3, 7, 1)
    assert t.protocol.repeats == base.repeats  # not overridden
    request = t.request([(1, 16)])
    assert request["warmup"] == 3 and request["iterations"] == 7 and request["threads"] == 1


def test_shape_of_takes_a_subnet_or_a_model_shape_with_the_vocabulary():
    arch = Arch(layers=(0, 2, 5), hidden=320, heads=10, ffn=384)
    want = Shape(layers=3, hidden=320, heads=10, ffn=384, seq=64, batch=2, vocab=1000)
    assert DeviceTarget.shape_of(arch, BUDGET, 1000) == want
    assert DeviceTarget.shape_of(ModelShape(3, 320, 10, 384), BUDGET, 1000) == want


def test_prediction_is_the_search_predictor(tmp_path):
    write_fake_predictor(tmp_path)
    t = DeviceTarget.resolve("host", predictors_dir=tmp_path)
    shape = Shape(layers=3, hidden=64, heads=4, ffn=128, seq=64, batch=2)
    assert t.latency_for(shape, "fp32") == predictor_for(t.profile, tmp_path, "fp32")(shape)
    jetson = DeviceTarget.resolve("jetson")
    assert jetson.latency_for(shape, "int8")["label"].startswith("predicted (calibrated on")


def test_a_device_that_is_not_here_is_never_measured_here(tmp_path):
    jetson = DeviceTarget.resolve("jetson")
    with pytest.raises(ProfileError, match="is not this machine.*never reported as the device's"):
        jetson.measure(tmp_path / "model.onnx", [(1, 16)])
    entry = jetson.latency_entry(tmp_path, BUDGET, Shape(3, 64, 4, 128, 64, 2), "int8")
    assert entry["status"] == "predicted"
    assert entry["label"].startswith("predicted for jetson-orin-nano-8gb, not measured: p90 ")
    assert "batch 2, sequence 64" in entry["label"]
    assert entry["p90_lo_ms"] <= entry["p90_ms"] <= entry["p90_hi_ms"]
    assert f"({entry['p90_lo_ms']:.2f}-{entry['p90_hi_ms']:.2f})" in entry["label"]
    assert 0 < entry["peak_rss_mb"] <= entry["peak_rss_hi_mb"]
