"""Latency and peak memory of a bundle's own runner, in a fresh process (no torch loaded), so
the peak RSS is what `edgec run` needs, not what the build process happened to hold.

    python -m toolchain.bundle.measure NAME.edgec '{"batch": 1, "seq_len": 128, ...}'
"""

from __future__ import annotations

import json
import sys


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
    from toolchain.profile import protocol

    runner = BundleRunner(folder, threads=threads)
    feeds = runner.encode([{"text": " ".join(["edge"] * seq_len * 2)}] * batch)
    stats = protocol.measure(
        lambda: runner.session.run(["logits"], feeds),
        warmup=warmup,
        iterations=iterations,
        batch=batch,
    )
    return {
        "status": "measured",
        **{k: round(stats[k], 3) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")},
        "batch": batch,
        "seq_len": int(feeds["input_ids"].shape[1]),
        "iterations": iterations,
        "peak_rss_mb": protocol.peak_rss_mb(),
        "runtime": "onnxruntime-cpu",
        "torch_loaded": "torch" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], **json.loads(sys.argv[2]))))
