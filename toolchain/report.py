"""The report of a build: ``OUT/report.md`` and ``OUT/report.html`` with their plots, made only
from what the run directory holds (``build.json`` and the stage records), so ``edgec report
RUN_DIR`` regenerates the same files.

Per bundle: architecture, bits, size, accuracy, label/probability loyalty to the teacher, latency
(each figure labelled measured on X / predicted for Y), peak memory, budget met; plots of the
Pareto front with the budgets drawn and of the time per stage; the teacher, and the teacher as
optimum + ONNX Runtime INT8 would ship it, for comparison.

Example::

    write_report(Path("runs/sst2-orin"))
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from toolchain.errors import EdgecError


def _load(run_dir: Path) -> dict:
    path = run_dir / "build.json"
    if not path.is_file():
        raise EdgecError(
            f"{run_dir}: no build.json; not an `edgec build` run directory (or the build has not "
            "finished its first pass yet)"
        )
    return json.loads(path.read_text())


def _fmt(value, spec: str = ".4f", none: str = "-") -> str:
    if value is None:
        return none
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The per-bundle table: header and rows of text."""
    header = [
        "budget",
        "subnet",
        "bits",
        "MB",
        "dev accuracy",
        "label loyalty",
        "prob. loyalty",
        "p50 ms",
        "p90 ms",
        "peak MB",
        "budget met",
        "latency from",
    ]
    out = []
    for b in summary["bundles"]:
        budget = f"{b['budget']} (<= {b['budget_ms']:g} ms)"
        if not b.get("built"):
            closest = b.get("closest") or {}
            pred = (closest.get("predicted") or {}).get("latency_ms")
            note = f"NOT MET: {b.get('error', 'failed')}"
            if closest:
                note += f"; closest {closest.get('subnet')} at {_fmt(pred, '.2f')} ms predicted"
            out.append([budget, note] + ["-"] * (len(header) - 2))
            continue
        met = {True: "yes", False: "NO", None: "-"}[b.get("met")]
        out.append(
            [
                budget,
                str(b["subnet"]),
                str(b.get("bits")),
                _fmt(b["bytes"] / 2**20, ".2f"),
                _fmt(b.get("dev_accuracy")),
                _fmt(b.get("label_loyalty")),
                _fmt(b.get("prob_loyalty")),
                _fmt(b.get("p50_ms"), ".2f"),
                _fmt(b.get("p90_ms"), ".2f"),
                _fmt(b.get("peak_memory_mb"), ".0f"),
                met,
                str(b.get("latency_label") or "-"),
            ]
        )
    return header, out


def _comparison(summary: dict) -> list[str]:
    lines = []
    teacher = (summary.get("teacher") or {}).get("dev") or {}
    metric = next((k for k in ("accuracy", "f1", "mcc", "pearson") if k in teacher), None)
    if metric:
        lines.append(
            f"- Teacher ({summary['teacher']['source']}): dev {metric} {teacher[metric]:.4f}."
        )
    base = summary.get("baseline_ort_int8_teacher") or {}
    if base.get("latency"):
        lat, dev = base["latency"], base.get("dev") or {}
        lines.append(
            f"- Teacher through optimum + ONNX Runtime dynamic INT8 ({base.get('label')}): "
            f"p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, "
            f"{base['bytes'] / 2**20:.1f} MB, dev {metric or 'score'} "
            f"{_fmt(dev.get(metric) if metric else None)}."
        )
        host_label = (base.get("label") or "").split(" (")[0]
        for b in summary["bundles"]:
            same_machine = (b.get("latency_label") or "").startswith(host_label)
            if b.get("built") and b.get("measured") and b.get("p50_ms") and same_machine:
                lines.append(
                    f"  - {b['budget']}: {lat['p50_ms'] / b['p50_ms']:.2f}x faster (p50), dev "
                    f"{_fmt(b.get('dev_accuracy'))} vs {_fmt(dev.get(metric) if metric else None)}."
                )
    elif base.get("error"):
        lines.append(f"- optimum + ORT INT8 teacher: not available ({base['error']}).")
    return lines


def plot_stage_times(stage_s: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(stage_s)
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1.2), dpi=110)
    ax.barh(names[::-1], [stage_s[n] for n in names][::-1], color="tab:blue")
    ax.set_xlabel("seconds (this run; a cached stage shows the time it took when it ran)")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return True


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (and ``report-stages.png``) into ``run_dir``."""
    run_dir = Path(run_dir)
    summary = _load(run_dir)
    header, table = rows(summary)
    stage_png = run_dir / "report-stages.png"
    has_stage_png = plot_stage_times(summary.get("stage_s") or {}, stage_png)
    pareto = run_dir / "search" / "pareto.png"
    title = f"edgec build: {summary['task']} for {summary['device']}"
    md = [f"# {title}", ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in table]
    md += ["", "## Compared with the teacher", "", *_comparison(summary), ""]
    md += ["## Plots", ""]
    if pareto.is_file():
        md.append(
            "![Pareto front: accuracy with inherited weights vs predicted latency, budgets "
            "dashed](search/pareto.png)"
        )
    if has_stage_png:
        md.append("![time per stage](report-stages.png)")
    md += ["", f"Search space: {summary.get('search', {}).get('space')}.", ""]
    md.append(f"Build wall time: {summary.get('wall_s')} s (this pass).")
    (run_dir / "report.md").write_text("\n".join(md) + "\n")

    e = html.escape
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:72em;margin:2em auto}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
        "padding:3px 6px}</style></head><body>",
        f"<h1>{e(title)}</h1><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>",
    ]
    page += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in table]
    page += ["</table><h2>Compared with the teacher</h2><ul>"]
    page += [f"<li>{e(line.strip(' -'))}</li>" for line in _comparison(summary)]
    page += ["</ul><h2>Plots</h2>"]
    if pareto.is_file():
        page.append("<img src='search/pareto.png' alt='Pareto front'>")
    if has_stage_png:
        page.append("<img src='report-stages.png' alt='time per stage'>")
    page.append(f"<p>Search space: {e(str(summary.get('search', {}).get('space')))}.</p>")
    page.append("</body></html>")
    (run_dir / "report.html").write_text("\n".join(page) + "\n")
    return run_dir / "report.md", run_dir / "report.html"
