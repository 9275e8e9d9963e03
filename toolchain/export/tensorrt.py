"""TensorRT engines from an exported ONNX model, where ``tensorrt`` imports (Jetson, GPU hosts).

The engine is built from the Q/DQ (or float) ONNX with FP16 and INT8 allowed, one optimisation
profile covering the dynamic batch and sequence, and a timing cache kept beside it so rebuilds
are fast. Graphs holding edgec's INT2-INT8 custom ops need the plugin library of the kernels
(``plugin_libs``). Where tensorrt is absent, :func:`availability` says so and :func:`build_engine`
raises a plain error: no figure is ever produced for an engine that was not built.

Example::

    ok, why = availability()
    if ok:
        build_engine("model.onnx", "engine.plan", max_batch=32, max_seq=128)
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

from toolchain.errors import ExportError  # not export.onnx: a device may have no torch

log = logging.getLogger(__name__)


def availability() -> tuple[bool, str]:
    """``(True, version)`` when tensorrt imports, else ``(False, the reason in words)``."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return False, (
            f"TensorRT is not installed here ({e}); it ships with JetPack on Jetson and as the "
            "`tensorrt` wheel on NVIDIA GPU hosts: build the engine there"
        )
    return True, trt.__version__


def load_plugins(plugin_libs, error: type[Exception] = ExportError):
    """Load plugin libraries (edgec's INT2-INT8 kernels) and TensorRT's own; returns a logger.

    Raises:
        ``error``: a library that does not load, naming it.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    for lib in plugin_libs:
        try:
            ctypes.CDLL(str(lib))
        except OSError as e:
            raise error(f"cannot load the TensorRT plugin library {lib}: {e}") from None
    trt.init_libnvinfer_plugins(logger, "")
    return logger


def for_tensorrt(onnx_path: str | Path, dst: str | Path) -> list[str] | None:
    """Write the TensorRT-bound copy of an export holding ONNX Runtime's low-bit ops.

    * ``MatMulNBits``: B, ``(N, k_blocks, blob)`` uint8, is stored as an int32 *view* of the same
      bytes ``(N, k_blocks, blob / 4)``. TensorRT's ONNX parser widens a UINT8 initializer to one
      INT32 per byte (4x the engine's weight bytes); edgec's plugin (kernels/tensorrt/) reads the
      view in place. ONNX Runtime's MatMulNBits takes uint8 only, so this is a separate file.
    * ``GatherBlockQuantized`` (quantized embedding tables): TensorRT has no importer for it and
      edgec no plugin, so the table is dequantized to fp16 (a plain Gather, then a Cast to the
      graph's float32).

    Returns:
        ``None`` (nothing written) when the graph has neither op, else what was changed, in words.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from toolchain.export.lowbit import _drop_unused_initializers, _replace, _save

    model = onnx.load(str(onnx_path))
    inits = {i.name: i for i in model.graph.initializer}
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    gbq = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    if not nbits and not gbq:
        return None
    for node in nbits:
        b = numpy_helper.to_array(inits[node.input[1]])
        if b.dtype != np.uint8 or b.ndim != 3 or b.shape[-1] % 4:
            raise ExportError(
                f"{node.name}: B must be (N, k_blocks, blob) uint8 with blob a multiple of 4, got "
                f"{b.dtype} {b.shape}"
            )
        words = np.ascontiguousarray(b).view("<i4")
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(words, node.input[1]))
    replacements = {}
    for node in gbq:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("gather_axis", 0) != 0 or attrs.get("quantize_axis", 1) != 1:
            raise ExportError(f"{node.name}: only gather_axis=0, quantize_axis=1 is supported")
        table = _dequantize_table(
            numpy_helper.to_array(inits[node.input[0]]),
            numpy_helper.to_array(inits[node.input[2]]),
            bits=attrs.get("bits", 4),
            block_size=attrs["block_size"],
        )
        name = f"{node.name}.fp16_table"
        model.graph.initializer.append(numpy_helper.from_array(table.astype(np.float16), name))
        half = f"{node.output[0]}.fp16"
        replacements[node.output[0]] = [
            helper.make_node("Gather", [name, node.input[1]], [half], axis=0),
            helper.make_node("Cast", [half], [node.output[0]], to=TensorProto.FLOAT),
        ]
    _replace(model, replacements)
    _drop_unused_initializers(model)
    dst = Path(dst)
    tmp = _save(model, dst.with_name(dst.name + ".tmp"))
    tmp.replace(dst)
    notes = []
    if nbits:
        notes.append(
            f"{len(nbits)} MatMulNBits node(s) with B as an int32 view of the packed bytes "
            "(needs libedgec_trt_plugin.so)"
        )
    if gbq:
        notes.append(
            f"{len(gbq)} quantized embedding table(s) dequantized to fp16 (TensorRT has no "
            "GatherBlockQuantized)"
        )
    return notes


def _dequantize_table(data, scales, *, bits: int, block_size: int):
    """A GatherBlockQuantized table (N, K * bits / 8) uint8 + scales (N, k_blocks) -> float32."""
    import numpy as np
    import torch

    from toolchain.lowbit import reference as lb

    n, k = data.shape[0], data.shape[1] * 8 // bits
    packed = torch.from_numpy(np.array(data)).reshape(n, k // block_size, -1)
    return lb.dequantize(
        packed, torch.from_numpy(scales.astype(np.float32)), bits=bits, k=k, block_size=block_size
    ).numpy()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    max_batch: int = 32,
    max_seq: int = 128,
    opt_batch: int = 1,
    fp16: bool = True,
    int8: bool = True,
    plugin_libs: tuple[str, ...] = (),
    workspace_mb: int = 1024,
) -> dict:
    """Build and write a serialized engine (temp file, then rename).

    Returns:
        ``{"engine", "bytes", "tensorrt", "profile"}``.

    Raises:
        ExportError: tensorrt missing, a plugin library that does not load, a parse error (with
            the parser's messages) or a failed build.
    """
    ok, why = availability()
    if not ok:
        raise ExportError(why)
    import tensorrt as trt

    logger = load_plugins(plugin_libs, ExportError)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    shapes = {"min": (1, 1), "opt": (opt_batch, max_seq), "max": (max_batch, max_seq)}
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_path = Path(engine_path).with_suffix(".timing-cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    engine_path = Path(engine_path)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "engine": str(engine_path),
        "bytes": engine_path.stat().st_size,
        "tensorrt": trt.__version__,
        "profile": {k: list(v) for k, v in shapes.items()},
    }
