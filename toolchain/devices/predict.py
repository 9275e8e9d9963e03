"""Latency and peak-memory predictors for a transformer of a given shape on a device.

* :func:`predictor_for`: the one every caller uses. The device's fitted predictor where one was
  stored (``edgec profile --calibrate``), else the calibrated analytic model of
  :mod:`toolchain.devices.latency` (labelled calibrated or assumed); both return the same keys.
* :class:`FittedPredictor`: least squares on measured shapes (this host, or an agent's
  measurements of a real device), minimising *relative* error, stored per device as JSON, with
  the 90th percentile of its relative residuals as its interval.
* :func:`fit_cpu_latency`, :func:`fit_cpu_memory`, :func:`host_check`: how the CPU family's
  constants (``latency.CPU_CALIBRATION``) are fitted on measured rows, and its held-out check.
* :func:`roofline`: the bare bound ``max(FLOPs / peak, bytes / bandwidth)`` (100 % of peak, no
  launch overhead), kept for comparison; it decides no device's prediction.

Shapes are encoders (BERT-like): ``layers, hidden, heads, ffn, seq, batch, vocab`` and a
precision. :class:`Shape` is the cost model's unit, defined in :mod:`~toolchain.devices.latency`
(below this module) and re-exported here.

Example::

    shape = Shape(layers=3, hidden=384, heads=12, ffn=1536, seq=128, batch=1)
    predictor_for(get_profile("jetson"), None, "int8")(shape)["latency_hi_ms"]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from toolchain.devices.latency import (
    BYTES_PER_WEIGHT,
    CPU_CALIBRATION,
    MB,
    PERCENTILE,
    Shape,
    model_for,
    peak_ops,
)

__all__ = [
    "BYTES_PER_WEIGHT",
    "FittedPredictor",
    "Shape",
    "features",
    "fit_cpu_latency",
    "fit_cpu_memory",
    "host_check",
    "mape",
    "predictor_for",
    "roofline",
]
DEFAULT_REL_P90 = 0.25  # interval of a predictor saved before residuals were stored
P90_OVER_P50 = CPU_CALIBRATION.p90_over_p50  # fitted predictors are fitted on p50s


def _peak_ops(profile, precision: str) -> tuple[float, str]:
    """(operations per second, what was assumed): see :func:`latency.peak_ops`."""
    peak = peak_ops(profile, precision)
    return peak.ops, peak.text


def roofline(profile, shape: Shape, precision: str = "fp32") -> dict:
    """The bare analytic bound for ``shape`` at ``precision`` on ``profile``'s device (for
    comparison only: :func:`predictor_for` uses the calibrated model)."""
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
    """``p50 = features(shape) · coef``, fitted to measurements of one device and runtime; its
    predictions are at p90 (``p50 x P90_OVER_P50``) with ``latency_rel_p90`` as their interval."""

    device: str
    runtime: str
    precision: str
    latency_coef: list[float]
    memory_coef: list[float]
    n: int
    # 90th percentile of the fit's relative residuals; None in files saved before they were stored
    latency_rel_p90: float | None = None
    memory_rel_p90: float | None = None

    @classmethod
    def fit(cls, rows: list[dict], *, device: str, runtime: str, precision: str = "fp32"):
        """``rows``: ``{"shape": Shape, "latency_ms": ..., "memory_mb": ...}`` per measurement."""
        import numpy as np

        if len(rows) < len(LATENCY_TERMS) + 2:
            raise ValueError(f"need at least {len(LATENCY_TERMS) + 2} measured shapes")

        def solve(kind: str, key: str) -> tuple[list[float], float]:
            x = np.array([features(r["shape"], kind) for r in rows])
            y = np.array([r[key] for r in rows], dtype=float)
            coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
            residuals = np.abs(x @ coef / y - 1)  # minimised: the relative error
            return [float(c) for c in coef], round(float(np.percentile(residuals, 90)), 4)

        (lat, lat_p90), (mem, mem_p90) = (
            solve("latency", "latency_ms"),
            solve("memory", "memory_mb"),
        )
        return cls(device, runtime, precision, lat, mem, len(rows), lat_p90, mem_p90)

    def predict(self, shape: Shape) -> dict:
        """The keys of :func:`predictor_for`'s predictions, ``source`` "fitted" (and ``p50_ms``)."""
        if len(self.latency_coef) != len(LATENCY_TERMS):
            raise ValueError(
                f"the predictor for {self.device} was fitted with another cost model "
                f"({len(self.latency_coef)} terms, this edgec has {len(LATENCY_TERMS)}): "
                f"re-run `edgec profile --device {self.device} --calibrate 48`"
            )
        p50 = sum(c * f for c, f in zip(self.latency_coef, features(shape, "latency"), strict=True))
        mem = sum(c * f for c, f in zip(self.memory_coef, features(shape, "memory"), strict=True))
        r = DEFAULT_REL_P90 if self.latency_rel_p90 is None else self.latency_rel_p90
        r_mem = DEFAULT_REL_P90 if self.memory_rel_p90 is None else self.memory_rel_p90
        stored = self.latency_rel_p90 is not None
        band = f"+-{100 * r:.0f}%" + (
            " (p90 residual)" if stored else " assumed: no residuals stored"
        )
        lat = p50 * P90_OVER_P50
        return {
            "latency_ms": round(lat, 4),
            "latency_lo_ms": round(lat / (1 + r), 4),
            "latency_hi_ms": round(lat * (1 + r), 4),
            "p50_ms": round(p50, 4),
            "memory_mb": round(mem, 2),
            "memory_hi_mb": round(mem * (1 + r_mem), 2),
            "percentile": PERCENTILE,
            "source": "fitted",
            "label": f"predicted (fitted on {self.n} shapes measured on {self.device}; p90 = "
            f"{P90_OVER_P50:g} x fitted p50; {band})",
        }

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> FittedPredictor:
        """A saved predictor; one saved before residuals were stored gets DEFAULT_REL_P90."""
        return cls(**json.loads(Path(path).read_text()))


# -- the CPU family's constants, fitted on measured rows -----------------------------------
def _relative_lstsq(x, y):
    """Coefficients minimising the relative error, non-negative (a negative one is dropped)."""
    import numpy as np

    keep = list(range(x.shape[1]))
    while True:
        coef, *_ = np.linalg.lstsq(x[:, keep] / y[:, None], np.ones_like(y), rcond=None)
        if (coef >= 0).all():
            out = np.zeros(x.shape[1])
            out[keep] = coef
            return out
        keep.pop(int(np.argmin(coef)))


def fit_cpu_latency(rows: list[dict], peak_flops: float) -> dict:
    """``t0_ms``, ``per_layer_ms`` and ``eta`` of ``t = t0 + layers x c + FLOPs / (eta x peak)``
    on ``rows`` (``{"shape", "latency_ms"}``) measured on a CPU of ``peak_flops``."""
    import numpy as np

    x = np.array([[1.0, r["shape"].layers, r["shape"].flops() / peak_flops * 1e3] for r in rows])
    y = np.array([r["latency_ms"] for r in rows], dtype=float)
    t0, per_layer, inv_eta = _relative_lstsq(x, y)
    return {"t0_ms": float(t0), "per_layer_ms": float(per_layer), "eta": float(1 / inv_eta)}


def fit_cpu_memory(rows: list[dict], precision: str = "fp32") -> dict:
    """``base_mb``, ``weights`` and ``activations`` factors of the peak RSS on ``rows``."""
    import numpy as np

    x = np.array([_memory_terms(r["shape"], precision) for r in rows])
    y = np.array([r["memory_mb"] for r in rows], dtype=float)
    base, weights, activations = _relative_lstsq(x, y)
    return {"base_mb": float(base), "weights": float(weights), "activations": float(activations)}


def _memory_terms(shape: Shape, precision: str) -> list[float]:
    params = shape.weights() + shape.embedding()
    return [1.0, params * BYTES_PER_WEIGHT[precision] / MB, shape.activation_bytes() / MB]


def host_check(calibration: list[dict], holdout: list[dict], peak_flops: float) -> dict:
    """Held-out check of the CPU family: fit on ``calibration`` (rows as for
    :func:`fit_cpu_latency`, with ``memory_mb``), relative errors ``predicted / measured - 1`` on
    ``holdout``. Returns ``{"fit", "latency", "memory"}``, each error summary with ``mape``,
    ``p90`` (of the absolute errors), ``worst`` and the ``errors``."""
    import numpy as np

    fit = {**fit_cpu_latency(calibration, peak_flops), **fit_cpu_memory(calibration)}
    memory_coef = [fit["base_mb"], fit["weights"], fit["activations"]]

    def latency_ms(s: Shape) -> float:
        compute = s.flops() / peak_flops * 1e3 / fit["eta"]
        return fit["t0_ms"] + s.layers * fit["per_layer_ms"] + compute

    def summary(errors: list[float]) -> dict:
        e = np.abs(errors)
        return {
            "mape": float(e.mean()),
            "p90": float(np.percentile(e, 90)),
            "worst": float(errors[int(np.argmax(e))]),
            "errors": [round(float(v), 4) for v in errors],
        }

    lat = [latency_ms(r["shape"]) / r["latency_ms"] - 1 for r in holdout]
    mem = [np.dot(memory_coef, _memory_terms(r["shape"], "fp32")) / r["memory_mb"] - 1
           for r in holdout]  # fmt: skip
    return {"fit": fit, "latency": summary(lat), "memory": summary(mem)}


def predictor_for(profile, predictors_dir: Path | None, precision: str = "fp32"):
    """``predict(shape) -> dict`` for ``profile``'s device at ``precision``.

    The device's fitted predictor (``predictors_dir/<device>.json``, from ``edgec profile
    --calibrate``) where one exists, else the calibrated model (:func:`latency.model_for`). Every
    prediction has ``latency_ms`` (p90 point), ``latency_lo_ms``, ``latency_hi_ms``,
    ``memory_mb``, ``memory_hi_mb``, ``percentile`` (90), ``label`` and ``source`` ("fitted",
    "calibrated" or "assumed").

    A predictor fitted at another precision is scaled by the calibrated model's ratio between
    the two precisions (its memory shifted by the model's difference); the label says so.

    Raises:
        ValueError: no fitted predictor and the profile lacks the facts for the model.
    """
    fitted_path = Path(predictors_dir) / f"{profile.name}.json" if predictors_dir else None
    if fitted_path is None or not fitted_path.is_file():
        return model_for(profile, precision).predict
    fitted = FittedPredictor.load(fitted_path)
    if fitted.precision == precision:
        return fitted.predict
    try:
        models = model_for(profile, precision), model_for(profile, fitted.precision)
    except ValueError:
        models = None

    def scaled(shape: Shape) -> dict:
        out = fitted.predict(shape)
        if models is None:
            return {**out, "label": out["label"] + f", at {fitted.precision} (no {precision} fit)"}
        new, old = (m.predict(shape) for m in models)
        ratio, shift = new["latency_ms"] / old["latency_ms"], new["memory_mb"] - old["memory_mb"]
        lat = {
            k: round(out[k] * ratio, 4) for k in ("latency_ms", "latency_lo_ms", "latency_hi_ms")
        }
        mem = {k: round(out[k] + shift, 2) for k in ("memory_mb", "memory_hi_mb")}
        label = out["label"] + f", x the calibrated model's {fitted.precision}->{precision} ratio"
        return {**out, **lat, **mem, "label": label}

    return scaled


def mape(predicted: list[float], measured: list[float]) -> float:
    """Mean absolute percentage error (%)."""
    pairs = list(zip(predicted, measured, strict=True))
    return 100 * sum(abs(p - m) / m for p, m in pairs) / len(pairs)
