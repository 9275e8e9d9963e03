"""Low-bit ONNX graphs built from a packed checkpoint by rewriting its float export.

Nothing is re-quantized: the float export of a packed checkpoint holds, for every quantized
Linear, exactly ``codes * step`` (see :func:`toolchain.export.onnx.dequantize_modules`). Each
such weight is found in the graph by its content (a ``MatMul`` against ``W.T``, or a ``Gemm`` with
``transB=1`` against ``W``, or without it against ``W.T`` as GPT-2's Conv1D exports) and the
node is replaced:

* :func:`to_matmul_nbits`: ``com.microsoft::MatMulNBits`` fed the checkpoint's packed codes and
  the per-channel steps repeated per block (the layout of :mod:`toolchain.lowbit.reference`);
  activations stay float, or are quantized per block inside the kernel with
  ``accuracy_level=4``.
* :func:`to_qdq_int8`: explicit quantization in TensorRT's style: the input goes through
  ``QuantizeLinear``/``DequantizeLinear`` with the learned LSQ activation step (per tensor,
  symmetric), the weight is int8 codes with a per-channel ``DequantizeLinear``.

Example::

    to_matmul_nbits("float.onnx", "nbits.onnx", "runs/student-w4a8", accuracy_level=4)
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from toolchain.export.onnx import IR_VERSION, ExportError
from toolchain.lowbit import reference as lb

log = logging.getLogger(__name__)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _packed(packed_dir: Path):
    from safetensors.torch import load_file

    from toolchain.models.loading import load_errors
    from toolchain.quantize.convert import read_quantization_config

    qc = read_quantization_config(packed_dir)
    with load_errors(Path(packed_dir), "weights"):
        return qc, load_file(str(packed_dir / "model.safetensors"))


def _dequantized(qc: dict, tensors: dict, kind: str):
    """``(module name, float weight (N, K))`` of every quantized module of ``kind``: exactly the
    values the float twin of the checkpoint holds."""
    for name, e in qc["modules"].items():
        if e["kind"] == kind:
            w = lb.dequantize(
                tensors[f"{name}.qweight"],
                tensors[f"{name}.w_scale"],
                bits=e["bits"],
                k=e["shape"][1],
                block_size=qc["block_size"],
            )
            yield name, w.numpy()


def _linear_sites(model, qc: dict, tensors: dict) -> list[tuple]:
    """``(node, module name, weight initializer name, holds W.T)`` for every quantized Linear."""
    from onnx import numpy_helper

    by_digest: dict[str, str] = {}
    for name, w in _dequantized(qc, tensors, "linear"):
        by_digest[_digest(w)] = name  # Gemm with transB=1 holds W
        by_digest["T" + _digest(w.T)] = name  # MatMul holds W.T
    inits = {i.name: i for i in model.graph.initializer}
    sites = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in inits:
            continue
        array = numpy_helper.to_array(inits[node.input[1]])
        if node.op_type == "MatMul":
            name, transposed = by_digest.get("T" + _digest(array)), True
        else:
            attrs = {a.name: a for a in node.attribute}
            if attrs.get("transA") and attrs["transA"].i:
                continue
            trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
            key = _digest(array) if trans_b else "T" + _digest(array)
            name, transposed = by_digest.get(key), not trans_b
        if name is not None:
            sites.append((node, name, node.input[1], transposed))
    found = {s[1] for s in sites}
    missing = [n for n, e in qc["modules"].items() if e["kind"] == "linear" and n not in found]
    if missing:
        raise ExportError(
            f"the float graph has no MatMul/Gemm holding the quantized weights of {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}: export the packed checkpoint itself"
        )
    return sites


def _embedding_sites(model, qc: dict, tensors: dict) -> list[tuple]:
    """``(Gather node, module name)`` for every quantized embedding table found in the graph."""
    from onnx import numpy_helper

    by_digest = {_digest(w): name for name, w in _dequantized(qc, tensors, "embedding")}
    if not by_digest:
        return []
    inits = {i.name: i for i in model.graph.initializer}
    sites = []
    for node in model.graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type == "Gather" and axis == 0 and node.input[0] in inits:
            name = by_digest.get(_digest(numpy_helper.to_array(inits[node.input[0]])))
            if name is not None:
                sites.append((node, name))
    return sites


def _embedding_codes(e: dict, tensors: dict, name: str) -> np.ndarray:
    """Signed codes (N, K) int8 of a quantized table."""
    n, k = e["shape"]
    codes = lb.unpack(tensors[f"{name}.qweight"], bits=e["bits"], k=k)
    return lb.to_signed(codes, e["bits"]).numpy()


def _replace(model, replacements: dict[str, list]) -> None:
    """Swap nodes (keyed by their first output) for their replacements, in place, in order."""
    nodes = []
    for node in model.graph.node:
        nodes.extend(replacements.get(node.output[0], [node]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _drop_unused_initializers(model) -> None:
    used = {x for n in model.graph.node for x in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _gemm_tail(node, out: str, helper) -> list:
    """Gemm's bias, added after the replacement computed ``out`` (alpha = beta = 1 assumed)."""
    attrs = {a.name: a.f for a in node.attribute if a.name in ("alpha", "beta")}
    if any(abs(v - 1.0) > 1e-12 for v in attrs.values()):
        raise ExportError(f"{node.name}: Gemm with alpha/beta != 1 is not supported")
    if len(node.input) < 3 or not node.input[2]:
        return [helper.make_node("Identity", [out], [node.output[0]])]
    return [helper.make_node("Add", [out, node.input[2]], [node.output[0]])]


def _save(model, dst: Path) -> Path:
    import onnx

    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.save(model, str(dst))
    return dst


def to_matmul_nbits(
    float_onnx: str | Path,
    dst: str | Path,
    packed_dir: str | Path,
    *,
    accuracy_level: int = 0,
) -> Path:
    """Rewrite every quantized Linear of ``float_onnx`` as ``MatMulNBits`` (2, 4 or 8 bits)."""
    import onnx
    from onnx import helper, numpy_helper

    qc, tensors = _packed(Path(packed_dir))
    model = onnx.load(str(float_onnx))
    block = qc["block_size"]
    replacements = {}
    for node, name, _, _ in _linear_sites(model, qc, tensors):
        e = qc["modules"][name]
        n, k = e["shape"]
        b_name, s_name = f"{name}.qweight", f"{name}.scales"
        scales = lb.block_scales(tensors[f"{name}.w_scale"], k, block).reshape(-1)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(tensors[f"{name}.qweight"].numpy(), b_name),
                numpy_helper.from_array(scales.numpy().astype(np.float32), s_name),
            ]
        )
        gemm = node.op_type == "Gemm"
        out = f"{name}.nbits_out" if gemm else node.output[0]
        new = [
            helper.make_node(
                "MatMulNBits",
                [node.input[0], b_name, s_name],
                [out],
                name=f"{name}.nbits",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=e["container_bits"],
                block_size=block,
                accuracy_level=accuracy_level,
            )
        ]
        if gemm:
            new += _gemm_tail(node, out, helper)
        replacements[node.output[0]] = new
    for node, name in _embedding_sites(model, qc, tensors):
        replacements[node.output[0]] = _gather_block_quantized(model, node, name, qc, tensors)
    _replace(model, replacements)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _drop_unused_initializers(model)
    return _save(model, Path(dst))


def to_qdq_int8(float_onnx: str | Path, dst: str | Path, packed_dir: str | Path) -> Path:
    """Explicit INT8 Q/DQ: LSQ activation steps per tensor, int8 weight codes per channel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    qc, tensors = _packed(Path(packed_dir))
    if qc["act_bits"] not in (8, None):
        raise ExportError(
            f"int8-qdq needs 8-bit (or float) activations; this checkpoint has "
            f"{qc['act_bits']}-bit ones: export it as nbits"
        )
    model = onnx.load(str(float_onnx))
    replacements = {}
    for node, name, _, transposed in _linear_sites(model, qc, tensors):
        e = qc["modules"][name]
        n, k = e["shape"]
        codes = lb.to_signed(lb.unpack(tensors[f"{name}.qweight"], bits=e["bits"], k=k), e["bits"])
        w = codes.numpy().T if transposed else codes.numpy()  # MatMul: (K, N); Gemm: (N, K)
        inits = [
            numpy_helper.from_array(np.ascontiguousarray(w, dtype=np.int8), f"{name}.w_int8"),
            numpy_helper.from_array(tensors[f"{name}.w_scale"].numpy(), f"{name}.w_scale"),
        ]
        new = [
            helper.make_node(
                "DequantizeLinear",
                [f"{name}.w_int8", f"{name}.w_scale"],
                [f"{name}.w_dq"],
                axis=1 if transposed else 0,
            )
        ]
        x = node.input[0]
        if f"{name}.a_scale" in tensors:
            signed = e.get("act_signed", True)
            if not signed:  # TensorRT's explicit quantization takes symmetric int8 only
                log.warning("%s: unsigned activations become uint8 Q/DQ (not TensorRT-ready)", name)
            zp_type = TensorProto.INT8 if signed else TensorProto.UINT8
            a_scale = tensors[f"{name}.a_scale"].numpy().astype(np.float32).reshape(())
            inits += [
                numpy_helper.from_array(a_scale, f"{name}.a_scale"),
                helper.make_tensor(f"{name}.a_zp", zp_type, [], [0]),
            ]
            new += [
                helper.make_node(
                    "QuantizeLinear", [x, f"{name}.a_scale", f"{name}.a_zp"], [f"{name}.x_q"]
                ),
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}.x_q", f"{name}.a_scale", f"{name}.a_zp"],
                    [f"{name}.x_dq"],
                ),
            ]
            x = f"{name}.x_dq"
        model.graph.initializer.extend(inits)
        if node.op_type == "MatMul":
            new.append(helper.make_node("MatMul", [x, f"{name}.w_dq"], [node.output[0]]))
        else:
            out = f"{name}.mm_out"
            new.append(
                helper.make_node(
                    "Gemm",
                    [x, f"{name}.w_dq"],
                    [out],
                    transB=int(not transposed),
                    name=f"{name}.gemm",
                )
            )
            new += _gemm_tail(node, out, helper)
        replacements[node.output[0]] = new
    for node, name in _embedding_sites(model, qc, tensors):
        replacements[node.output[0]] = _gather_int8(model, node, name, qc, tensors)
    _replace(model, replacements)
    _drop_unused_initializers(model)
    return _save(model, Path(dst))


def _gather_block_quantized(model, node, name: str, qc: dict, tensors: dict) -> list:
    """``GatherBlockQuantized`` (4- or 8-bit data; 2-bit tables are stored as 4-bit)."""
    from onnx import helper, numpy_helper

    e = qc["modules"][name]
    n, k = e["shape"]
    block = qc["block_size"]
    if k % block:
        raise ExportError(f"{name}: embedding width {k} is not a multiple of block {block}")
    bits = max(4, e["container_bits"])
    codes = lb.to_unsigned(_as_tensor(_embedding_codes(e, tensors, name)), bits)
    data = lb.pack(codes, bits=bits, block_size=block).reshape(n, -1)
    scales = lb.block_scales(tensors[f"{name}.w_scale"], k, block)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(data.numpy(), f"{name}.qdata"),
            numpy_helper.from_array(scales.numpy().astype(np.float32), f"{name}.scales"),
        ]
    )
    return [
        helper.make_node(
            "GatherBlockQuantized",
            [f"{name}.qdata", node.input[1], f"{name}.scales"],
            [node.output[0]],
            name=f"{name}.gbq",
            domain="com.microsoft",
            gather_axis=0,
            quantize_axis=1,
            block_size=block,
            bits=bits,
        )
    ]


def _gather_int8(model, node, name: str, qc: dict, tensors: dict) -> list:
    """Standard ops: gather int8 rows and their steps, then scale (no whole-table dequant)."""
    from onnx import TensorProto, helper, numpy_helper

    e = qc["modules"][name]
    codes = _embedding_codes(e, tensors, name)
    steps = tensors[f"{name}.w_scale"].numpy().astype(np.float32).reshape(-1, 1)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(codes.astype(np.int8), f"{name}.w_int8"),
            numpy_helper.from_array(steps, f"{name}.w_scale"),
        ]
    )
    ids, out = node.input[1], node.output[0]
    return [
        helper.make_node("Gather", [f"{name}.w_int8", ids], [f"{name}.rows_q"]),
        helper.make_node("Cast", [f"{name}.rows_q"], [f"{name}.rows_f"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [f"{name}.w_scale", ids], [f"{name}.row_steps"]),
        helper.make_node("Mul", [f"{name}.rows_f", f"{name}.row_steps"], [out]),
    ]


def _as_tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(array)


def to_dynamic_int8(float_onnx: str | Path, dst: str | Path, *, op_types=None) -> Path:
    """ONNX Runtime's own dynamic INT8 quantization of the float graph (weights per channel);
    ``op_types``: only these operators (None: every one it supports)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kwargs = {"op_types_to_quantize": list(op_types)} if op_types else {}
    logging.disable(logging.WARNING)  # it asks for pre-processing on every call
    try:
        quantize_dynamic(str(float_onnx), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         **kwargs)  # fmt: skip
    except Exception as e:
        raise ExportError(f"onnxruntime quantize_dynamic failed: {e}") from e
    finally:
        logging.disable(logging.NOTSET)
    return Path(dst)


def to_fp16(float_onnx: str | Path, dst: str | Path) -> Path:
    """The float graph in float16 (inputs and outputs stay as they were)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(float_onnx)), keep_io_types=True)
    return _save(model, Path(dst))
