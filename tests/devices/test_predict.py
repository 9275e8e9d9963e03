"""Predictors: the roofline equals a hand calculation; fitting recovers a known law and carries
its residuals as an interval; predictor_for prefers a fitted predictor and keeps its keys."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from toolchain.devices.predict import (
    DEFAULT_REL_P90,
    P90_OVER_P50,
    FittedPredictor,
    Shape,
    features,
    mape,
    predictor_for,
    roofline,
)
from toolchain.devices.profiles import get_profile

PREDICTION_KEYS = {
    "latency_ms", "latency_lo_ms", "latency_hi_ms", "memory_mb", "memory_hi_mb", "percentile",
    "label", "source",
}  # fmt: skip


def test_shape_costs_by_hand():
    s = Shape(layers=2, hidden=64, heads=4, ffn=256, seq=10, batch=3)
    tokens = 30
    assert s.gemm_flops() == 2 * 2 * tokens * (4 * 64 * 64 + 2 * 64 * 256)
    assert s.attention_flops() == 2 * 2 * 2 * 3 * 100 * 64
    assert s.weights() == 2 * (4 * 64 * 64 + 2 * 64 * 256)


def test_roofline_for_the_orin_nano_equals_a_hand_calculation():
    profile = get_profile("jetson-orin-nano-8gb")  # 20 dense INT8 TOPS, 68 GB/s
    s = Shape(layers=6, hidden=384, heads=12, ffn=1536, seq=128, batch=1)
    flops = 2 * 6 * 128 * (4 * 384**2 + 2 * 384 * 1536) + 2 * 6 * 2 * 128**2 * 384
    weights = 6 * (4 * 384**2 + 2 * 384 * 1536)
    acts = 4 * 6 * (128 * (4 * 384 + 1536) + 12 * 128**2)
    compute_ms = 1000 * flops / 20e12
    memory_ms = 1000 * (weights * 1 + acts) / 68e9
    r = roofline(profile, s, "int8")
    assert r["latency_ms"] == pytest.approx(max(compute_ms, memory_ms), rel=1e-3)
    assert r["bound"] == ("compute" if compute_ms > memory_ms else "memory")
    assert r["label"] == "predicted (roofline) for jetson-orin-nano-8gb"
    assert "20" in r["assumed"] and "68" in r["assumed"]
    fp16 = roofline(profile, s, "fp16")  # 10.2 dense FP16 TFLOPS, 2 bytes per weight
    assert fp16["latency_ms"] >= r["latency_ms"]
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        roofline(profile, s, "int3")


def _shapes(n: int, seed: int) -> list[Shape]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        h = rng.choice((64, 128, 256, 384))
        out.append(
            Shape(
                layers=rng.randint(1, 6),
                hidden=h,
                heads=h // rng.choice((64, 32)) or 1,
                ffn=4 * h,
                seq=rng.choice((16, 32, 64, 128)),
                batch=rng.choice((1, 2, 4, 8)),
            )
        )
    return out


def test_fit_recovers_a_known_law(tmp_path):
    lat_true = [0.3, 0.05, 2.0, 5.0, 0.01, 0.4, 0.2, 0.03]
    mem_true = [40.0, 1.2, 1.5]
    rows = []
    for s in _shapes(40, 0):
        lat = sum(c * f for c, f in zip(lat_true, features(s, "latency"), strict=True))
        mem = sum(c * f for c, f in zip(mem_true, features(s, "memory"), strict=True))
        rows.append({"shape": s, "latency_ms": lat, "memory_mb": mem})
    p = FittedPredictor.fit(rows, device="synthetic", runtime="fake")
    assert p.latency_coef == pytest.approx(lat_true, rel=1e-6)
    assert p.memory_coef == pytest.approx(mem_true, rel=1e-6)
    held = _shapes(20, 1)
    truth = [
        sum(c * f for c, f in zip(lat_true, features(s, "latency"), strict=True)) for s in held
    ]
    assert mape([p.predict(s)["p50_ms"] for s in held], truth) < 0.01  # % (4-decimal output)
    out = p.predict(held[0])
    assert out["latency_ms"] == pytest.approx(out["p50_ms"] * P90_OVER_P50, rel=1e-3)
    assert out["latency_lo_ms"] <= out["latency_ms"] <= out["latency_hi_ms"]
    assert PREDICTION_KEYS <= set(out) and out["source"] == "fitted" and out["percentile"] == 90
    back = FittedPredictor.load(p.save(tmp_path / "synthetic.json"))
    assert back.predict(held[0]) == out
    assert "fitted on 40 shapes measured on synthetic" in out["label"]
    with pytest.raises(ValueError, match="need at least 10 measured shapes"):
        FittedPredictor.fit(rows[:3], device="x", runtime="y")
    old = FittedPredictor("old", "onnxruntime", "fp32", lat_true[:7], mem_true, 40)
    with pytest.raises(ValueError, match="another cost model .* --calibrate 48"):
        old.predict(held[0])


def test_the_fitted_interval_is_the_p90_of_its_residuals(tmp_path):
    rows = []
    for i, s in enumerate(_shapes(40, 2)):
        noise = 1 + 0.1 * ((i % 5) - 2) / 2  # -10 % .. +10 %
        lat = (0.2 + 0.1 * s.layers + 3.0 * s.gemm_flops() / 1e9) * noise
        rows.append({"shape": s, "latency_ms": lat, "memory_mb": 60 + s.layers * noise})
    p = FittedPredictor.fit(rows, device="noisy", runtime="fake")
    assert 0.02 < p.latency_rel_p90 < 0.2 and p.memory_rel_p90 is not None
    out = p.predict(rows[0]["shape"])
    assert out["latency_hi_ms"] == pytest.approx(
        out["latency_ms"] * (1 + p.latency_rel_p90), rel=1e-3
    )
    assert out["memory_hi_mb"] >= out["memory_mb"]
    # a file saved before residuals were stored loads with the stated default
    old = {k: v for k, v in json.loads(p.save(tmp_path / "noisy.json").read_text()).items()
           if not k.endswith("_rel_p90")}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(old))
    legacy = FittedPredictor.load(tmp_path / "old.json").predict(rows[0]["shape"])
    assert legacy["latency_hi_ms"] == pytest.approx(
        legacy["latency_ms"] * (1 + DEFAULT_REL_P90), rel=1e-3
    )
    assert "assumed: no residuals stored" in legacy["label"]


def test_a_fitted_predictor_has_priority_and_is_scaled_to_another_precision(tmp_path):
    lat = [1.0, 1.5] + [0.0] * 6
    FittedPredictor("x86-64-host", "onnxruntime", "fp32", lat, [60.0, 1.0, 1.0], 48).save(
        tmp_path / "x86-64-host.json"
    )
    # the host's CPU features are this machine's: fixed here, so the test does not depend on
    # whether it runs on a CPU with int8 dot products (AVX512-VNNI) or without (AVX2 only)
    live = get_profile("host")
    cpu = live.hardware.cpu
    base = tuple(f for f in cpu.features if "vnni" not in f)

    def with_features(features):
        hardware = dataclasses.replace(
            live.hardware, cpu=dataclasses.replace(cpu, features=features)
        )
        return dataclasses.replace(live, hardware=hardware)  # fmt: skip

    host, plain = with_features(base + ("avx512_vnni",)), with_features(base)
    shape = Shape(layers=2, hidden=128, heads=2, ffn=512, seq=128)
    fp32 = predictor_for(host, tmp_path, "fp32")(shape)
    assert fp32["source"] == "fitted" and fp32["p50_ms"] == pytest.approx(4.0)
    int8 = predictor_for(host, tmp_path, "int8")(shape)
    assert PREDICTION_KEYS <= set(int8) and int8["latency_ms"] < fp32["latency_ms"]
    assert "fp32->int8 ratio" in int8["label"]
    # without int8 dot products the calibrated model credits INT8 with no faster arithmetic
    no_dot = predictor_for(plain, tmp_path, "int8")(shape)
    assert "fp32->int8 ratio" in no_dot["label"] and no_dot["latency_ms"] > int8["latency_ms"]
    calibrated = predictor_for(host, tmp_path / "none", "fp32")(shape)
    assert calibrated["source"] == "calibrated" and "CPU family" in calibrated["label"]
