"""A one-node ONNX Runtime graph around ``com.microsoft::MatMulNBits``, fed packed buffers as-is:
the check that edgec's low-bit layout is the layout ONNX Runtime reads."""

from __future__ import annotations


def matmul_nbits_session(packed, scales, *, k: int, n: int, bits: int, block_size: int):
    """A session computing ``Y = A @ W.T`` for A (M, K) float32 from packed codes (N, k_blocks,
    blob) and per-block scales (N, k_blocks), default zero point."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node(
        "MatMulNBits",
        ["A", "B", "S"],
        ["Y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=block_size,
    )
    graph = helper.make_graph(
        [node],
        "nbits",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
        initializer=[
            numpy_helper.from_array(packed.numpy(), "B"),
            numpy_helper.from_array(scales.reshape(-1).numpy(), "S"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
