"""Hardware facts of a device profile, each with its source: CPU, GPU, memory, software stack.

The schema below :mod:`toolchain.devices.profiles` (which loads whole profiles) and
:mod:`toolchain.devices.host` (which reads these facts from the running machine), so that neither
imports the other's caller.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from toolchain import schema
from toolchain.errors import ConfigError
from toolchain.schema import check_range, require

HOST_SOURCE = "read from the running machine"


def _check_sources(section) -> None:
    """Every fact that has a value names its source; ``sources`` names no unknown fact."""
    # cpu/gpu/memory are sub-sections (of Hardware) and carry their own sources.
    skip = ("sources", "cpu", "gpu", "memory")
    fields = {f.name: f for f in dataclasses.fields(section) if f.name not in skip}
    facts = list(fields)
    for name, f in fields.items():
        value = getattr(section, name)
        if value in (None, (), "", f.default):
            continue  # nothing claimed
        if not section.sources.get(name, "").strip():
            raise ConfigError(f"fact '{name}' has no source: add sources.{name}", key="sources")
    for name in section.sources:
        if name not in facts:
            hint = schema.closest(name, facts)
            did = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"source given for unknown fact '{name}'{did}", key="sources")


@dataclass(frozen=True)
class CpuFacts:
    model: str
    cores: int
    isa: str
    max_ghz: float | None = None
    features: tuple[
        str, ...
    ] = ()  # ISA extensions that matter for inference (dotprod, avx512_vnni)
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        check_range(self, "cores", lo=1)
        _check_sources(self)


@dataclass(frozen=True)
class GpuFacts:
    model: str
    arch: str
    compute_capability: str
    cuda_cores: int | None = None
    tensor_cores: int | None = None
    max_mhz: float | None = None
    int8_tops_dense: float | None = None  # GPU only, dense (NVIDIA headlines are sparse GPU+DLA)
    fp16_tflops_dense: float | None = None
    fp32_tflops: float | None = None
    dla: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        require(
            bool(re.fullmatch(r"\d+\.\d+", self.compute_capability)),
            "compute_capability",
            f"expected MAJOR.MINOR such as 8.7, got {self.compute_capability!r}",
        )
        for key in ("int8_tops_dense", "fp16_tflops_dense", "fp32_tflops", "max_mhz"):
            check_range(self, key, lo=1e-6)
        _check_sources(self)

    @property
    def sm(self) -> str:
        """``sm_87`` for compute capability 8.7."""
        return "sm_" + self.compute_capability.replace(".", "")


@dataclass(frozen=True)
class MemoryFacts:
    size_gb: float
    type: str
    bandwidth_gbps: float | None = None
    shared_with_gpu: bool = False
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        check_range(self, "size_gb", lo=1e-3)
        check_range(self, "bandwidth_gbps", lo=1e-3)
        _check_sources(self)


@dataclass(frozen=True)
class Hardware:
    memory: MemoryFacts
    cpu: CpuFacts | None = None  # None where the host CPU varies (a datacenter GPU)
    gpu: GpuFacts | None = None
    power_modes: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        _check_sources(self)


@dataclass(frozen=True)
class SoftwareStack:
    name: str
    source: str
    os: str | None = None
    l4t: str | None = None
    cuda: str | None = None
    tensorrt: str | None = None
    cudnn: str | None = None
    python: str | None = None
    onnxruntime: str | None = None
