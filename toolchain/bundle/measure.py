"""Latency and peak memory of a bundle's own runner, in a fresh process (no torch loaded), so
the peak RSS is what `edgec run` needs, not what the build process happened to hold.

    python -m toolchain.bundle.measure NAME.edgec '{"batch": 1, "seq_len": 128, ...}'
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time


def measure(
    folder: str,
    *,
    batch: int,
    seq_len: int,
    warmup: int,
    iterations: int,
    threads: int | None = None,
) -> dict:
    """p50/p90/p99/mean (ms) of one ONNX Runtime call, and this process's peak RSS (MB)."""
    from toolchain.bundle.runtime import BundleRunner

    runner = BundleRunner(folder, threads=threads)
    feeds = runner.encode([{"text": " ".join(["edge"] * seq_len * 2)}] * batch)
    for _ in range(warmup):
        runner.session.run(["logits"], feeds)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        runner.session.run(["logits"], feeds)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()

    def pct(q: float) -> float:
        return round(times[min(len(times) - 1, int(q / 100 * len(times)))], 3)

    return {
        "status": "measured",
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": round(statistics.fmean(times), 3),
        "batch": batch,
        "seq_len": int(feeds["input_ids"].shape[1]),
        "iterations": iterations,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runtime": "onnxruntime-cpu",
        "torch_loaded": "torch" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], **json.loads(sys.argv[2]))))
