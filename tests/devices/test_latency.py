"""toolchain/devices/latency.py: the calibrated model predicts for every shipped profile with an
interval and a memory figure, grows with the work, reproduces its anchors, transfers between the
devices of a family, and implies the budgets the profiles ship; `edgec profile --predict` prints
it for every profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.cli.main import main
from toolchain.devices import latency
from toolchain.devices.latency import (
    TEACHER_SHAPE,
    Shape,
    anchor_shape,
    budget_precision,
    cross_device_check,
    family_of,
    model_for,
    suggest_budgets,
)
from toolchain.devices.predict import fit_cpu_latency, host_check, predictor_for
from toolchain.devices.profiles import (
    builtin_profiles_dir,
    get_profile,
    list_profiles,
    load_profile_file,
)
from toolchain.errors import ConfigError

ALL = [p.name for p in list_profiles()]
DERIVED = [n for n in ALL if n != "x86-64-host"]  # the host's budgets are measured, not derived
JETSONS = [n for n in ALL if n.startswith("jetson")]
SMALLEST = Shape(layers=1, hidden=128, heads=2, ffn=512, seq=128)  # L1:H128:A2:F512
KEYS = {"latency_ms", "latency_lo_ms", "latency_hi_ms", "memory_mb", "memory_hi_mb", "percentile",
        "label", "source"}  # fmt: skip
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _precisions(profile) -> set[str]:
    return {p for r in profile.runtimes for p in r.precisions} | {"fp32"}


@pytest.mark.parametrize("name", ALL)
def test_every_profile_predicts_with_an_interval_and_memory(name):
    profile = get_profile(name)
    for precision in sorted(_precisions(profile)):
        for shape in (SMALLEST, TEACHER_SHAPE, Shape(3, 384, 12, 1536, 64, batch=8, vocab=8000)):
            p = predictor_for(profile, None, precision)(shape)
            assert KEYS <= set(p), precision
            assert 0 < p["latency_lo_ms"] <= p["latency_ms"] <= p["latency_hi_ms"], precision
            assert p["memory_mb"] is not None and 0 < p["memory_mb"] <= p["memory_hi_mb"]
            assert p["percentile"] == 90 and p["source"] in ("calibrated", "assumed")
            assert p["label"].startswith("predicted (") and "%" in p["label"]


GROWS_ON = ["jetson-orin-nano-8gb", "jetson-agx-xavier", "jetson-nano", "raspberry-pi-4",
            "raspberry-pi-5", "h100", "x86-64-host"]  # fmt: skip


@pytest.mark.parametrize("name", GROWS_ON)
def test_latency_grows_with_layers_hidden_and_seq(name):
    model = model_for(get_profile(name), budget_precision(get_profile(name)))
    base = Shape(layers=2, hidden=256, heads=4, ffn=1024, seq=64)

    def ms(**change) -> float:
        return model.predict(Shape(**{**base.__dict__, **change}))["latency_ms"]

    assert ms(layers=1) < ms() < ms(layers=4) < ms(layers=8)
    assert ms(hidden=128, heads=2, ffn=512) < ms() < ms(hidden=512, heads=8, ffn=2048)
    assert ms(seq=16) <= ms() < ms(seq=256) < ms(seq=512)
    assert ms(batch=1) < ms(batch=8)


def test_no_anchor_means_a_wider_interval_and_says_so():
    shape = Shape(4, 384, 12, 1536, 128)
    anchored = model_for(get_profile("jetson-agx-xavier"), "int8").predict(shape)
    unanchored = model_for(get_profile("jetson-nano"), "fp16").predict(shape)
    width = [p["latency_hi_ms"] / p["latency_lo_ms"] for p in (anchored, unanchored)]
    assert width[1] > width[0]
    assert anchored["source"] == "calibrated" and "MLPerf BERT-99 anchors of" in anchored["label"]
    assert unanchored["source"] == "assumed"
    assert "no anchor for this family (jetson-maxwell); eta assumed =" in unanchored["label"]
    h100 = model_for(get_profile("h100"), "int8").predict(shape)
    assert h100["source"] == "assumed" and "no anchor for this family" in h100["label"]
    fp16 = model_for(get_profile("jetson-orin-nx-16gb"), "fp16").predict(shape)
    assert fp16["source"] == "assumed" and "no FP16 anchor" in fp16["label"]


def test_the_orin_nanos_take_the_ampere_eta_with_their_own_peak():
    nano, agx = get_profile("jetson-orin-nano-4gb"), get_profile("jetson-agx-orin-64gb")
    assert family_of(nano) is family_of(agx) and family_of(nano).name == "jetson-ampere"
    a, b = model_for(nano, "int8"), model_for(agx, "int8")
    assert a.eta.value == b.eta.value and a.peak.ops < b.peak.ops
    assert "jetson-agx-orin-64gb, jetson-orin-nx-16gb" in a.predict(SMALLEST)["label"]


@pytest.mark.parametrize("name", ["jetson-agx-orin-64gb", "jetson-orin-nx-16gb",
                                  "jetson-agx-xavier", "jetson-xavier-nx"])  # fmt: skip
def test_the_model_reproduces_its_own_anchors_within_the_family_fit(name):
    profile = get_profile(name)
    assert profile.latency_anchors, "the MLPerf anchors ship with the profile"
    model = model_for(profile, "int8")
    for anchor in profile.latency_anchors:
        p = model.predict(anchor_shape(anchor))
        assert abs(p["latency_ms"] / anchor.latency_ms - 1) <= model.eta.work_band
        assert p["latency_lo_ms"] <= anchor.latency_ms <= p["latency_hi_ms"]
        assert anchor.source.startswith("S32") and anchor.percentile == 90


def test_cross_device_check_covers_both_families_both_ways():
    rows = cross_device_check()
    pairs = {(r["calibrated_on"], r["predicted"]) for r in rows}
    assert pairs == {
        ("jetson-agx-orin-64gb", "jetson-orin-nx-16gb"),
        ("jetson-orin-nx-16gb", "jetson-agx-orin-64gb"),
        ("jetson-agx-xavier", "jetson-xavier-nx"),
        ("jetson-xavier-nx", "jetson-agx-xavier"),
    }
    for r in rows:
        assert set(r) >= {"calibrated_on", "predicted", "predicted_ms", "published_ms", "error"}
        assert r["error"] == pytest.approx(r["predicted_ms"] / r["published_ms"] - 1, abs=1e-3)
        assert abs(r["error"]) <= 0.15, r  # the goal the priors were fixed before measuring


@pytest.mark.parametrize("name", DERIVED)
def test_the_budgets_bite(name):
    """The smallest subnet fits tight; the teacher fits neither tight nor balanced (judged, as the
    search judges a prediction, on the interval's upper end)."""
    profile = get_profile(name)
    model = model_for(profile, budget_precision(profile))
    tight, balanced, relaxed = (profile.budget(b) for b in ("tight", "balanced", "relaxed"))
    small, teacher = model.predict(SMALLEST), model.predict(TEACHER_SHAPE)
    assert small["latency_hi_ms"] <= tight.latency_ms and small["memory_hi_mb"] <= tight.memory_mb
    assert teacher["latency_hi_ms"] > balanced.latency_ms > tight.latency_ms
    assert teacher["latency_hi_ms"] <= relaxed.latency_ms
    assert max(b.memory_mb for b in profile.budgets) < profile.hardware.memory.size_gb * 1024


@pytest.mark.parametrize("name", DERIVED)
def test_the_shipped_budgets_are_the_ones_the_model_implies(name):
    profile = get_profile(name)
    shipped = {b.name: (b.latency_ms, b.memory_mb) for b in profile.budgets}
    assert shipped == {
        b["name"]: (b["latency_ms"], b["memory_mb"]) for b in suggest_budgets(profile)
    }
    assert "calibrated latency model" in profile.budget_rationale


def test_round_up_to_two_significant_figures():
    assert [latency.round_up(x) for x in (0.4123, 0.38, 19.74, 128.7, 5.0)] == [
        0.42, 0.38, 20, 130, 5.0
    ]  # fmt: skip


def test_the_raspberry_pi_4_has_a_bandwidth_with_its_caveat():
    memory = get_profile("raspberry-pi-4").hardware.memory
    assert memory.bandwidth_gbps == 12.8 and "UNCONFIRMED" in memory.sources["bandwidth_gbps"]


# -- the CPU family's calibration ----------------------------------------------------------------
def _rows(report: dict, key: str) -> list[dict]:
    fields = ("layers", "hidden", "heads", "ffn", "seq", "batch", "vocab")
    return [
        {"shape": Shape(*(r[f] for f in fields)), "latency_ms": r["latency_ms"],
         "memory_mb": r["memory_mb"]}
        for r in report[key]
    ]  # fmt: skip


@pytest.mark.skipif(not (RESULTS / "profile.json").is_file(), reason="no host measurements")
def test_the_cpu_constants_are_rederived_from_the_host_measurements():
    report = json.loads((RESULTS / "profile.json").read_text())
    cal = latency.CPU_CALIBRATION
    assert report["date"] == cal.date and report["n_calibration"] == cal.n
    peak = cal.cores * cal.ghz * 1e9 * 32  # AVX-512: 32 FP32 FLOPs/cycle (latency._cpu_peak)
    check = host_check(_rows(report, "calibration"), _rows(report, "holdout"), peak)
    fit = check["fit"]
    assert fit["eta"] == pytest.approx(cal.eta["fp32"], abs=0.005)
    assert fit["per_layer_ms"] == pytest.approx(cal.per_layer_ms, abs=5e-4)
    assert fit["t0_ms"] == pytest.approx(cal.t0_ms, abs=1e-3)
    assert fit["base_mb"] == pytest.approx(cal.memory_base_mb, abs=0.05)
    assert check["latency"]["p90"] == pytest.approx(cal.holdout_p90, abs=0.005)
    assert check["memory"]["p90"] == pytest.approx(cal.memory_holdout_p90, abs=0.005)
    assert len(check["latency"]["errors"]) == report["n_holdout"]
    # the INT8 eta: the teacher's dynamic-INT8 p50 on the same host, against the x4 peak
    export = json.loads((RESULTS / "export.json").read_text())
    (row,) = [r for r in export["rows"] if (r["model"], r["runtime"], r["format"], r["batch"])
              == ("teacher", "onnxruntime", "int8-dynamic", 1)]  # fmt: skip
    left = row["p50_ms"] - fit["t0_ms"] - TEACHER_SHAPE.layers * fit["per_layer_ms"]
    assert TEACHER_SHAPE.flops() / (left / 1e3 * 4 * peak) == pytest.approx(
        cal.eta["int8"], abs=0.005
    )


def test_fit_cpu_latency_recovers_a_known_law():
    peak = 100e9
    rows = [{"shape": s, "latency_ms": 0.05 + 0.02 * s.layers + s.flops() / (0.6 * peak) * 1e3}
            for s in (Shape(layers, h, h // 64, 4 * h, seq) for layers in (1, 3, 6)
                      for h in (128, 256, 384) for seq in (16, 128))]  # fmt: skip
    fit = fit_cpu_latency(rows, peak)
    assert fit["eta"] == pytest.approx(0.6, rel=1e-6)
    assert (fit["t0_ms"], fit["per_layer_ms"]) == pytest.approx((0.05, 0.02), rel=1e-6)


# -- the profile schema ----------------------------------------------------------------------------
def _anchored_variant(tmp_path, old: str, new: str) -> Path:
    text = (builtin_profiles_dir() / "jetson-xavier-nx.yaml").read_text()
    assert old in text
    path = tmp_path / "jetson-xavier-nx.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    source: S32 (inference_results_v1.1", "    source: S99 (inference_results_v1.1",
         "latency_anchors[0].source: cites S99, which 'references' does not define"),
        ("    precision: int8\n    percentile: 90\n", "    precision: int3\n    percentile: 90\n",
         "latency_anchors[0].precision: expected one of"),
        ("    latency_ms: 46.41\n", "    latency_ms: 0\n",
         "latency_anchors[0].latency_ms: must be"),
        ("    heads: 16\n", "    heads: 15\n", "hidden 1024 is not a multiple of heads 15"),
    ],
)  # fmt: skip
def test_anchor_schema_errors_name_the_key(tmp_path, old, new, expected):
    with pytest.raises(ConfigError) as info:
        load_profile_file(_anchored_variant(tmp_path, old, new))
    assert expected in str(info.value)


# -- the CLI ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_profile_predict_runs_for_every_profile(name, tmp_path, capsys):
    args = ["profile", "--predict", "L3:H384:A12:F1536", "--device", name, "--predictors",
            str(tmp_path)]  # fmt: skip
    assert main([*args, "--precision", budget_precision(get_profile(name))]) == 0
    out = capsys.readouterr().out
    assert f"on {name}: p90 " in out and "peak memory" in out and "[predicted (" in out
    assert main([*args, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert KEYS <= set(row) and row["latency_lo_ms"] <= row["latency_ms"] <= row["latency_hi_ms"]


def test_an_uncalibrated_host_uses_the_cpu_family(tmp_path, capsys):
    args = ["profile", "--predict", "L2:H128:A2:F512", "--device", "host", "--json"]
    assert main([*args, "--predictors", str(tmp_path)]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["source"] == "calibrated" and "CPU family calibrated on 48 shapes" in row["label"]
    assert "the profile has no clock" in row["assumed"]
