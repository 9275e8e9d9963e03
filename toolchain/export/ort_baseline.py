"""The ONNX Runtime baseline: export the float model to ONNX, quantize its MatMul weights with
ONNX Runtime's own ``MatMulNBitsQuantizer`` (round-to-nearest, symmetric, block-wise; 2, 4 or
8 bits; activations stay float), and score the result in an ONNX Runtime session.

It is what a user gets from ONNX Runtime alone, and what KDLSQ is measured against.

Example::

    export_float(model, "float.onnx")            # toolchain.export.onnx
    quantize_matmul_nbits("float.onnx", "w4.onnx", bits=4, block_size=32)
    logits = ort_logits("w4.onnx", spec, encoded, pad_id=0)
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolchain.errors import EdgecError
from toolchain.export.onnx import IR_VERSION

log = logging.getLogger(__name__)

ORT_BITS = (2, 4, 8)


def quantize_matmul_nbits(src: str | Path, dst: str | Path, *, bits: int, block_size: int) -> Path:
    """Quantize every MatMul weight of ``src`` with ONNX Runtime's MatMulNBitsQuantizer."""
    if bits not in ORT_BITS:
        raise EdgecError(f"ONNX Runtime's MatMulNBits runs {ORT_BITS} bits only, not {bits}")
    import onnx

    logging.disable(logging.INFO)  # the quantizer logs every node at INFO
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        algo = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, bits=bits)
        q = MatMulNBitsQuantizer(
            onnx.load(str(src)),
            bits=bits,
            block_size=block_size,
            is_symmetric=True,
            algo_config=algo,
        )
        q.process()
    finally:
        logging.disable(logging.NOTSET)
    model = q.model.model
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.save(model, str(dst))
    nodes = sum(n.op_type == "MatMulNBits" for n in model.graph.node)
    if not nodes:
        raise EdgecError(f"{src}: ONNX Runtime quantized no MatMul to {bits} bits")
    log.info("MatMulNBits %d-bit: %d MatMul weights quantized", bits, nodes)
    return Path(dst)


def ort_logits(path: str | Path, encoded: list, *, pad_id: int, batch_size: int = 64) -> list:
    """Per-example logits of an exported classifier in an ONNX Runtime CPU session."""
    from toolchain.data.encode import batches
    from toolchain.export.onnx import onnx_logits, session

    sess = session(path)
    out: list = [None] * len(encoded)
    for idx, batch in batches(encoded, batch_size, pad_id=pad_id):
        for i, row in zip(idx, onnx_logits(sess, batch), strict=True):
            out[i] = row
    return out
