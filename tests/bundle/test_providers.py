"""Execution providers: GPU bundles list TensorRT and CUDA with the CPU as fallback; `edgec run
--provider` picks them, and one this onnxruntime lacks is a clear error naming the package."""

from __future__ import annotations

import pytest

from toolchain.bundle.build import providers_for
from toolchain.bundle.manifest import BundleError
from toolchain.bundle.runtime import BundleRunner, choose_providers
from toolchain.devices.profiles import get_profile

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


def test_gpu_profiles_list_tensorrt_and_cuda_with_the_cpu_last():
    assert providers_for(get_profile("jetson")) == [TRT, CUDA, CPU]
    assert providers_for(get_profile("h100")) == [TRT, CUDA, CPU]
    assert providers_for(get_profile("host")) == [CPU]
    assert providers_for(get_profile("rpi5")) == [CPU]


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        (None, [CPU], [CPU]),  # a Jetson bundle on a CPU-only onnxruntime: the CPU fallback
        (None, [CUDA, CPU], [CUDA, CPU]),
        (None, [TRT, CUDA, CPU], [TRT, CUDA, CPU]),
        (["cuda"], [TRT, CUDA, CPU], [CUDA, CPU]),
        (["cpu"], [TRT, CUDA, CPU], [CPU]),
        ([TRT, "cuda"], [TRT, CUDA, CPU], [TRT, CUDA, CPU]),
    ],
)
def test_choose_providers(requested, available, expected):
    assert choose_providers([TRT, CUDA, CPU], requested, available) == expected


def test_a_missing_provider_names_the_package():
    with pytest.raises(
        BundleError, match="CUDAExecutionProvider is not available.*onnxruntime-gpu"
    ):
        choose_providers([TRT, CUDA, CPU], ["cuda"], [CPU])


def test_a_jetson_bundle_lists_gpu_providers_and_runs_here_on_the_cpu(tiny_bundle, tmp_path):
    from toolchain import api

    folder = tiny_bundle[0]
    onnx_dir = folder.parent / "onnx"
    spec = _toy_spec(folder.parent)
    manifest = api.bundle(onnx_dir, tmp_path / "toy-orin.edgec", device="jetson", task=spec)
    assert manifest["runtime"]["providers"] == [TRT, CUDA, CPU]
    runner = BundleRunner(tmp_path / "toy-orin.edgec")
    assert runner.session.get_providers() == [CPU]
    assert runner.predict([{"text": "good movie"}])[0]["label"] in ("neg", "pos")


def test_edgec_run_provider(edgec, tiny_bundle):
    import onnxruntime as ort

    folder = str(tiny_bundle[0])
    ok = edgec("run", folder, "--text", "good", "--provider", "cpu")
    assert ok.returncode == 0, ok.stderr
    assert "execution providers CPUExecutionProvider" in ok.stderr
    if CUDA not in ort.get_available_providers():
        bad = edgec("run", folder, "--text", "good", "--provider", "cuda")
        assert bad.returncode == 1
        assert "CUDAExecutionProvider is not available" in bad.stderr
        assert "Traceback" not in bad.stderr


def _toy_spec(folder):
    from dataclasses import replace

    from toy import TOY_SPEC

    return replace(TOY_SPEC, files={"dev": str(folder / "dev.tsv")})
