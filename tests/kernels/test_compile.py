"""The CUDA sources build without a GPU: nvcc compiles every kernel source for Jetson Orin
(sm_87) and Hopper (sm_90), and the torch binding passes a C++ syntax check against the installed
torch's headers. Skipped, with the reason, where nvcc or g++ is absent."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "kernels" / "csrc"
INCLUDE = REPO / "kernels" / "include"
ARCHS = ("87", "90")  # Jetson Orin, Hopper (the targets; setup.py adds the build GPU's)


def _nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found: the CUDA sources are compile-tested where a CUDA toolkit is")
    return nvcc


def _cuda_include(nvcc: str) -> Path | None:
    """The CUDA toolkit's include folder (nvcc may be a wrapper script outside the toolkit)."""
    import os

    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    homes.append(str(Path(nvcc).resolve().parent.parent))
    for home in filter(None, homes):
        if (Path(home) / "include" / "cuda_runtime.h").is_file():
            return Path(home) / "include"
    return None


def test_there_are_kernel_sources():
    assert sorted(p.name for p in CSRC.glob("*.cu")) == ["nbits.cu", "w8a8.cu"]


@pytest.mark.parametrize("source", sorted(p.name for p in CSRC.glob("*.cu")))
def test_every_kernel_source_compiles_for_orin_and_hopper(source, tmp_path):
    nvcc = _nvcc()
    cmd = [nvcc, "-std=c++17", "-O3", f"-I{INCLUDE}", "-c", str(CSRC / source)]
    for arch in ARCHS:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    out = tmp_path / (source + ".o")
    proc = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:  # the object holds code for every target, not only one
        dump = subprocess.run([cuobjdump, "--list-elf", str(out)], capture_output=True, text=True)
        assert all(f"sm_{a}" in dump.stdout for a in ARCHS), dump.stdout + dump.stderr


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["75", "80", "86", "89"])
def test_every_kernel_source_compiles_for_the_other_targets(arch, tmp_path):
    """Turing and the other Ampere/Ada parts (TORCH_CUDA_ARCH_LIST may name any of them); the
    compute-capability guards keep each path to the architectures that have it."""
    nvcc = _nvcc()
    for source in sorted(p.name for p in CSRC.glob("*.cu")):
        cmd = [nvcc, "-std=c++17", "-O3", f"-I{INCLUDE}", "-c", str(CSRC / source)]
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}", "-o", str(tmp_path / "k.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{source} sm_{arch}: {proc.stderr[-4000:]}"


def test_the_torch_binding_passes_a_syntax_check(tmp_path):
    import torch.utils.cpp_extension as ext

    gxx = shutil.which("g++")
    cuda_include = _cuda_include(_nvcc())
    if gxx is None or cuda_include is None:
        pytest.skip("g++ or the CUDA runtime headers are missing")
    includes = [*ext.include_paths(), sysconfig.get_paths()["include"], str(cuda_include)]
    # a CPU build of torch ships c10/cuda's headers but not the one CMake generates for CUDA
    # builds (it only sets an export macro); a stand-in lets the check run here
    generated = "c10/cuda/impl/cuda_cmake_macros.h"
    if not any((Path(i) / generated).is_file() for i in includes):
        (tmp_path / generated).parent.mkdir(parents=True)
        (tmp_path / generated).write_text("#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.append(str(tmp_path))
    cmd = [gxx, "-std=c++17", "-fsyntax-only", "-w", "-DTORCH_EXTENSION_NAME=edgec_kernels"]
    cmd += ["-DTORCH_API_INCLUDE_EXTENSION_H", f"-I{INCLUDE}", *(f"-I{i}" for i in includes)]
    proc = subprocess.run([*cmd, str(CSRC / "ops.cpp")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


# the instructions each path is built on, as the PTX for Jetson Orin spells them
PATHS = {
    "nbits.cu": (
        "wmma.mma.sync.aligned.row.col.m16n16k16.f32.f32",  # fp16 x fp16 -> fp32 tensor cores
        "wmma.mma.sync.aligned.row.col.m16n16k16.f32.bf16.bf16.f32",  # bf16
        "shfl.sync.bfly",  # the GEMV's warp reduction
    ),
    "w8a8.cu": (
        "wmma.mma.sync.aligned.row.col.m16n16k16.s32.s8.s8.s32",  # int8 tensor cores
        "dp4a.s32.s32",  # the fallback
    ),
}


@pytest.mark.parametrize("source", sorted(PATHS))
def test_the_gemm_paths_lower_to_tensor_core_and_dp4a_instructions(source, tmp_path):
    nvcc = _nvcc()
    ptx = tmp_path / (source + ".ptx")
    cmd = [nvcc, "-std=c++17", "-O3", f"-I{INCLUDE}", "-arch=compute_87", "-ptx"]
    proc = subprocess.run(
        [*cmd, str(CSRC / source), "-o", str(ptx)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = ptx.read_text()
    missing = [i for i in PATHS[source] if i not in text]
    assert not missing, f"{source}: no {missing} in its sm_87 PTX"


def test_no_kernel_spills_registers_to_local_memory(tmp_path):
    """ptxas's resource report for every kernel on sm_87 and sm_90: nothing spilled (a spill is a
    round trip to local memory inside the inner loop of a bandwidth-bound kernel)."""
    import re

    nvcc = _nvcc()
    reports = []
    for source in sorted(PATHS):
        cmd = [nvcc, "-std=c++17", "-O3", f"-I{INCLUDE}", "-c", "-Xptxas", "-v"]
        for arch in ARCHS:
            cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        out = tmp_path / (source + ".o")
        proc = subprocess.run(
            [*cmd, str(CSRC / source), "-o", str(out)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        reports.append(proc.stderr)
    text = "\n".join(reports)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    # every kernel, for both targets: nbits.cu 2 dtypes x 3 containers x (3 GEMV M buckets + the
    # GEMM), w8a8.cu its WMMA, dp4a and row-sum kernels
    assert len(spills) == len(ARCHS) * (2 * 3 * 4 + 3)
    assert all(a == "0" and b == "0" for a, b in spills), text[-4000:]
