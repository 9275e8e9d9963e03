"""`import toolchain` (and `edgec --help`) stay light: no onnxruntime, tensorrt, torch or CUDA."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("onnxruntime", "tensorrt", "torch", "transformers", "onnx", "pycuda", "edgec_kernels")

PROBE = """
import json, os, sys
{setup}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize(
    "setup",
    [
        "import toolchain",
        "import toolchain, toolchain.cli.main, toolchain.config, toolchain.pipeline",
        "from toolchain.cli.main import build_parser; build_parser().format_help()",
        "from toolchain.cli.main import main; main(['devices', '--json'])",
        "from toolchain.cli.main import main; main(['build', '--device', 'jetson', "
        "'--print-recipe'])",
    ],
)
def test_light_imports(setup):
    code = PROBE.format(setup=setup, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{setup!r} imported {loaded}"


def test_cuda_never_initialised_by_import():
    # With CUDA_VISIBLE_DEVICES pointing nowhere, any CUDA init would fail or warn; none happens.
    code = "import toolchain, sys; print('ok')"
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok" and proc.stderr == ""
