"""The measurement protocol: warm-up, timed runs with the runtime's own synchronisation, repeats,
and the statistics every edgec latency figure is made of. Standard library only, so the on-device
agent and a torch-free bundle runner use the very same code.

Example::

    stats = measure(runner.run, warmup=20, iterations=200, repeats=5, sync=runner.sync, batch=1)
    stats["p50_ms"], stats["p50_spread_pct"]
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(
    times_ms: list[float], *, batch: int = 1, repeat_p50s: list[float] | None = None
) -> dict:
    """p50/p90/p99/mean/min/max (ms), throughput (items/s) and the spread of per-repeat p50s."""
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    out = {
        "p50_ms": round(percentile(ordered, 50), 4),
        "p90_ms": round(percentile(ordered, 90), 4),
        "p99_ms": round(percentile(ordered, 99), 4),
        "mean_ms": round(mean, 4),
        "min_ms": round(ordered[0], 4),
        "max_ms": round(ordered[-1], 4),
        "throughput_per_s": round(batch * 1000 / mean, 3) if mean > 0 else None,
        "n": len(ordered),
    }
    if repeat_p50s and len(repeat_p50s) > 1:
        mid = statistics.median(repeat_p50s)
        out["repeat_p50_ms"] = [round(v, 4) for v in repeat_p50s]
        out["p50_spread_pct"] = round(100 * (max(repeat_p50s) - min(repeat_p50s)) / mid, 3)
    return out


def measure(
    run: Callable[[], object],
    *,
    warmup: int,
    iterations: int,
    repeats: int = 1,
    batch: int = 1,
    sync: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Time ``run()``: per repeat, ``warmup`` untimed calls then ``iterations`` timed ones, each
    closed by ``sync()`` (a GPU runtime's synchronisation) before the clock is read.

    Returns:
        :func:`summarize` of every timed call, with the per-repeat p50s and their spread.
    """
    if iterations < 1 or repeats < 1 or warmup < 0:
        raise ValueError("need iterations >= 1, repeats >= 1 and warmup >= 0")
    every, p50s = [], []
    for _ in range(repeats):
        for _ in range(warmup):
            run()
        if sync:
            sync()
        times = []
        for _ in range(iterations):
            start = clock()
            run()
            if sync:
                sync()
            times.append((clock() - start) * 1000)
        p50s.append(percentile(sorted(times), 50))
        every.extend(times)
    return summarize(every, batch=batch, repeat_p50s=p50s)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (MB).

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own memory
    (``ru_maxrss`` would also count the parent's pages copied at fork, before exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 2)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 2)


def current_rss_mb() -> float | None:
    """This process's resident set size now (MB), from /proc where there is one."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 2)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(runtime: str, *, threads: int | None = None, device: str | None = None) -> dict:
    """The header every measurement carries: where and with what it was taken."""
    import importlib.metadata

    versions = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "tensorrt"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "device": device or platform.node(),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": runtime,
        "threads": threads,
        "versions": versions,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
