"""Packaging for edgec: the `toolchain` package, the device profiles, the `edgec` command, and
(where a CUDA build of torch and nvcc are present) the `edgec_kernels` CUDA extension.

Install (CPU): ``pip install torch==2.13.0 && pip install -e ".[train,dev]" -c constraints.txt``;
on a device that only runs bundles: ``pip install ".[runtime]"`` (onnxruntime, numpy, tokenizers).
CUDA kernels: ``pip install --no-build-isolation -e ".[gpu]"`` with a CUDA torch and nvcc on PATH
(build isolation would hide the installed torch from this script).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
KERNEL_SOURCES = ("kernels/csrc/*.cu", "kernels/csrc/*.cpp")


def read_version() -> str:
    text = (HERE / "toolchain" / "version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def kernel_build_plan() -> tuple[list, dict, str]:
    """Decide whether to build `edgec_kernels`: ``(ext_modules, cmdclass, reason)``.

    The extension is built only with kernel sources in kernels/csrc, an importable CUDA build of
    torch and nvcc; otherwise ``reason`` says what is missing and nothing is built.
    """
    if os.environ.get("EDGEC_SKIP_KERNELS") == "1":
        return [], {}, "EDGEC_SKIP_KERNELS=1"
    sources = sorted(str(p.relative_to(HERE)) for pat in KERNEL_SOURCES for p in HERE.glob(pat))
    if not sources:
        return [], {}, "no kernel sources in kernels/csrc"
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        return (
            [],
            {},
            (
                "torch is not importable while building (install torch first and use "
                "pip install --no-build-isolation)"
            ),
        )
    if not torch.version.cuda:
        return [], {}, f"torch {torch.__version__} is a CPU build"
    nvcc = shutil.which("nvcc") or (
        cpp_extension.CUDA_HOME and Path(cpp_extension.CUDA_HOME, "bin", "nvcc").exists()
    )
    if not nvcc:
        return [], {}, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    # 8.7 = Jetson Orin; the build machine's own GPU is added when one is visible.
    archs = {"8.7"}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        archs.add(f"{major}.{minor}")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", ";".join(sorted(archs)))
    ext = cpp_extension.CUDAExtension(
        "edgec_kernels",
        sources,
        include_dirs=[str(HERE / "kernels" / "include")],
        extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-O3", "-std=c++17"]},
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension}, ""


# Compatible-release ranges (``~=X.Y``: X.Y or newer, below X+1), so edgec installs beside a
# user's own libraries; the exact versions it was tested with are in constraints.txt, which the
# README's install line applies (``-c constraints.txt``).

# A device's install, `pip install "edgec[runtime]"`: `edgec run`, `edgec bundle verify` and
# `edgec agent` need these and import nothing else (tests/test_setup.py checks it in a clean venv).
RUNTIME_REQUIRES = [
    "onnxruntime~=1.31",
    "numpy~=2.4",
    "tokenizers~=0.22",
]

# Everything else: training, search, export, reports (`pip install "edgec[train]"`).
TRAIN_REQUIRES = [
    "torch~=2.13",  # the README installs the CPU wheel 2.13.0 first
    "transformers~=4.57.6",  # optimum-onnx 0.1 needs transformers < 4.58
    "optimum~=2.1.0",
    "optimum-onnx~=0.1.0",
    "onnx~=1.23",
    "onnxscript~=0.7",
    "safetensors~=0.8",
    "pyyaml~=6.0",
    "tqdm~=4.70",
    "matplotlib~=3.11",
    "gguf~=0.19",  # transformers reads GGUF decoders (SmolLM2) through gguf + accelerate
    "accelerate~=1.15",
    "cryptography~=50.0",  # Ed25519 bundle signatures (edgec keygen / bundle sign / --trust)
    "datasketch~=2.0",  # MinHash-LSH near-duplicate detection in data cleaning
]

EXTRAS = {
    "runtime": RUNTIME_REQUIRES,
    "train": TRAIN_REQUIRES,
    # ruff stays pinned: another release formats and lints differently
    "dev": ["pytest~=9.2", "ruff==0.17.6", "import-linter~=2.17", "hypothesis~=6.170"],
    # CUDA execution provider for ONNX Runtime; it replaces the CPU `onnxruntime` wheel
    # (`pip uninstall onnxruntime` first: both install the same module). ninja builds the kernels.
    "gpu": ["onnxruntime-gpu~=1.31", "ninja~=1.13"],
    # On Jetson, TensorRT comes with JetPack (apt); elsewhere NVIDIA's pip wheels, which download
    # from NVIDIA's own index at install time.
    "tensorrt": ["tensorrt-cu12~=11.4"],
}


def main() -> None:
    ext_modules, cmdclass, reason = kernel_build_plan()
    if reason:
        print(f"edgec: skipping the edgec_kernels CUDA extension: {reason}", file=sys.stderr)
    setup(
        name="edgec",
        version=read_version(),
        description="Compress transformer language models for edge devices and ship measured "
        "bundles (distillation, LSQ quantization, NAS, ONNX/TensorRT export, profiling)",
        long_description=(HERE / "README.md").read_text(encoding="utf-8"),
        long_description_content_type="text/markdown",
        python_requires=">=3.10",
        packages=find_packages(include=["toolchain", "toolchain.*"])
        + ["toolchain.device_profiles"],
        # profiles/ (data, at the top of the repo) is installed as toolchain/device_profiles/.
        package_dir={"toolchain.device_profiles": "profiles"},
        package_data={"toolchain.device_profiles": ["*.yaml"]},
        install_requires=RUNTIME_REQUIRES,
        extras_require=EXTRAS,
        entry_points={"console_scripts": ["edgec = toolchain.cli.main:main"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        license="Apache-2.0",
    )


if __name__ == "__main__":
    main()
