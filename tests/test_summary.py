"""toolchain/summary.py and the per-budget choice: every kind of budget row renders in the
report; "met" needs latency, memory, the accuracy floor and a clear gain over the trivial
baseline; predictions are judged by their interval's upper end; the choice after distillation
is monotone over budgets."""

from __future__ import annotations

from toolchain.config import BudgetSpec
from toolchain.nas.budget import cap_finalists, choose_per_budget, fits, shortlist
from toolchain.nas.results import BudgetUnmet
from toolchain.report import rows
from toolchain.summary import Quality, failed_row, judge_latency, unmet_row, verdict_of

BUDGET = BudgetSpec(name="tight", latency_ms=2.0, memory_mb=512)


def test_failed_and_unmet_budgets_render_as_not_met():
    failed = failed_row(BUDGET, RuntimeError("export failed: parity"))
    unmet = unmet_row(BUDGET, BudgetUnmet(error="no subnet fits", closest={}))
    header, table = rows({"bundles": [failed, unmet], "metric": "mcc"})
    assert len(table) == 2 and all(len(r) == len(header) for r in table)
    assert table[0][:2] == ["tight (<= 2 ms, 512 MB)", "NOT MET: failed: export failed: parity"]
    assert table[1][1] == "NOT MET: no subnet fits"
    assert failed["met"] is False and not failed["built"]
    assert "dev mcc" in header  # the column names the task's metric


def _row(dev: dict, lat: dict, quality: Quality) -> dict:
    row = {"budget_ms": BUDGET.latency_ms, "budget_mb": BUDGET.memory_mb}
    row.update(judge_latency(BUDGET, lat), quality=quality.judge(dev))
    row["met"], row["verdict"] = verdict_of(row, "x86-64-host")
    return row


GAIN = {"trivial": 0.51, "lower": 0.2, "confidence": 0.95, "clearly_above": True}
MEASURED = {"status": "measured", "p50_ms": 1.0, "p90_ms": 1.5, "peak_rss_mb": 100}


def test_a_bundle_under_the_floor_is_not_met_whatever_its_latency():
    quality = Quality("accuracy", teacher=0.90, floor=0.02)
    ok = _row({"accuracy": 0.885, "vs_trivial": GAIN}, MEASURED, quality)
    assert ok["met"] is True and ok["verdict"] == "met (measured on x86-64-host)"
    low = _row({"accuracy": 0.87, "vs_trivial": GAIN}, MEASURED, quality)
    assert low["met"] is False and "accuracy floor not met" in low["verdict"]


def test_a_bundle_not_clearly_above_the_trivial_baseline_is_not_met():
    quality = Quality("f1", teacher=0.80, floor=0.05)
    near = {**GAIN, "trivial": 0.81, "lower": -0.03, "clearly_above": False}
    row = _row({"f1": 0.807, "vs_trivial": near}, MEASURED, quality)
    assert row["met"] is False and "not clearly above the trivial baseline" in row["verdict"]
    assert "f1 0.8070 vs 0.8100" in row["verdict"]


def test_a_prediction_is_judged_by_its_upper_end_and_says_predicted():
    quality = Quality("accuracy", teacher=0.90, floor=0.02)
    dev = {"accuracy": 0.89, "vs_trivial": GAIN}
    inside = {"status": "predicted", "p90_ms": 1.2, "p90_hi_ms": 1.9, "peak_rss_mb": 300}
    row = _row(dev, inside, quality)
    assert row["met"] is True and row["verdict"].startswith("met (predicted for")
    straddles = {**inside, "p90_hi_ms": 2.4}  # the point fits, the interval does not
    row = _row(dev, straddles, quality)
    assert row["met"] is False and "p90 upper end 2.40 ms > 2 ms" in row["verdict"]
    heavy = {**inside, "peak_rss_hi_mb": 600}
    assert "peak memory 600 MB > 512 MB" in _row(dev, heavy, quality)["verdict"]


def test_fits_uses_the_measurement_where_there_is_one():
    predicted = {"latency_ms": 1.0, "latency_hi_ms": 2.5, "memory_mb": 100}
    assert not fits(predicted, None, BUDGET)  # the interval's upper end is over
    assert fits(predicted, {"p90_ms": 1.8, "peak_rss_mb": 200}, BUDGET)
    assert not fits(predicted, {"p90_ms": 1.8, "peak_rss_mb": 600}, BUDGET)
    assert fits({"latency_ms": 1.0, "memory_mb": None}, None, BUDGET)  # no interval, no memory


def test_shortlist_keeps_the_most_accurate_and_the_fastest_near_one():
    ranked = [("big", 0.9), ("mid", 0.89), ("small", 0.85)]
    near = [("tiny", 0.86), ("small", 0.85)]  # cheapest first
    assert shortlist(ranked, near, 1) == [("big", 0.9)]
    assert shortlist(ranked, near, 2) == [("big", 0.9), ("tiny", 0.86)]
    assert shortlist(ranked, near, 3) == [("big", 0.9), ("mid", 0.89), ("tiny", 0.86)]
    assert shortlist(ranked, [("big", 0.9)], 3) == ranked  # no repeats, filled from the ranking


def _budgets():
    return [
        BudgetSpec(name="relaxed", latency_ms=4.0, memory_mb=4096),
        BudgetSpec(name="tight", latency_ms=1.0, memory_mb=512),
        BudgetSpec(name="balanced", latency_ms=2.0, memory_mb=1024),
    ]


def test_choice_is_monotone_over_three_budgets_on_a_fake_predictor():
    # a fake predictor: latency (ms) and memory (MB) per subnet; scores after distillation
    law = {
        "A": (0.6, 300, 0.800),
        "B": (0.9, 600, 0.860),  # fits tight's latency but not its memory
        "Z": (0.5, 700, 0.857),  # faster than B, within the near-tie of the best, less accurate
        "C": (1.8, 900, 0.859),
        "D": (3.5, 2000, 0.900),
    }
    budgets = _budgets()
    pools = {
        b.name: [
            {"arch": a, "latency_ms": lat}
            for a, (lat, mem, _) in law.items()
            if fits({"latency_ms": lat, "memory_mb": mem}, None, b)
        ]
        for b in budgets
    }
    scores = {a: s for a, (_, _, s) in law.items()}
    chosen = choose_per_budget(budgets, pools, scores, near_tie=0.005)
    assert chosen["tight"]["arch"] == "A"  # the only one that fits
    # balanced: B (0.860) is the most accurate; Z (0.857) is within the tie and faster
    assert chosen["balanced"]["arch"] == "Z" and chosen["balanced"]["tied"] == 3
    assert chosen["relaxed"]["arch"] == "D"
    order = ["tight", "balanced", "relaxed"]
    got = [chosen[n]["score"] for n in order]
    assert got == sorted(got)  # a looser budget never gets a less accurate subnet


def test_a_near_tie_never_undercuts_a_tighter_budget():
    # tight fits only B (memory rules Z out there); balanced fits both: the tie would pick the
    # faster Z, 0.003 less accurate than what tight got: balanced keeps B
    budgets = _budgets()[1:]
    pools = {
        "tight": [{"arch": "B", "latency_ms": 0.9}],
        "balanced": [{"arch": "B", "latency_ms": 0.9}, {"arch": "Z", "latency_ms": 0.5}],
    }
    chosen = choose_per_budget(budgets, pools, {"B": 0.860, "Z": 0.857}, near_tie=0.005)
    assert chosen["tight"]["arch"] == chosen["balanced"]["arch"] == "B"
    assert chosen["tight"]["shared_with"] == ["balanced"]


def test_the_pooled_finalists_are_capped_round_by_round_from_the_tightest_budget():
    # SST-2's standard build: three budgets' shortlists (most accurate first) pooled to 7 subnets
    pools = {
        "tight": [{"arch": a} for a in ("T1", "T2", "T3", "S")],
        "balanced": [{"arch": a} for a in ("T1", "B1", "T2", "T3", "S")],
        "relaxed": [{"arch": a} for a in ("R1", "R2", "T1", "B1", "T2", "T3", "S")],
    }
    budgets = _budgets()  # relaxed listed first: the order comes from the budgets' sizes
    # round 0: tight T1, balanced's T1 already kept, relaxed R1; round 1: tight T2, balanced B1
    assert cap_finalists(budgets, pools, 3) == ["T1", "R1", "T2"]
    assert cap_finalists(budgets, pools, 4) == ["T1", "R1", "T2", "B1"]
    assert cap_finalists(budgets, pools, 99) == ["T1", "R1", "T2", "B1", "R2", "T3", "S"]
    kept = cap_finalists(budgets, pools, 3)
    assert all(any(c["arch"] in kept for c in pool) for pool in pools.values())


def test_a_finalist_whose_distillation_failed_drops_out():
    budgets = _budgets()[1:2]
    pools = {"tight": [{"arch": "A", "latency_ms": 0.5}, {"arch": "B", "latency_ms": 0.6}]}
    chosen = choose_per_budget(budgets, pools, {"A": None, "B": 0.7}, near_tie=0.0)
    assert chosen["tight"]["arch"] == "B"
    assert choose_per_budget(budgets, pools, {"A": None, "B": None}, near_tie=0.0) == {}


def test_a_measurement_is_judged_against_the_budget_that_asks():
    # one measurement of a subnet serves every budget at its shape: its verdict is per budget
    from toolchain.nas.budget import choose

    figures = {"p50_ms": 3.0, "p90_ms": 3.5, "peak_rss_mb": 200, "verdict": "missed"}
    big = {"arch": "big", "accuracy": 0.93, "predicted": {"latency_ms": 3.0}, "measured": figures}
    small = {"arch": "small", "accuracy": 0.88, "predicted": {"latency_ms": 1.0},
             "measured": {**figures, "p50_ms": 1.0, "p90_ms": 1.2}}  # fmt: skip
    relaxed = BudgetSpec(name="relaxed", latency_ms=12.0, memory_mb=1024)
    assert choose([big, small], 0.0, relaxed)["arch"] == "big"  # measured 3.5 ms fits 12 ms
    assert choose([big, small], 0.0, BUDGET)["arch"] == "small"  # 2 ms: only the small one
