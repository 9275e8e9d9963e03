"""setup.py: the CUDA-kernel hook skips with a reason; the wheel ships the device profiles."""

from __future__ import annotations

import json
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


def _constraints() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    return {name.lower(): version for name, version in pairs}


def test_libraries_ask_for_ranges_and_the_tested_versions_fit_them(setup_module):
    from packaging.requirements import Requirement

    pinned = _constraints()
    requirements = [
        Requirement(r)
        for group in (setup_module["RUNTIME_REQUIRES"], *setup_module["EXTRAS"].values())
        for r in group
    ]
    for req in requirements:
        ops = {spec.operator for spec in req.specifier}
        if req.name == "ruff":  # a formatter: another release formats differently
            assert ops == {"=="}
            continue
        assert "==" not in ops, f"{req}: an exact pin clashes with users' environments"
        if req.name.lower() in pinned:  # the tested version is inside the range
            assert req.specifier.contains(pinned[req.name.lower()]), (req, pinned[req.name])
    names = {r.name.lower() for r in requirements}
    assert pinned["torch"] == "2.13.0"
    assert not Requirement(
        next(r for r in setup_module["EXTRAS"]["train"] if r.startswith("transformers"))
    ).specifier.contains("4.58.0")  # optimum-onnx 0.1 needs transformers < 4.58
    assert set(pinned) - {"tensorrt-cu12"} <= names | {"tensorrt-cu12"}
    assert set(setup_module["EXTRAS"]) == {"runtime", "train", "dev", "gpu", "tensorrt"}


def test_the_runtime_extra_is_the_slim_device_install(setup_module):
    runtime = {r.split("~")[0].split("=")[0] for r in setup_module["RUNTIME_REQUIRES"]}
    assert runtime == {"onnxruntime", "numpy", "tokenizers"}
    assert setup_module["EXTRAS"]["runtime"] == setup_module["RUNTIME_REQUIRES"]


def test_the_readme_installs_the_tested_versions():
    readme = (REPO / "README.md").read_text()
    assert '-e ".[train,dev]" -c constraints.txt' in readme


def _copy_repo(dst: Path) -> Path:
    """The source tree without git, venvs, build outputs or runs (so the copy stays clean)."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "runs"
    )
    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


def test_wheel_contains_profiles_and_entry_point(tmp_path):
    # Build from a copy so the source tree gets no build/ or egg-info folders.
    src = _copy_repo(tmp_path / "src")
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


@pytest.mark.slow
def test_runtime_extra_in_a_clean_venv_runs_bundles_verifies_and_serves(tmp_path, tiny_bundle):
    """`pip install ".[runtime]"` into a fresh venv (no torch, transformers, pyyaml or
    cryptography there): `edgec run`, `edgec bundle verify` and `edgec agent` work, the agent
    measures a bundle sent from here, and a training verb says which extra it needs."""
    import os
    import time
    import venv

    from toolchain.profile.agent import profile_remote

    src = _copy_repo(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    install = subprocess.run(
        [py, "-m", "pip", "install", "-q", f"{src}[runtime]", "-c", str(REPO / "constraints.txt")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    frozen = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    installed = {line.split("==")[0].split(" @ ")[0].lower() for line in frozen.splitlines()}
    assert {"onnxruntime", "numpy", "tokenizers", "edgec"} <= installed
    # (pyyaml comes with tokenizers, through huggingface_hub; it is not imported, see below)
    assert not installed & {
        "torch",
        "transformers",
        "cryptography",
        "optimum",
        "onnx",
        "datasketch",
    }

    bundle = str(tiny_bundle[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    edgec = str(env_dir / "bin" / "edgec")

    def run(*args):
        return subprocess.run(
            [edgec, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
        )

    out = run("run", bundle, "--text", "good movie")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["label"] in ("neg", "pos")
    out = run("bundle", "verify", bundle)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr
    # the third-party modules these verbs import: onnxruntime, numpy and tokenizers, nothing else
    probe = (
        "import sys\nfrom toolchain.cli.main import main\n"
        f"main(['run', {bundle!r}, '--text', 'good'])\nmain(['bundle', 'verify', {bundle!r}])\n"
        "import toolchain.cli.agent, toolchain.profile.agent\n"
        "top = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(sorted(m for m in top if not m.startswith('_')))\n"
    )
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    third_party = out.stdout.strip().splitlines()[-1]
    assert third_party == "['numpy', 'onnxruntime', 'tokenizers', 'toolchain']"
    out = run(
        "distill", "--teacher", "t", "-o", "x", "--task", "sst2", "--student-shape", "L2:H32:A4:F64"
    )
    assert out.returncode == 1 and 'pip install "edgec[train]"' in out.stderr

    token = tmp_path / "token"
    token.write_text("runtime-only-agent-token\n")
    token.chmod(0o600)
    agent = subprocess.Popen(
        [edgec, "agent", "--port", "0", "--token-file", str(token), "--device", "host"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        line = agent.stdout.readline()
        assert "listening on" in line and "as x86-64-host" in line, agent.stderr.read()
        url = "http://" + line.split("listening on ")[1].split(" as ")[0]
        request = {"shapes": [[1, 8]], "warmup": 1, "iterations": 3, "repeats": 1}
        report = profile_remote(
            tiny_bundle[0], url, token="runtime-only-agent-token", request=request
        )
        assert report["label"] == "measured on x86-64-host by edgec agent"
        assert report["results"][0]["p50_ms"] > 0
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        time.sleep(0.1)
