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


class TorchRunner:
    """PyTorch eager (no_grad), for comparison with the exported runtimes."""

    def __init__(self, model_dir: Path, *, threads: int | None = None, device: str = "cpu"):
        import torch
        import transformers

        from toolchain.export.onnx import head_of
        from toolchain.models.loading import load_model

        self.name = "pytorch"
        if threads:
            torch.set_num_threads(threads)
        config = transformers.AutoConfig.from_pretrained(str(model_dir))
        self.model = load_model(str(model_dir), head=head_of(config)).model.eval().to(device)
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


def runner_for(target: Path, runtime: str, *, threads: int | None = None):
    """The runner for ``target`` (an ONNX file, a bundle folder, a TensorRT engine or a model
    directory) on ``runtime``."""
    if runtime not in RUNTIMES:
        raise ProfileError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "tensorrt":
        from toolchain.export.tensorrt import availability

        ok, why = availability()
        if not ok:
            raise ProfileError(why)
        raise ProfileError("TensorRT engine timing is not implemented yet on this machine type")
    if runtime == "pytorch":
        if not (target / "config.json").is_file():
            raise ProfileError(f"pytorch runs a model directory; {target} is not one")
        return TorchRunner(target, threads=threads)
    onnx = onnx_of(target)
    return OrtRunner(onnx, threads=threads, cuda=runtime == "onnxruntime-cuda")


def onnx_of(target: Path) -> Path:
    """The ONNX file of a target: itself, a bundle's model.onnx, or an export folder's."""
    if target.is_file() and target.suffix == ".onnx":
        return target
    if target.is_dir() and (target / "manifest.json").is_file():
        from toolchain.bundle.manifest import verify

        return target / verify(target)["runtime"]["model"]
    if target.is_dir() and (target / "model.onnx").is_file():
        return target / "model.onnx"
    raise ProfileError(
        f"{target}: not an ONNX file, bundle or export folder (a model directory runs with "
        "--runtime pytorch)"
    )
