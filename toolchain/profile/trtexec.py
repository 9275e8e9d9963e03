"""Import trtexec's timing output as measured figures (`edgec profile --import-trtexec FILE`).

trtexec (TensorRT's benchmark tool, shipped with JetPack) is what NVIDIA users measure engines
with. Its log ends with a performance summary::

    &&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --onnx=model.onnx \
        --shapes=input_ids:1x128,attention_mask:1x128 ...
    [I] Selected Device: Orin
    [I] Throughput: 2699.06 qps
    [I] Latency: min = 0.36 ms, max = 0.52 ms, mean = 0.37 ms, median = 0.37 ms,
        percentile(90%) = 0.38 ms, ...   (one line in the log)
    [I] GPU Compute Time: min = 0.34 ms, ... median = 0.35 ms, percentile(99%) = 0.39 ms

The report has the shape of `edgec profile`'s: one row per log (batch and sequence from
``--shapes``/``--optShapes`` of ``input_ids``, or given), p50 = the median of trtexec's end-to-end
``Latency`` (host-to-device copies included; ``GPU Compute Time`` is kept beside it), p90/p99 where
the log has them, throughput, and the device memory TensorRT reports in its ``[MemUsageChange]``
lines when present. Every budget of the device profile is judged on it; a p90 absent from the log
(older trtexec prints only p99 unless given ``--percentile=90,95,99``) is judged on p99, an upper
bound, and says so. Written by hand: NVIDIA ships no parser for this text (trtexec's
``--exportTimes`` JSON holds raw timings only, without the device or the shapes).
"""

from __future__ import annotations

import re
from pathlib import Path

from toolchain.errors import EdgecError
from toolchain.profile.local import budget_verdicts

_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([\d.eE+-]+)\s*ms")
_SHAPE = re.compile(r"--(?:shapes|optShapes)=(\S+)")
_VERSION = re.compile(r"TensorRT v(\d+)")
_MEM = re.compile(r"\[MemUsageChange\].*?now: CPU (\d+), GPU (\d+) \(MiB\)")


class TrtexecError(EdgecError):
    """A file that is not trtexec output with a performance summary."""


def _stats(line: str) -> dict:
    out = {}
    for name, pct, value in _STAT.findall(line):
        key = f"p{float(pct):g}" if pct else {"median": "p50"}.get(name, name)
        out[f"{key}_ms"] = float(value)
    return out


def _summary_line(lines: list[str], label: str) -> str | None:
    return next((ln for ln in reversed(lines) if f"] {label}:" in ln or ln.startswith(label)), None)


def _shape(text: str) -> tuple[int, int] | None:
    for spec in _SHAPE.findall(text):
        for item in spec.split(","):
            name, _, dims = item.rpartition(":")
            parts = dims.split("x")
            if name.strip("'\"") in ("input_ids", "") and len(parts) == 2:
                return int(parts[0]), int(parts[1])
    return None


def parse(text: str, *, source: str, shape: tuple[int, int] | None = None) -> dict:
    """One measured row (and where it came from) from trtexec's log ``text``.

    Raises:
        TrtexecError: no performance summary in ``text``, or no batch/sequence length in it and
            none given.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    latency = _summary_line(lines, "Latency")
    if latency is None or "median" not in latency:
        raise TrtexecError(
            f"{source}: no trtexec performance summary (a 'Latency: min = ..., median = ...' "
            "line): give the whole log of a trtexec run that timed inference (not "
            "--skipInference)"
        )
    found = _shape(text)
    if found is None and shape is None:
        raise TrtexecError(
            f"{source}: the log names no --shapes/--optShapes for input_ids: give the batch and "
            "sequence length it ran with (--batch B --seq S)"
        )
    batch, seq = shape or found
    row = {"batch": batch, "seq": seq, **_stats(latency)}
    gpu = _summary_line(lines, "GPU Compute Time")
    if gpu:
        row["gpu_compute"] = _stats(gpu)
    throughput = _summary_line(lines, "Throughput")
    if throughput:
        m = re.search(r"([\d.]+)\s*qps", throughput)
        if m:  # trtexec counts queries (one per enqueue of the whole batch)
            row["throughput_per_s"] = round(float(m.group(1)) * batch, 2)
    if "p90_ms" not in row:
        row["p90_ms"] = row.get("p99_ms")
        row["p90_note"] = (
            "the log has no percentile(90%) (trtexec --percentile=90,95,99 prints it): p99 "
            "stands in, an upper bound"
        )
    memory = [(int(c), int(g)) for c, g in _MEM.findall(text)]
    if memory:
        row["device_memory_mb"] = float(max(g for _, g in memory))
        row["peak_rss_mb"] = float(max(c for c, _ in memory))
    device = next((ln.split("Selected Device:")[1].strip() for ln in lines
                   if "Selected Device:" in ln), None)  # fmt: skip
    version = _VERSION.search(text)
    return {
        "row": row,
        "trtexec_device": device,
        "tensorrt": version.group(1) if version else None,
        "source": source,
    }


def import_trtexec(paths: list[str | Path], profile, *, shape=None) -> dict:
    """The `edgec profile` report of trtexec logs, judged against ``profile``'s budgets.

    Figures are labelled measured on the profile's device by trtexec (the logs' own device name
    beside it); nothing here is predicted.
    """
    parsed = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise TrtexecError(f"trtexec log not found: {path}")
        parsed.append(parse(path.read_text(errors="replace"), source=str(path), shape=shape))
    results = sorted((x["row"] for x in parsed), key=lambda r: (r["batch"], r["seq"]))
    devices = sorted({x["trtexec_device"] for x in parsed if x["trtexec_device"]})
    seen = f" ({', '.join(devices)})" if devices else ""
    return {
        "label": f"measured on {profile.name}{seen} by trtexec, imported from "
        + ", ".join(x["source"] for x in parsed),
        "measured": True,
        "environment": {
            "runtime": "tensorrt (trtexec)",
            "device": profile.name,
            "tensorrt": next((x["tensorrt"] for x in parsed if x["tensorrt"]), None),
        },
        "results": results,
        # memory is judged only where the log reported it; otherwise the verdict says so
        "budgets": budget_verdicts(profile.budgets, results),
    }
