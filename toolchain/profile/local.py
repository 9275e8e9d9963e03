"""The one host timer: a target measured in a fresh process (:mod:`toolchain.profile.worker`),
and budgets judged against the results. Which machine a figure may be reported for is decided by
the device target (:meth:`toolchain.target.DeviceTarget.measure`), which calls this.

Example::

    reply = run_worker({"target": "model.onnx", "runtime": "onnxruntime", "shapes": [[1, 128]],
                        "warmup": 20, "iterations": 200, "repeats": 5})
    budget_verdicts(profile.budgets, reply["results"])
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from toolchain.profile.protocol import percentile
from toolchain.profile.runners import ProfileError

REPO = Path(__file__).resolve().parents[2]


def run_worker(request: dict, *, timeout: float = 3600) -> dict:
    """:mod:`toolchain.profile.worker` in a fresh Python process. It runs from the package's
    parent folder (so ``-m toolchain...`` imports without an install), so the target is made
    absolute first: a path the user gave is relative to the user's working directory."""
    if "target" in request:
        request = {**request, "target": str(Path(request["target"]).resolve())}
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain.profile.worker", json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    lines = proc.stdout.strip().splitlines()
    try:
        reply = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise ProfileError(f"the measuring process failed: {proc.stderr.strip()[-800:]}") from None
    if "error" in reply:
        raise ProfileError(reply["error"])
    return reply


def budget_verdicts(budgets, results: list[dict]) -> list[dict]:
    """Each budget met or missed, from the result at its batch and sequence length."""
    by_shape = {(r["batch"], r["seq"]): r for r in results}
    out = []
    for b in budgets:
        r = by_shape.get((b.batch, b.seq_len))
        if r is None:
            out.append({"budget": b.name, "verdict": "not measured"})
            continue
        latency = r.get(f"p{b.percentile:g}_ms")
        if latency is None:  # a percentile the summary does not carry
            latency = r["p90_ms"] if b.percentile <= 90 else r["p99_ms"]
        # GPU runtimes are held to the device memory they use, CPU ones to the peak RSS
        kind = "device" if "device_memory_mb" in r else "peak RSS"
        memory = r.get("device_memory_mb") if kind == "device" else r.get("peak_rss_mb")
        entry = {
            "budget": b.name,
            "latency_ms": latency,
            "latency_budget_ms": b.latency_ms,
            "percentile": b.percentile,
            "memory_budget_mb": b.memory_mb,
        }
        if memory is None:  # imported timings (trtexec) without a memory figure
            fits = latency <= b.latency_ms
            entry["verdict"] = "latency met, memory not measured" if fits else "missed (latency)"
        else:
            met = latency <= b.latency_ms and memory <= b.memory_mb
            entry.update(peak_memory_mb=memory, memory_kind=kind)
            entry["verdict"] = "met" if met else "missed"
        out.append(entry)
    return out


__all__ = ["budget_verdicts", "percentile", "run_worker"]
