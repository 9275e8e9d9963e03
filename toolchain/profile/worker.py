"""Measure one target in a fresh process, so its peak memory is the target's own.

    python -m toolchain.profile.worker '{"target": ..., "runtime": ..., "shapes": [[1, 128]], ...}'

Prints one JSON object: the environment header, the resident memory before the model was loaded,
and per shape (smallest first) the protocol statistics and the process's peak RSS so far.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from toolchain.profile.protocol import current_rss_mb, environment, measure, peak_rss_mb
from toolchain.profile.runners import runner_for


def profile_shapes(request: dict) -> dict:
    baseline = current_rss_mb()
    runner = runner_for(Path(request["target"]), request["runtime"], threads=request.get("threads"))
    loaded = current_rss_mb()
    results = []
    for batch, seq in sorted(request["shapes"], key=lambda s: s[0] * s[1]):
        runner.prepare(batch, seq)
        stats = measure(
            runner.run,
            warmup=request["warmup"],
            iterations=request["iterations"],
            repeats=request["repeats"],
            batch=batch,
            sync=runner.sync,
        )
        row = {"batch": batch, "seq": seq, **stats, "peak_rss_mb": peak_rss_mb()}
        device_mb = runner.device_memory_mb()
        if device_mb is not None:  # GPU runtimes: the device memory in use after the runs
            row["device_memory_mb"] = device_mb
        results.append(row)
    return {
        "environment": {
            **environment(runner.name, threads=request.get("threads")),
            "torch_loaded": "torch" in sys.modules,  # a bundle must run without it
        },
        "rss_before_load_mb": baseline,
        "rss_after_load_mb": loaded,
        "results": results,
    }


if __name__ == "__main__":
    try:
        print(json.dumps(profile_shapes(json.loads(sys.argv[1]))))
    except Exception as e:  # reported to the parent as one line, never a traceback
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
