"""toolchain/summary.py: every kind of budget row renders in the report."""

from __future__ import annotations

from toolchain.config import BudgetSpec
from toolchain.nas.results import BudgetUnmet
from toolchain.report import rows
from toolchain.summary import failed_row, unmet_row

BUDGET = BudgetSpec(name="tight", latency_ms=2.0, memory_mb=512)


def test_failed_and_unmet_budgets_render_as_not_met():
    failed = failed_row(BUDGET, RuntimeError("export failed: parity"))
    unmet = unmet_row(BUDGET, BudgetUnmet(error="no subnet fits", closest={}))
    header, table = rows({"bundles": [failed, unmet]})
    assert len(table) == 2 and all(len(r) == len(header) for r in table)
    assert table[0][:2] == ["tight (<= 2 ms)", "NOT MET: export failed: parity"]
    assert table[1][1] == "NOT MET: no subnet fits"
    assert failed["met"] is False and not failed["built"]
