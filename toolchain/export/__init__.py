"""Export to ONNX (fp32, fp16, INT8 dynamic and Q/DQ, MatMulNBits) with parity checks.

This file stays light (no torch): the CLI reads :data:`FORMATS` to build its parser.
"""

FORMATS = ("fp32", "fp16", "int8-dynamic", "int8-qdq", "nbits", "auto")
