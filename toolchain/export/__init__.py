"""Export to ONNX (fp32, fp16, INT8 dynamic and Q/DQ, MatMulNBits) with parity checks.

This file stays light (no torch): the CLI reads :data:`FORMATS` to build its parser.
"""

FORMATS = ("fp32", "fp16", "int8-dynamic", "int8-qdq", "nbits", "auto")


def device_format(*, host: bool, quantized: bool, act_bits: int | None) -> str:
    """The export format for a model and a device, when the user asked for none (``auto``):
    ``auto`` (every candidate timed) on this host; for another device, where nothing can be
    timed, the format its accelerator takes: explicit INT8 Q/DQ with the learned scales
    (TensorRT's input) for 8-bit activations, MatMulNBits for weight-only quantization, fp32 for
    a float model. The one rule for `edgec build` and `edgec bundle`."""
    if host:
        return "auto"
    if not quantized:
        return "fp32"
    return "int8-qdq" if act_bits == 8 else "nbits"
