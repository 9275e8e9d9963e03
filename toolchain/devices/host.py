"""Hardware and software facts of the running machine, for the host profile.

Read from ``/proc`` on Linux (model name, flags, memory) with portable fallbacks; nothing is
estimated: a fact that cannot be read (e.g. memory bandwidth) stays ``None``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from toolchain.devices.facts import HOST_SOURCE, CpuFacts, Hardware, MemoryFacts, SoftwareStack
from toolchain.version import dist_version

# ISA extensions that change which kernels are fast for transformer inference.
_INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",  # x86
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
    "bf16",  # arm
)


def _cpuinfo() -> dict[str, str]:
    """First processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def host_hardware() -> Hardware:
    """The running machine's CPU and memory facts (no GPU facts: the host profile is CPU)."""
    info = _cpuinfo()
    model = info.get("model name") or info.get("Model") or platform.processor() or "unknown CPU"
    flags = set((info.get("flags") or info.get("Features") or "").split())
    features = tuple(f for f in _INTERESTING_FLAGS if f in flags)
    cpu_src = f"{HOST_SOURCE} (/proc/cpuinfo, sched_getaffinity)"
    cpu = CpuFacts(
        model=model,
        cores=usable_cores(),
        isa=platform.machine() or "unknown",
        features=features,
        sources={k: cpu_src for k in ("model", "cores", "isa", "features")},
    )
    size = _memory_gb()
    mem = MemoryFacts(
        size_gb=size if size else 1.0,
        type="system RAM",
        sources={"size_gb": f"{HOST_SOURCE} (/proc/meminfo)", "type": HOST_SOURCE},
    )
    return Hardware(cpu=cpu, memory=mem)


def host_software() -> SoftwareStack:
    """Installed runtime versions, read from package metadata (nothing is imported)."""
    return SoftwareStack(
        name="this machine",
        source=f"{HOST_SOURCE} (platform, package metadata)",
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        onnxruntime=dist_version("onnxruntime") or dist_version("onnxruntime-gpu"),
        tensorrt=dist_version("tensorrt")
        or dist_version("tensorrt-cu12")
        or dist_version("tensorrt-cu13"),
    )
