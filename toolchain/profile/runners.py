"""Runners behind one interface: ``prepare(batch, seq)`` builds the inputs, ``run()`` makes one
call, ``sync()`` waits for the device. ONNX Runtime (CPU, or the CUDA execution provider where
present), TensorRT engines (where tensorrt imports), and PyTorch eager for comparison.

Example::

    runner = runner_for(Path("model.onnx"), "onnxruntime", threads=2)
    runner.prepare(batch=1, seq=128)
    stats = measure(runner.run, warmup=20, iterations=200, sync=runner.sync)
"""

from __future__ import annotations

from pathlib import Path

from toolchain.bundle.manifest import verify
from toolchain.errors import EdgecError

RUNTIMES = ("onnxruntime", "onnxruntime-cuda", "tensorrt", "pytorch")
TOKEN_ID = 1  # present in every vocabulary edgec meets


class ProfileError(EdgecError):
    """A target cannot be measured here (missing runtime, unreadable model, bad request)."""


class OrtRunner:
    """An ONNX Runtime session; inputs built from the graph's own input names."""

    def __init__(self, path: Path, *, threads: int | None = None, cuda: bool = False):
        import onnxruntime as ort

        self.name = "onnxruntime-cuda" if cuda else "onnxruntime"
        provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
        if provider not in ort.get_available_providers():
            raise ProfileError(
                f"{provider} is not available in this onnxruntime "
                f"({', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=[provider])
        except Exception as e:
            raise ProfileError(f"{path}: ONNX Runtime cannot load it ({e})") from None
        self.feeds: dict = {}

    def prepare(self, batch: int, seq: int) -> None:
        import numpy as np

        feeds = {}
        for inp in self.session.get_inputs():
            name = inp.name
            if name == "attention_mask":
                feeds[name] = np.ones((batch, seq), dtype=np.int64)
            elif name in ("input_ids", "token_type_ids"):
                value = TOKEN_ID if name == "input_ids" else 0
                feeds[name] = np.full((batch, seq), value, dtype=np.int64)
            elif name == "position_ids":
                feeds[name] = np.tile(np.arange(seq, dtype=np.int64), (batch, 1))
            elif name in ("word_ids", "mask"):  # a word-level tagger (CVT): seq words
                feeds[name] = np.full((batch, seq), 2 if name == "word_ids" else 1, np.int64)
            elif name == "char_ids":  # each word's bytes: 8 of them, a typical word
                width = inp.shape[2] if isinstance(inp.shape[2], int) else 16
                feeds[name] = np.zeros((batch, seq, width), dtype=np.int64)
                feeds[name][:, :, :8] = ord("a") + 1
            elif name.startswith("past_key_values"):  # prefill: an empty past
                dtype = np.float16 if "float16" in inp.type else np.float32
                feeds[name] = np.zeros((batch, inp.shape[1], 0, inp.shape[3]), dtype=dtype)
            else:
                raise ProfileError(f"do not know how to feed input {name!r} ({inp.type})")
        self.feeds = feeds

    def run(self) -> None:
        self.session.run(None, self.feeds)

    def sync(self) -> None:  # session.run returns when the outputs are on the host
        return None

    def device_memory_mb(self) -> float | None:
        return _cuda_used_mb() if self.name == "onnxruntime-cuda" else None


class TorchRunner:
    """PyTorch eager (no_grad), for comparison with the exported runtimes."""

    def __init__(self, model_dir: Path, *, threads: int | None = None, device: str = "cpu"):
        import torch

        from toolchain.export.onnx import head_of
        from toolchain.models.loading import read_config
        from toolchain.quantize.convert import load_any

        self.name = "pytorch"
        if threads:
            torch.set_num_threads(threads)
        head = head_of(read_config(model_dir))
        self.model = load_any(model_dir, head=head, device=device).model.eval()
        self.device = device
        self.inputs: dict = {}

    def prepare(self, batch: int, seq: int) -> None:
        import torch

        ids = torch.full((batch, seq), TOKEN_ID, dtype=torch.long, device=self.device)
        self.inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def run(self) -> None:
        import torch

        with torch.no_grad():
            self.model(**self.inputs)

    def sync(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def device_memory_mb(self) -> float | None:
        """Peak memory torch's allocator handed out on the GPU (MB); None on CPU."""
        import torch

        if not self.device.startswith("cuda"):
            return None
        return round(torch.cuda.max_memory_allocated() / 2**20, 2)


class CudaRuntime:
    """The few CUDA runtime calls a TensorRT engine needs (malloc, copy, stream, memory info),
    through ctypes on libcudart: the agent on a Jetson then needs nothing beyond tensorrt."""

    HOST_TO_DEVICE = 1

    def __init__(self):
        import ctypes
        import ctypes.util

        names = [ctypes.util.find_library("cudart"), "libcudart.so"]
        names += [f"libcudart.so.{v}" for v in (13, 12, 11)]
        for name in filter(None, names):
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise ProfileError("the CUDA runtime (libcudart) is not found; TensorRT needs it")
        self.ctypes = ctypes

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            self.lib.cudaGetErrorString.restype = self.ctypes.c_char_p
            raise ProfileError(f"CUDA {what} failed: {self.lib.cudaGetErrorString(code).decode()}")

    def malloc(self, nbytes: int) -> int:
        ptr = self.ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(self.ctypes.byref(ptr), max(nbytes, 1)), "cudaMalloc")
        return ptr.value

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(self.ctypes.c_void_p(ptr))

    def upload(self, ptr: int, array) -> None:
        c = self.ctypes
        code = self.lib.cudaMemcpy(
            c.c_void_p(ptr), c.c_void_p(array.ctypes.data), c.c_size_t(array.nbytes), 1
        )
        self._check(code, "cudaMemcpy")

    def stream(self) -> int:
        handle = self.ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(self.ctypes.byref(handle)), "cudaStreamCreate")
        return handle.value or 0

    def synchronize(self, stream: int) -> None:
        self._check(
            self.lib.cudaStreamSynchronize(self.ctypes.c_void_p(stream)), "cudaStreamSynchronize"
        )

    def used_mb(self) -> float:
        free, total = self.ctypes.c_size_t(), self.ctypes.c_size_t()
        code = self.lib.cudaMemGetInfo(self.ctypes.byref(free), self.ctypes.byref(total))
        self._check(code, "cudaMemGetInfo")
        return round((total.value - free.value) / 2**20, 2)


class TrtRunner:
    """A serialized TensorRT engine (``engine.plan``) run with ``execute_async_v3`` on its own
    CUDA stream; ``sync()`` synchronises that stream before the clock is read."""

    def __init__(self, path: Path, *, plugin_libs: tuple[str, ...] = ()):
        import tensorrt as trt

        from toolchain.export.tensorrt import load_plugins

        self.name = "tensorrt"
        self.cuda = CudaRuntime()
        logger = load_plugins(plugin_libs, ProfileError)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ProfileError(
                f"{path}: TensorRT cannot deserialize it (built by another TensorRT version or "
                "for another GPU? rebuild it on this device with `edgec export --tensorrt`)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.stream = self.cuda.stream()
        self.buffers: list[int] = []

    def _dtype(self, name: str):
        import numpy as np
        import tensorrt as trt

        return np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))

    def prepare(self, batch: int, seq: int) -> None:
        import numpy as np

        for ptr in self.buffers:
            self.cuda.free(ptr)
        self.buffers = []
        for name in self.inputs:
            if name == "position_ids":
                host = np.tile(np.arange(seq), (batch, 1))
            elif name in ("input_ids", "attention_mask", "token_type_ids"):
                fill = {"input_ids": TOKEN_ID, "attention_mask": 1, "token_type_ids": 0}[name]
                host = np.full((batch, seq), fill)
            else:
                raise ProfileError(f"do not know how to feed engine input {name!r}")
            host = np.ascontiguousarray(host, dtype=self._dtype(name))
            if not self.context.set_input_shape(name, host.shape):
                raise ProfileError(
                    f"the engine's optimisation profile does not cover batch {batch} x seq "
                    f"{seq} for {name!r}; rebuild it with larger maximum shapes"
                )
            ptr = self.cuda.malloc(host.nbytes)
            self.buffers.append(ptr)
            self.cuda.upload(ptr, host)
            self.context.set_tensor_address(name, ptr)
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * self._dtype(name).itemsize
            ptr = self.cuda.malloc(nbytes)
            self.buffers.append(ptr)
            self.context.set_tensor_address(name, ptr)

    def run(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise ProfileError("TensorRT failed to enqueue the engine (see its log)")

    def sync(self) -> None:
        self.cuda.synchronize(self.stream)

    def device_memory_mb(self) -> float | None:
        return self.cuda.used_mb()


def _cuda_used_mb() -> float | None:
    """Device memory in use on the current CUDA device (MB, as the driver counts it: every
    process's), or None where no CUDA runtime is found."""
    try:
        return CudaRuntime().used_mb()
    except ProfileError:
        return None


def runner_for(
    target: Path,
    runtime: str,
    *,
    threads: int | None = None,
    max_shape: tuple[int, int] = (32, 128),
):
    """The runner for ``target`` (an ONNX file, a bundle folder, a TensorRT engine or a model
    directory) on ``runtime``. With ``tensorrt``, an ONNX file or a bundle gets its engine built
    here first (the device's own TensorRT, shapes up to ``max_shape`` = (batch, seq))."""
    if runtime not in RUNTIMES:
        raise ProfileError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "tensorrt":
        from toolchain.export.tensorrt import availability

        ok, why = availability()
        if not ok:
            raise ProfileError(why)
        if _has_engine(target):
            return TrtRunner(engine_of(target))
        return _built_engine_runner(onnx_of(target), max_shape)
    if runtime == "pytorch":
        if not (target / "config.json").is_file():
            raise ProfileError(f"pytorch runs a model directory; {target} is not one")
        return TorchRunner(target, threads=threads)
    onnx = onnx_of(target)
    return OrtRunner(onnx, threads=threads, cuda=runtime == "onnxruntime-cuda")


def _has_engine(target: Path) -> bool:
    return (target.is_file() and target.suffix in (".plan", ".engine")) or (
        target.is_dir() and (target / "engine.plan").is_file()
    )


def _built_engine_runner(onnx: Path, max_shape: tuple[int, int]):
    """A TrtRunner over an engine built from ``onnx`` into a temporary folder (removed with the
    runner): how the agent measures a bundle on `tensorrt`, since engines are built on the device
    that runs them."""
    import tempfile

    from toolchain.errors import ExportError
    from toolchain.export.tensorrt import build_engine

    tmp = tempfile.TemporaryDirectory(prefix="edgec-trt-")
    batch, seq = max_shape
    try:
        build_engine(onnx, Path(tmp.name) / "engine.plan", max_batch=batch, max_seq=seq)
    except ExportError as e:
        tmp.cleanup()
        hint = ""
        if "MatMulNBits" in str(e) or "GatherBlockQuantized" in str(e):
            hint = (
                " (a MatMulNBits bundle runs on TensorRT only through edgec's plugin: measure it "
                "with onnxruntime-cuda, or bundle the INT8 Q/DQ export)"
            )
        raise ProfileError(f"{onnx}: no TensorRT engine could be built: {e}{hint}") from None
    runner = TrtRunner(Path(tmp.name) / "engine.plan")
    runner._engine_dir = tmp  # kept alive as long as the runner
    return runner


def engine_of(target: Path) -> Path:
    """The TensorRT engine of a target: itself (.plan / .engine) or an export folder's."""
    if target.is_file() and target.suffix in (".plan", ".engine"):
        return target
    if target.is_dir() and (target / "engine.plan").is_file():
        return target / "engine.plan"
    raise ProfileError(
        f"{target}: no TensorRT engine (a .plan/.engine file, or an export folder holding "
        "engine.plan from `edgec export --tensorrt`)"
    )


def onnx_of(target: Path) -> Path:
    """The ONNX file of a target: itself, a bundle's model.onnx, or an export folder's."""
    if target.is_file() and target.suffix == ".onnx":
        return target
    if target.is_dir() and (target / "manifest.json").is_file():
        return target / verify(target)["runtime"]["model"]
    if target.is_dir() and (target / "model.onnx").is_file():
        return target / "model.onnx"
    raise ProfileError(
        f"{target}: not an ONNX file, bundle or export folder (a model directory runs with "
        "--runtime pytorch)"
    )
