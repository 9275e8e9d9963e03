"""setup.py: the CUDA-kernel hook skips with a reason; the wheel ships the device profiles."""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup_module():
    # run_name != "__main__", so setup() is not called; we only get the module's functions.
    return runpy.run_path(str(REPO / "setup.py"), run_name="edgec_setup_probe")


def test_kernel_hook_skips_without_sources(setup_module, monkeypatch):
    monkeypatch.delenv("EDGEC_SKIP_KERNELS", raising=False)
    monkeypatch.setitem(setup_module["kernel_build_plan"].__globals__, "KERNEL_SOURCES", ())
    ext, cmdclass, reason = setup_module["kernel_build_plan"]()
    assert (ext, cmdclass, reason) == ([], {}, "no kernel sources in kernels/csrc")


def test_kernel_hook_env_switch(setup_module, monkeypatch):
    monkeypatch.setenv("EDGEC_SKIP_KERNELS", "1")
    assert setup_module["kernel_build_plan"]() == ([], {}, "EDGEC_SKIP_KERNELS=1")


def test_kernel_hook_skips_on_cpu_torch(setup_module, monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.version.cuda:
        pytest.skip("CUDA build of torch: the extension would be built")
    monkeypatch.delenv("EDGEC_SKIP_KERNELS", raising=False)
    fake = tmp_path / "kernels" / "csrc"
    fake.mkdir(parents=True)
    (fake / "k.cu").write_text("// kernel\n")
    monkeypatch.setitem(setup_module["kernel_build_plan"].__globals__, "HERE", tmp_path)
    ext, _, reason = setup_module["kernel_build_plan"]()
    assert ext == [] and reason == f"torch {torch.__version__} is a CPU build"


def test_pins_match_the_stack_reference(setup_module):
    pins = dict(r.split("==") for r in setup_module["RUNTIME_REQUIRES"])
    assert pins["torch"] == "2.13.0"
    assert pins["transformers"].startswith("4.57.")  # optimum-onnx needs < 4.58
    assert set(setup_module["EXTRAS"]) == {"dev", "gpu", "tensorrt"}


def test_wheel_contains_profiles_and_entry_point(tmp_path):
    # Build from a copy so the source tree gets no build/ or egg-info folders.
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "runs"
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("edgec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    profiles = {Path(n).stem for n in names if n.startswith("toolchain/device_profiles/")}
    assert len(profiles) == 11 and "jetson-orin-nano-8gb" in profiles
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert "edgec = toolchain.cli.main:main" in zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert not [n for n in names if n.startswith("tests/")]
