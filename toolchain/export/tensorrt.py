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

from toolchain.export.onnx import ExportError

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
