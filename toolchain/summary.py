"""What a build hands back: one row per budget (built and verified, not met, or failed) and the
whole summary written to ``OUT/build.json``, which :mod:`toolchain.report` renders.

A budget's latency is judged at its own percentile; ``met`` says whether the figure fits and
``measured`` whether that figure was measured (on this host or by the device's agent) or
predicted for the device, as the manifest's label says.

Example::

    row = budget_row(budget, choice, bundle_folder, out=run_dir, export=..., quant=...,
                     bundled=..., metric="accuracy")
    BuildSummary(task="sst2", ..., bundles=[row], ...).write(run_dir / "build.json")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toolchain.bundle.manifest import verify
from toolchain.config import BudgetSpec
from toolchain.nas.results import BudgetChoice, BudgetUnmet, SearchResult


def bits_of(quant: dict) -> str:
    """``W8A8``-style precision from the quantize stage's metrics (``fp32`` without one)."""
    if not quant:
        return "fp32"
    a, w = quant.get("a_bits"), quant.get("w_bits")
    if w is None:  # mixed precision
        widths = sorted(set((quant.get("widths") or {}).values()))
        w = "/".join(str(x) for x in widths) or "mixed"
    return f"W{w}A{a if a else 'float'}"


def budget_row(
    budget: BudgetSpec,
    choice: BudgetChoice,
    folder: Path,
    *,
    out: Path,
    export: dict,
    quant: dict,
    bundled: dict,
    metric: str,
) -> dict:
    """The row of a built budget; its bundle re-hashed (verified) first."""
    verify(folder)  # every file re-hashed before the build calls the bundle done
    lat = bundled["manifest"].get("latency") or {}
    dev = bundled.get("dev") or {}
    latency = lat.get(f"p{budget.percentile:g}_ms", lat.get("p90_ms", lat.get("p50_ms")))
    memory = lat.get("peak_rss_mb")
    met = None
    if latency is not None:
        met = latency <= budget.latency_ms and (memory is None or memory <= budget.memory_mb)
    return {
        "budget": budget.name,
        "budget_ms": budget.latency_ms,
        "budget_percentile": budget.percentile,
        "budget_mb": budget.memory_mb,
        "built": True,
        "bundle": str(folder.relative_to(out)),
        "subnet": choice.subnet,
        "shape": choice.shape,
        "params": choice.params,
        "format": export.get("format"),
        "bits": bits_of(quant),
        "bytes": (folder / "model.onnx").stat().st_size,
        "dev_accuracy": dev.get(metric),
        "label_loyalty": dev.get("label_loyalty"),
        "prob_loyalty": dev.get("prob_loyalty"),
        "p50_ms": lat.get("p50_ms"),
        "p90_ms": lat.get("p90_ms"),
        "latency_ms": latency,
        "peak_memory_mb": memory,
        "latency_label": lat.get("label"),
        "measured": lat.get("status") != "predicted" and latency is not None,
        "met": met,
    }


def unmet_row(budget: BudgetSpec, unmet: BudgetUnmet) -> dict:
    """The row of a budget no subnet fits, with the closest subnet."""
    return {
        "budget": budget.name,
        "budget_ms": budget.latency_ms,
        "budget_mb": budget.memory_mb,
        "built": False,
        "met": False,
        "error": unmet.error,
        "closest": unmet.closest or {},
    }


def failed_row(budget: BudgetSpec, error: Exception) -> dict:
    """The row of a budget whose stages failed (the other budgets still build)."""
    return {
        "budget": budget.name,
        "budget_ms": budget.latency_ms,
        "budget_mb": budget.memory_mb,
        "built": False,
        "met": False,
        "error": str(error),
    }


@dataclass(frozen=True)
class BuildSummary:
    """Everything ``build.json`` holds."""

    task: str
    device: str
    requested_device: str  # what the user typed (an alias, or the profile's name)
    teacher: dict
    baseline: dict  # the teacher as the task kind's baseline ships it
    search: SearchResult
    bundles: list[dict]
    stage_s: dict[str, float]
    wall_s: float

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "device": self.device,
            "requested_device": self.requested_device,
            "teacher": self.teacher,
            "baseline_ort_int8_teacher": self.baseline,
            "search": {
                "space": self.search.space,
                "supernet_steps": self.search.supernet.get("steps"),
                "supernet_from_cache": self.search.supernet.get("cached"),
            },
            "bundles": self.bundles,
            "stage_s": self.stage_s,
            "wall_s": self.wall_s,
        }

    def write(self, path: Path) -> None:
        """Written to a temporary file, then renamed."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        tmp.replace(path)


__all__ = ["BuildSummary", "bits_of", "budget_row", "failed_row", "unmet_row"]
