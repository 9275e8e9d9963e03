"""The precision a bundle says it ships is what its model.onnx holds, not what was trained."""

from __future__ import annotations

import pytest

from toolchain.bundle.build import shipped_precision, shipped_summary, trained_precision

QC = {
    "act_bits": 8,
    "modules": {
        "bert.encoder.layer.0.attention.self.query": {"kind": "linear", "bits": 4},
        "bert.encoder.layer.0.intermediate.dense": {"kind": "linear", "bits": 2},
        "bert.embeddings.word_embeddings": {"kind": "embedding", "bits": 2},
    },
}
Q = "bert.encoder.layer.0.attention.self.query"
FFN = "bert.encoder.layer.0.intermediate.dense"
EMB = "bert.embeddings.word_embeddings"


def test_a_float_export_of_a_quantized_model_ships_float():
    per_layer = shipped_precision("fp32", QC)
    assert per_layer == {"*": "fp32 (weights on the trained low-bit grid, activations float)"}
    assert shipped_summary("fp32", QC) == "fp32 (trained W2/4A8)"
    assert trained_precision(QC)[Q] == "W4A8"  # the trained precision is kept apart


def test_qdq_stores_low_bit_codes_in_int8():
    per_layer = shipped_precision("int8-qdq", QC)
    assert per_layer[Q] == "W8A8 (INT8 Q/DQ, 4-bit codes)"
    assert per_layer[EMB] == "W8 (INT8 table, 2-bit codes)"
    assert shipped_summary("int8-qdq", QC) == "W8A8 INT8 Q/DQ (W2/4A8 codes)"


@pytest.mark.parametrize(("level", "act"), [(4, "A8 in the kernel"), (0, "A float")])
def test_matmulnbits_keeps_the_widths(level, act):
    per_layer = shipped_precision("nbits", QC, level)
    assert per_layer[Q] == f"W4 {act} (MatMulNBits)" and per_layer[FFN] == f"W2 {act} (MatMulNBits)"
    assert per_layer[EMB] == "W4 (GatherBlockQuantized, 2-bit codes in 4)"
    assert shipped_summary("nbits", QC, level) == f"W2/4{'A8' if level else 'A-float'} MatMulNBits"


def test_float_models():
    assert shipped_precision("fp32", None) == {"*": "fp32"}
    assert shipped_precision("int8-dynamic", None) == {"*": "W8A8 (ONNX Runtime dynamic INT8)"}
    assert shipped_summary("fp16", None) == "fp16"
    assert shipped_summary("int8-dynamic", QC) == "W8A8 dynamic (ONNX Runtime)"
