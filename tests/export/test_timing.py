"""toolchain/export/timing.py: a float model timed as the graph its precision ships in."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from toolchain.export.onnx import session
from toolchain.export.timing import SHIPPED_FORMAT, timing_onnx
from toolchain.models.loading import load_model

# operators that tell each shipped graph apart: INT8 Q/DQ quantizes the activations of every
# quantized Linear, MatMulNBits replaces them; fp16 casts
SIGNATURE = {
    "fp32": lambda ops: "MatMul" in ops and "QuantizeLinear" not in ops,
    "fp16": lambda ops: "MatMul" in ops and "QuantizeLinear" not in ops,
    "int8-qdq": lambda ops: ops["QuantizeLinear"] >= 6 and "MatMulNBits" not in ops,
    "int4": lambda ops: ops["MatMulNBits"] >= 6 and "QuantizeLinear" not in ops,
}


@pytest.mark.parametrize("precision", ("fp32", "fp16", "int8", "int4", "int2"))
def test_each_precision_is_timed_as_the_graph_it_ships_in(tiny_bert_dir, tmp_path, precision):
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    folder = tmp_path / "candidate"
    path, fmt = timing_onnx(adapter, folder, precision)
    assert fmt == SHIPPED_FORMAT[precision] and path == folder / "model.onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx"]  # nothing else to bundle
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    key = "int4" if fmt == "nbits" else fmt
    assert SIGNATURE[key](ops), (precision, dict(ops))
    if fmt == "nbits":
        bits = {
            a.i for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"
            for a in n.attribute if a.name == "bits"
        }  # fmt: skip
        assert bits == {int(precision[3:])}
    sess = session(path)
    feeds = {i.name: np.ones((2, 8), dtype=np.int64) for i in sess.get_inputs()}
    logits = sess.run(None, feeds)[0]
    assert logits.shape == (2, 2) and np.isfinite(logits).all()


def test_an_unknown_precision_is_refused(tiny_bert_dir, tmp_path):
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    with pytest.raises(ValueError, match="unknown precision 'int3'"):
        timing_onnx(adapter, tmp_path, "int3")


def test_calibration_shapes_are_measured_as_the_precision_ships(tmp_path):
    from toolchain.devices.predict import Shape
    from toolchain.profile.calibrate import measure_shapes

    small = dict(hidden=64, heads=2, vocab=2000)
    shapes = [
        Shape(layers=1, ffn=128, seq=16, batch=1, **small),
        Shape(layers=2, ffn=256, seq=32, batch=2, **small),
    ]
    rows = measure_shapes(
        shapes, workdir=tmp_path, precision="int8", warmup=1, iterations=3, rounds=1
    )
    assert [r["shape"] for r in rows] == shapes and all(r["latency_ms"] > 0 for r in rows)
    files = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx")
    assert files == ["L1H64A2F128V2000-int8.onnx", "L2H64A2F256V2000-int8.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no temporary folder left
    ops = {n.op_type for n in onnx.load(str(tmp_path / files[0])).graph.node}
    assert "QuantizeLinear" in ops
