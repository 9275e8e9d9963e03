"""Latency and peak-memory predictors for a transformer of a given shape on a device.

* :func:`roofline`: for a device with no measurements, an analytic estimate from the profile's
  facts: ``max(FLOPs / peak compute, bytes / memory bandwidth)``, labelled
  "predicted (roofline)" with the peak it assumed.
* :class:`FittedPredictor`: least squares on measured shapes (this host, or an agent's
  measurements of a real device), minimising *relative* error, stored per device as JSON.

Shapes are encoders (BERT-like): ``layers, hidden, heads, ffn, seq, batch`` and a precision.

Example::

    shape = Shape(layers=3, hidden=384, heads=12, ffn=1536, seq=128, batch=1)
    roofline(get_profile("jetson"), shape, "int8")["latency_ms"]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5, "int2": 0.25}
# FLOPs per cycle per core of one fused multiply-add pipe set, fp32; int8 dot products x4
_CPU_FP32_FLOPS_PER_CYCLE = (("avx512f", 32), ("avx2", 32), ("asimd", 16), ("neon", 16))


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    ffn: int
    seq: int
    batch: int = 1
    vocab: int = 30522

    def gemm_flops(self) -> float:
        """Dense projections: Q, K, V, O (4·H²) and the FFN (2·H·F), 2 FLOPs per MAC."""
        tokens = self.batch * self.seq
        return 2.0 * self.layers * tokens * (4 * self.hidden**2 + 2 * self.hidden * self.ffn)

    def attention_flops(self) -> float:
        """Scores and context: 2 · B · S² · H per layer, 2 FLOPs per MAC."""
        return 2.0 * self.layers * 2 * self.batch * self.seq**2 * self.hidden

    def flops(self) -> float:
        return self.gemm_flops() + self.attention_flops()

    def weights(self) -> int:
        return self.layers * (4 * self.hidden**2 + 2 * self.hidden * self.ffn)

    def activation_bytes(self) -> float:
        """Float32 activations written and read once per layer (hidden, FFN, scores)."""
        per_layer = self.batch * self.seq * (4 * self.hidden + self.ffn)
        per_layer += self.batch * self.heads * self.seq**2
        return 4.0 * self.layers * per_layer


def _peak_ops(profile, precision: str) -> tuple[float, str]:
    """(operations per second, what was assumed)."""
    gpu = profile.hardware.gpu
    if gpu is not None:
        if precision in ("int8", "int4", "int2") and gpu.int8_tops_dense:
            return gpu.int8_tops_dense * 1e12, f"GPU dense INT8 {gpu.int8_tops_dense} TOPS"
        if precision in ("fp16", "int8", "int4", "int2") and gpu.fp16_tflops_dense:
            return gpu.fp16_tflops_dense * 1e12, f"GPU dense FP16 {gpu.fp16_tflops_dense} TFLOPS"
        if gpu.fp32_tflops:
            return gpu.fp32_tflops * 1e12, f"GPU FP32 {gpu.fp32_tflops} TFLOPS"
    cpu = profile.hardware.cpu
    if cpu is None or not cpu.max_ghz:
        raise ValueError(f"{profile.name}: no peak compute in the profile (GPU TFLOPS or CPU GHz)")
    features = set(cpu.features) | {cpu.isa}
    per_cycle = next((f for k, f in _CPU_FP32_FLOPS_PER_CYCLE if k in features), 8)
    dot = {"avx512_vnni", "avx_vnni", "asimddp", "dotprod"} & features
    factor = 4 if precision != "fp32" and precision != "fp16" and dot else 1
    peak = cpu.cores * cpu.max_ghz * 1e9 * per_cycle * factor
    return peak, (
        f"CPU {cpu.cores} cores x {cpu.max_ghz} GHz x {per_cycle} FLOPs/cycle"
        + (f" x {factor} (int8 dot products)" if factor > 1 else "")
    )


def roofline(profile, shape: Shape, precision: str = "fp32") -> dict:
    """The analytic estimate for ``shape`` at ``precision`` on ``profile``'s device."""
    if precision not in BYTES_PER_WEIGHT:
        raise ValueError(f"unknown precision {precision!r}; expected {', '.join(BYTES_PER_WEIGHT)}")
    bandwidth = profile.hardware.memory.bandwidth_gbps
    if not bandwidth:
        raise ValueError(f"{profile.name}: the profile gives no memory bandwidth")
    peak, assumed = _peak_ops(profile, precision)
    moved = shape.weights() * BYTES_PER_WEIGHT[precision] + shape.activation_bytes()
    compute_s = shape.flops() / peak
    memory_s = moved / (bandwidth * 1e9)
    return {
        "latency_ms": round(1000 * max(compute_s, memory_s), 4),
        "bound": "compute" if compute_s >= memory_s else "memory",
        "flops": shape.flops(),
        "bytes": moved,
        "assumed": f"{assumed}; {bandwidth} GB/s",
        "label": f"predicted (roofline) for {profile.name}",
    }


# -- fitted ---------------------------------------------------------------------------------
LATENCY_TERMS = (
    "1",
    "layers",
    "gemm_gflops",
    "attention_gflops",
    "tokens_layers_k",
    "gemm_gflops_x_64/hidden",  # narrow GEMMs run further below peak
    "gemm_gflops_x_16/sqrt(tokens)",  # so do GEMMs over few tokens
    "softmax_melems",  # layers x batch x heads x seq^2: scores, softmax, per-head products
)
MEMORY_TERMS = ("1", "weights_mb", "activations_mb")


def features(shape: Shape, kind: str) -> list[float]:
    if kind == "latency":
        return [
            1.0,
            float(shape.layers),
            shape.gemm_flops() / 1e9,
            shape.attention_flops() / 1e9,
            shape.layers * shape.batch * shape.seq / 1e3,
            shape.gemm_flops() / 1e9 * 64 / shape.hidden,
            shape.gemm_flops() / 1e9 * 16 / (shape.batch * shape.seq) ** 0.5,
            shape.layers * shape.batch * shape.heads * shape.seq**2 / 1e6,
        ]
    params = shape.weights() + shape.vocab * shape.hidden  # the embedding table is resident
    return [1.0, params * 4 / 2**20, shape.activation_bytes() / 2**20]


@dataclass
class FittedPredictor:
    """``value = features(shape) · coef``, fitted to measurements of one device and runtime."""

    device: str
    runtime: str
    precision: str
    latency_coef: list[float]
    memory_coef: list[float]
    n: int

    @classmethod
    def fit(cls, rows: list[dict], *, device: str, runtime: str, precision: str = "fp32"):
        """``rows``: ``{"shape": Shape, "latency_ms": ..., "memory_mb": ...}`` per measurement."""
        import numpy as np

        if len(rows) < len(LATENCY_TERMS) + 2:
            raise ValueError(f"need at least {len(LATENCY_TERMS) + 2} measured shapes")

        def solve(kind: str, key: str) -> list[float]:
            x = np.array([features(r["shape"], kind) for r in rows])
            y = np.array([r[key] for r in rows], dtype=float)
            coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
            return [float(c) for c in coef]  # minimises the relative error

        return cls(
            device,
            runtime,
            precision,
            solve("latency", "latency_ms"),
            solve("memory", "memory_mb"),
            len(rows),
        )

    def predict(self, shape: Shape) -> dict:
        if len(self.latency_coef) != len(LATENCY_TERMS):
            raise ValueError(
                f"the predictor for {self.device} was fitted with another cost model "
                f"({len(self.latency_coef)} terms, this edgec has {len(LATENCY_TERMS)}): "
                f"re-run `edgec profile --device {self.device} --calibrate 48`"
            )
        lat = sum(c * f for c, f in zip(self.latency_coef, features(shape, "latency"), strict=True))
        mem = sum(c * f for c, f in zip(self.memory_coef, features(shape, "memory"), strict=True))
        return {
            "latency_ms": round(lat, 4),
            "memory_mb": round(mem, 2),
            "label": f"predicted (fitted on {self.n} shapes measured on {self.device})",
        }

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> FittedPredictor:
        return cls(**json.loads(Path(path).read_text()))


def predictor_for(profile, predictors_dir: Path | None, precision: str = "fp32"):
    """``predict(shape) -> {"latency_ms", "memory_mb", "label"}`` for ``profile``'s device: its
    fitted predictor (``predictors_dir/<device>.json``, from ``edgec profile --calibrate``) where
    one exists, else the roofline at ``precision`` (no memory figure: ``memory_mb`` None).

    A predictor fitted at another precision is scaled by the roofline's ratio between the two
    precisions where the profile has the facts for it, else used as is; the label says which.
    """
    fitted_path = Path(predictors_dir) / f"{profile.name}.json" if predictors_dir else None
    if fitted_path is None or not fitted_path.is_file():

        def by_roofline(shape: Shape) -> dict:
            return {**roofline(profile, shape, precision), "memory_mb": None}

        by_roofline(Shape(1, 64, 1, 64, 8))  # the profile has the facts, or ValueError now
        return by_roofline
    fitted = FittedPredictor.load(fitted_path)
    if fitted.precision == precision:
        return fitted.predict

    def scaled(shape: Shape) -> dict:
        out = fitted.predict(shape)
        try:
            ratio = (
                roofline(profile, shape, precision)["latency_ms"]
                / roofline(profile, shape, fitted.precision)["latency_ms"]
            )
        except ValueError:
            return {**out, "label": out["label"] + f", at {fitted.precision} (no {precision} fit)"}
        return {
            **out,
            "latency_ms": round(out["latency_ms"] * ratio, 4),
            "label": out["label"] + f", x roofline {fitted.precision}->{precision} ratio",
        }

    return scaled


def mape(predicted: list[float], measured: list[float]) -> float:
    """Mean absolute percentage error (%)."""
    pairs = list(zip(predicted, measured, strict=True))
    return 100 * sum(abs(p - m) / m for p, m in pairs) / len(pairs)
