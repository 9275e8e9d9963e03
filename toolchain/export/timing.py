"""A float model as the ONNX graph its precision ships in, for timing only.

A device's latency depends on the graph it runs (which operators, at which widths), not on the
values of the weights or the quantization steps. The build ships a quantized model as INT8 Q/DQ
(8-bit activations) or MatMulNBits (weight-only), yet the calibration shapes and the search's
candidates are plain float models. Timing them as fp32, or as ONNX Runtime's dynamic INT8, left
the host predictor off by up to 2x for the shipped INT8 Q/DQ bundles (a 4-layer hidden-192 CoLA
subnet: 1.85 ms predicted, 3.70 ms measured p50 as shipped). Here each is quantized with
round-to-nearest steps from one batch of its tokenizer's text (LSQ's training only moves
values) and exported through the same passes as the export stage, so what is timed is the graph
the device will run. These graphs are for timing, never for accuracy.

Example::

    onnx, fmt = timing_onnx(adapter, folder, "int8")  # fmt == "int8-qdq"
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

# the export format a model of each precision ships in (toolchain.export.device_format's rule:
# 8-bit activations -> INT8 Q/DQ, weight-only widths -> MatMulNBits)
SHIPPED_FORMAT = {
    "fp32": "fp32",
    "fp16": "fp16",
    "int8": "int8-qdq",
    "int4": "nbits",
    "int2": "nbits",
}
_WEIGHT_BITS = {"int8": 8, "int4": 4, "int2": 2}
_TEXT = ["a short example sentence for the quantization steps", "another one"]


def timing_onnx(adapter, folder: str | Path, precision: str) -> tuple[Path, str]:
    """``(folder/model.onnx, its format)``: ``adapter`` (a float encoder with its tokenizer)
    exported as the graph a model of ``precision`` ships in.

    Raises:
        ValueError: ``precision`` is not one of :data:`SHIPPED_FORMAT`.
    """
    from toolchain.export.lowbit import to_fp16, to_matmul_nbits, to_qdq_int8
    from toolchain.export.onnx import export_float, load_for_export

    if precision not in SHIPPED_FORMAT:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(SHIPPED_FORMAT)}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fmt, dst = SHIPPED_FORMAT[precision], folder / "model.onnx"
    if fmt == "fp32":
        return export_float(adapter, dst), fmt
    with tempfile.TemporaryDirectory(prefix="edgec-timing-") as tmp:  # only model.onnx stays
        if fmt == "fp16":
            return to_fp16(export_float(adapter, Path(tmp) / "float.onnx"), dst), fmt
        packed = _packed_rtn(adapter, Path(tmp) / "packed", precision)
        twin, _ = load_for_export(packed)
        float_onnx = export_float(twin, Path(tmp) / "float.onnx")
        if fmt == "int8-qdq":
            return to_qdq_int8(float_onnx, dst, packed), fmt
        return to_matmul_nbits(float_onnx, dst, packed, accuracy_level=4), fmt


def _packed_rtn(adapter, path: Path, precision: str) -> Path:
    """A packed checkpoint of ``adapter`` at ``precision`` with round-to-nearest steps (the
    quantize stage's default plan: every Linear but the head, embeddings in float)."""
    from toolchain.quantize.calibrate import rtn
    from toolchain.quantize.convert import save_quantized
    from toolchain.quantize.modules import plan_modules, quantize_modules

    quant = copy.deepcopy(adapter)
    plan = plan_modules(quant.model, weight_bits=_WEIGHT_BITS[precision])
    quantize_modules(quant.model, plan, act_bits=8 if precision == "int8" else None)
    batch = dict(quant.tokenizer(_TEXT, padding=True, return_tensors="pt"))
    rtn(quant.model, [batch])
    return save_quantized(quant, path)
