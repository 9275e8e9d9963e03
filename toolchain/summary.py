"""What a build hands back: one row per budget (built and verified, not met, or failed) and the
whole summary written to ``OUT/build.json``, which :mod:`toolchain.report` renders.

A budget's latency is judged at its own percentile: a measured figure (on this host or by the
device's agent) as it is, a prediction by the upper end of its interval. ``met`` needs the
latency and peak memory to fit *and* the bundle's dev score (in the task's main metric) to be
within the recipe's accuracy floor of the teacher and clearly above the trivial baseline;
``verdict`` says it in words ("met (measured on X)", "met (predicted for X)", "NOT MET: ...").

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


@dataclass(frozen=True)
class Quality:
    """What a bundle's score is judged against: the teacher's dev score in the task's main
    metric, the floor under it, and whether "clearly above the trivial baseline" is required."""

    metric: str
    teacher: float | None
    floor: float  # recipe quality.accuracy_floor

    def judge(self, dev: dict) -> dict:
        """``floor_met`` / ``above_trivial`` (None where unknown) and the reasons that fail."""
        score = dev.get(self.metric)
        floor_met = None
        if score is not None and self.teacher is not None:
            floor_met = score >= self.teacher - self.floor - 1e-12
        gain = dev.get("vs_trivial") or {}
        above = gain.get("clearly_above")
        reasons = []
        if floor_met is False:
            reasons.append(
                f"accuracy floor not met: dev {self.metric} {score:.4f} is more than "
                f"{self.floor:g} under the teacher's {self.teacher:.4f}"
            )
        if above is False:
            reasons.append(
                f"not clearly above the trivial baseline: dev {self.metric} {score:.4f} vs "
                f"{gain['trivial']:.4f} ({gain['confidence']:.0%} lower bound of the gain "
                f"{gain['lower']:+.4f})"
            )
        return {"floor_met": floor_met, "above_trivial": above, "reasons": reasons}


def judge_latency(budget: BudgetSpec, lat: dict) -> dict:
    """The budget's verdict on a latency entry: the figure at the budget's percentile (measured)
    or the upper end of the predicted interval (predicted) against the budget, and peak memory
    (its predicted upper end where predicted). ``latency_met`` None: no figure."""
    predicted = lat.get("status") == "predicted"
    key = f"p{budget.percentile:g}_ms"
    figure = lat.get(key)
    used = key
    if figure is None:  # the protocol's percentile where the budget's was not measured
        used = next((k for k in ("p90_ms", "p99_ms", "p50_ms") if lat.get(k) is not None), None)
        figure = lat.get(used) if used else None
    judged = figure
    if predicted and used and lat.get(used.replace("_ms", "_hi_ms")) is not None:
        judged = lat[used.replace("_ms", "_hi_ms")]  # the interval's upper end decides
    memory = lat.get("peak_rss_hi_mb" if predicted else "peak_rss_mb", lat.get("peak_rss_mb"))
    return {
        "latency_ms": figure,
        "judged_ms": judged,
        "judged_on": (used or "-").replace("_ms", "") + (" upper end" if judged != figure else ""),
        "latency_met": None if judged is None else judged <= budget.latency_ms,
        "memory_judged_mb": memory,
        "memory_met": None if memory is None else memory <= budget.memory_mb,
        "measured": not predicted and figure is not None,
    }


def verdict_of(row: dict, where: str) -> tuple[bool | None, str]:
    """(met, the words the report prints): "met (measured on X)", "met (predicted for X)",
    or "NOT MET: ..." with every reason."""
    reasons = list(row.get("quality", {}).get("reasons") or [])
    if row.get("latency_met") is False:
        reasons.append(f"{row['judged_on']} {row['judged_ms']:.2f} ms > {row['budget_ms']:g} ms")
    if row.get("memory_met") is False:
        reasons.append(f"peak memory {row['memory_judged_mb']:.0f} MB > {row['budget_mb']:g} MB")
    if reasons:
        return False, "NOT MET: " + "; ".join(reasons)
    if row.get("latency_met") is None:
        return None, "unknown: no latency figure"
    how = f"measured on {where}" if row.get("measured") else f"predicted for {where}"
    return True, f"met ({how})"


def budget_row(
    budget: BudgetSpec,
    choice: BudgetChoice,
    folder: Path,
    *,
    out: Path,
    export: dict,
    quant: dict,
    bundled: dict,
    quality: Quality,
    device: str,
    selection: dict | None = None,
) -> dict:
    """The row of a built budget; its bundle re-hashed (verified) first. ``selection``: how the
    subnet was chosen among the distilled finalists (and which budgets share it)."""
    verify(folder)  # every file re-hashed before the build calls the bundle done
    lat = bundled["manifest"].get("latency") or {}
    model, runtime = (
        bundled["manifest"].get("model") or {},
        bundled["manifest"].get("runtime") or {},
    )
    dev = bundled.get("dev") or {}
    judged = judge_latency(budget, lat)
    row = {
        "budget": budget.name,
        "budget_ms": budget.latency_ms,
        "budget_percentile": budget.percentile,
        "budget_mb": budget.memory_mb,
        "budget_shape": [budget.batch, budget.seq_len],
        "built": True,
        "bundle": str(folder.relative_to(out)),
        "subnet": choice.subnet,
        "shape": choice.shape,
        "params": choice.params,
        "format": export.get("format"),
        # what ships (the bundle's manifest), and what was trained
        "bits": model.get("precision_summary") or bits_of(quant),
        "trained_bits": bits_of(quant),
        "runtime": runtime.get("name", "onnxruntime"),
        "providers": runtime.get("providers") or ["CPUExecutionProvider"],
        "stored_bits_per_param": model.get("stored_bits_per_param"),
        "bytes": (folder / "model.onnx").stat().st_size,
        "metric": quality.metric,
        "dev": dev.get(quality.metric),
        "vs_teacher": None
        if dev.get(quality.metric) is None or quality.teacher is None
        else round(dev[quality.metric] - quality.teacher, 4),
        "vs_trivial": dev.get("vs_trivial"),
        "label_loyalty": dev.get("label_loyalty"),
        "prob_loyalty": dev.get("prob_loyalty"),
        "p50_ms": lat.get("p50_ms"),
        "p90_ms": lat.get("p90_ms"),
        "p90_lo_ms": lat.get("p90_lo_ms"),
        "p90_hi_ms": lat.get("p90_hi_ms"),
        "peak_memory_mb": lat.get("peak_rss_mb"),
        "latency_label": lat.get("label"),
        **judged,
        "quality": quality.judge(dev),
        "selection": selection or {},
    }
    row["met"], row["verdict"] = verdict_of(row, device)
    return row


def _not_built(budget: BudgetSpec, verdict: str, error: str, **extra) -> dict:
    return {
        "budget": budget.name,
        "budget_ms": budget.latency_ms,
        "budget_mb": budget.memory_mb,
        "built": False,
        "met": False,
        "verdict": f"NOT MET: {verdict}",
        "error": error,
        **extra,
    }


def unmet_row(budget: BudgetSpec, unmet: BudgetUnmet) -> dict:
    """The row of a budget no subnet fits, with the closest subnet."""
    return _not_built(budget, unmet.error, unmet.error, closest=unmet.closest or {})


def failed_row(budget: BudgetSpec, error: Exception) -> dict:
    """The row of a budget whose stages failed (the other budgets still build)."""
    return _not_built(budget, f"failed: {error}", str(error))


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
    metric: str = "accuracy"  # the task's main metric: every score of the build is in it
    trivial: dict | None = None  # the trivial baseline on dev: its metrics and what it answers
    quality: dict | None = None  # the recipe's floor, near-tie, confidence
    preset: dict | None = None  # {"name", "time_budget"}
    selection: dict | None = None  # the finalists' scores after distillation, per budget
    stage_status: dict | None = None  # per stage: "ran" in this pass, or "cached" (done before)
    created: str | None = None  # when this pass finished (UTC, ISO 8601)
    versions: dict | None = None  # edgec, Python and the libraries, as they were for this build
    recipe_file: str | None = None  # the effective recipe, beside build.json
    device_facts: dict | None = None  # the profile's kind, chipset and runtimes

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "device": self.device,
            "requested_device": self.requested_device,
            "metric": self.metric,
            "trivial": self.trivial,
            "quality": self.quality,
            "preset": self.preset,
            "teacher": self.teacher,
            "baseline_ort_int8_teacher": self.baseline,
            "search": {
                "space": self.search.space,
                "supernet_steps": self.search.supernet.get("steps"),
                "supernet_from_cache": self.search.supernet.get("cached"),
                # the task-agnostic supernet this task's one was adapted from (None: task route)
                "supernet_agnostic": self.search.supernet.get("agnostic"),
            },
            "bundles": self.bundles,
            "selection": self.selection,
            "stage_s": self.stage_s,
            "stage_status": self.stage_status,
            "wall_s": self.wall_s,
            "created": self.created,
            "versions": self.versions,
            "recipe_file": self.recipe_file,
            "device_facts": self.device_facts,
        }

    def write(self, path: Path) -> None:
        """Written to a temporary file, then renamed."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        tmp.replace(path)


def device_facts(profile) -> dict:
    """What a model card says of the device: its kind, chipset (the GPU and the CPU the profile
    names) and runtimes."""
    return {
        "name": profile.name,
        "description": profile.description,
        "kind": profile.kind,
        "chipset": profile.chipset,
        "runtimes": list(profile.runtime_names),
    }


__all__ = [
    "BuildSummary",
    "device_facts",
    "Quality",
    "bits_of",
    "budget_row",
    "failed_row",
    "judge_latency",
    "unmet_row",
    "verdict_of",
]
