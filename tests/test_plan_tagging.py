"""The CVT candidate's place in the per-budget choice: measured latency against each budget at
its percentile, and no candidate where nothing can measure it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from toolchain.config import BudgetSpec, CVTConfig, load_recipe
from toolchain.data.tasks import get_task
from toolchain.plan import BuildOptions
from toolchain.plan_tagging import TaggingBuildPlan


def _plan(tmp_path: Path, measurable: bool, metrics: dict) -> TaggingBuildPlan:
    plan = TaggingBuildPlan.__new__(TaggingBuildPlan)
    plan.recipe = replace(load_recipe(None), cvt=CVTConfig(enabled=True))
    plan.options = BuildOptions()
    plan.spec = get_task("conll2003")
    plan.budgets = (
        BudgetSpec(name="tight", latency_ms=2.0, memory_mb=500, percentile=90),
        BudgetSpec(name="roomy", latency_ms=20.0, memory_mb=500, percentile=90),
        BudgetSpec(name="small", latency_ms=20.0, memory_mb=50, percentile=90),
    )
    plan.target = SimpleNamespace(measurable=measurable, name="jetson-orin-nano-8gb", agent=None)
    plan.run = SimpleNamespace(stage_dir=lambda name: tmp_path / name)
    plan._run = lambda stage, *a, **k: metrics[stage.name]
    return plan


def test_cvt_joins_the_budgets_its_measured_latency_fits(tmp_path):
    lat = {"status": "measured", "p50_ms": 3.0, "p90_ms": 4.0, "peak_rss_mb": 120.0}
    plan = _plan(tmp_path, True, {
        "cvt": {"best_validation": {"span_f1": 0.8}},
        "export-cvt": {},
        "measure-cvt": {"latency": {"b1-s128": lat}},
    })  # fmt: skip
    (extra,) = plan._extra_finalists(teacher=SimpleNamespace(dir=tmp_path))
    assert extra["arch"] == "cvt" and extra["score"] == 0.8 and extra["latency_ms"] == 3.0
    assert extra["fits"] == ["roomy"]
    assert "p90 4.0 ms" in extra["misses"]["tight"]  # judged at the budget's percentile
    assert "peak 120.0 MB" in extra["misses"]["small"]


def test_cvt_is_no_candidate_where_nothing_can_measure_it(tmp_path):
    plan = _plan(tmp_path, False, {})
    stage = plan._cvt_measure_stage()
    out = stage.fn(SimpleNamespace(out_dir=tmp_path))
    assert out["latency"] == {} and "no latency model for BiLSTMs" in out["why"]
    plan._run = lambda stage, *a, **k: {
        "cvt": {"best_validation": {"span_f1": 0.8}},
        "export-cvt": {},
        "measure-cvt": out,
    }[stage.name]
    (extra,) = plan._extra_finalists(teacher=SimpleNamespace(dir=tmp_path))
    assert extra["fits"] == [] and set(extra["misses"]) == {"tight", "roomy", "small"}


def test_no_cvt_unless_asked(tmp_path):
    plan = _plan(tmp_path, True, {})
    plan.recipe = load_recipe(None)
    assert plan._extra_finalists(teacher=None) == []
