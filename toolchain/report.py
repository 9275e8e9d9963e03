"""The report of a build: ``OUT/report.md`` and ``OUT/report.html`` with their plots, made only
from what the run directory holds (``build.json`` and the stage records), so ``edgec report
RUN_DIR`` regenerates the same files.

First what every score is judged against: the task's main metric (named in every column), the
trivial baseline, the teacher (and its gate against the trivial baseline), the floor, the preset.
Per bundle: architecture, bits, size, dev score and its distance to the teacher, label/probability
loyalty, latency (measured on X, or predicted for Y with its interval), peak memory, and the
verdict ("met (measured on X)", "met (predicted for Y)", "NOT MET: why"); how each budget chose
among its distilled finalists and which budgets share a model; plots of the Pareto front with the
budgets drawn and of the time per stage; the teacher as optimum + ONNX Runtime INT8 would ship it.

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


def _metric(summary: dict) -> str:
    """The task's main metric (older build.json files: the first known key of the teacher's)."""
    if summary.get("metric"):
        return summary["metric"]
    teacher = (summary.get("teacher") or {}).get("dev") or {}
    return next((k for k in ("accuracy", "f1", "mcc", "pearson") if k in teacher), "score")


def _p90(b: dict) -> str:
    if b.get("p90_hi_ms") is not None and b.get("p90_ms") is not None:  # a predicted interval
        lo = b.get("p90_lo_ms")
        lo = f"{lo:.2f}-" if lo is not None else "<="
        return f"{b['p90_ms']:.2f} ({lo}{b['p90_hi_ms']:.2f})"
    return _fmt(b.get("p90_ms"), ".2f")


def rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The per-bundle table: header and rows of text."""
    metric = _metric(summary)
    header = [
        "budget",
        "subnet",
        "bits",
        "MB",
        f"dev {metric}",
        "vs teacher",
        "label loyalty",
        "prob. loyalty",
        "p50 ms",
        "p90 ms",
        "peak MB",
        "verdict",
        "latency from",
    ]
    out = []
    for b in summary["bundles"]:
        budget = f"{b['budget']} (<= {b['budget_ms']:g} ms, {b.get('budget_mb', 0):g} MB)"
        if not b.get("built"):
            closest = b.get("closest") or {}
            pred = (closest.get("predicted") or {}).get("latency_ms")
            note = b.get("verdict") or f"NOT MET: {b.get('error', 'failed')}"
            if closest:
                note += f"; closest {closest.get('subnet')} at {_fmt(pred, '.2f')} ms predicted"
            out.append([budget, note] + ["-"] * (len(header) - 2))
            continue
        shared = (b.get("selection") or {}).get("shared_with") or []
        subnet = str(b["subnet"]) + (f" (same model as {', '.join(shared)})" if shared else "")
        verdict = b.get("verdict") or {True: "met", False: "NOT MET", None: "-"}[b.get("met")]
        out.append(
            [
                budget,
                subnet,
                str(b.get("bits")),
                _fmt(b["bytes"] / 2**20, ".2f"),
                _fmt(b.get("dev", b.get("dev_accuracy"))),
                _fmt(b.get("vs_teacher"), "+.4f"),
                _fmt(b.get("label_loyalty")),
                _fmt(b.get("prob_loyalty")),
                _fmt(b.get("p50_ms"), ".2f"),
                _p90(b),
                _fmt(b.get("peak_memory_mb"), ".0f"),
                verdict,
                str(b.get("latency_label") or "-"),
            ]
        )
    return header, out


def _context(summary: dict) -> list[str]:
    """What every score is judged against: the metric, the trivial baseline, the teacher, the
    floor, the preset."""
    metric, lines = _metric(summary), []
    lines.append(f"- Every score is the task's main metric, dev {metric}.")
    trivial = summary.get("trivial") or {}
    if trivial.get(metric) is not None:
        lines.append(
            f"- Trivial baseline ({trivial.get('description')}): dev {metric} "
            f"{trivial[metric]:.4f} on {trivial.get('n')} examples."
        )
    teacher = (summary.get("teacher") or {}).get("dev") or {}
    if teacher.get(metric) is not None:
        lines.append(
            f"- Teacher ({summary['teacher']['source']}): dev {metric} {teacher[metric]:.4f}."
        )
    gate = (summary.get("quality") or {}).get("teacher_gate") or {}
    if gate.get("validation"):
        v = gate["validation"]
        lines.append(
            f"- Teacher gate on the validation split: {v['metric']} {v['model']:.4f} vs "
            f"{v['trivial']:.4f} trivial, gain's {v['confidence']:.0%} lower bound "
            f"{v['lower']:+.4f} ({'clearly above' if v['clearly_above'] else 'NOT clearly above'}"
            f"; {len(gate.get('rounds') or [])} fine-tuning round(s))."
        )
    q = summary.get("quality") or {}
    if q:
        lines.append(
            f"- A bundle is met only if its latency and memory fit (a prediction by the upper end "
            f"of its interval), its dev {metric} is within {q.get('accuracy_floor', 0):g} of the "
            f"teacher's and clearly above the trivial baseline ({q.get('confidence', 0):.0%} "
            f"bootstrap bound). Finalists within {q.get('near_tie', 0):g} after distillation go "
            "to the faster."
        )
    preset = summary.get("preset") or {}
    if preset.get("name"):
        lines.append(
            f"- Preset: {preset['name']} (sized for {preset.get('time_budget')}); this pass "
            f"took {summary.get('wall_s')} s."
        )
    return lines


def _selection(summary: dict) -> list[str]:
    """How each budget's subnet was chosen among its distilled finalists."""
    lines = []
    for name, sel in (summary.get("selection") or {}).items():
        finalists = ", ".join(
            f"{f['arch']} {_fmt(f.get('validation_after_distill'))} (inherited "
            f"{_fmt(f.get('accuracy_inherited'))}, {_fmt(f.get('latency_ms'), '.2f')} ms"
            + (f"; {f['skipped']}" if f.get("skipped") else "")
            + ")"
            for f in sel.get("finalists") or []
        )
        chosen = sel.get("arch")
        what = f"chose {chosen}: {sel.get('why')}" if chosen else "no finalist could be distilled"
        lines.append(f"- {name}: {what}. Finalists (validation after distillation): {finalists}.")
    return lines


def _comparison(summary: dict) -> list[str]:
    lines, metric = [], _metric(summary)
    base = summary.get("baseline_ort_int8_teacher") or {}
    if base.get("latency"):
        lat, dev = base["latency"], base.get("dev") or {}
        lines.append(
            f"- Teacher through optimum + ONNX Runtime dynamic INT8 ({base.get('label')}): "
            f"p50 {lat['p50_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms, "
            f"{base['bytes'] / 2**20:.1f} MB, dev {metric} {_fmt(dev.get(metric))}."
        )
        host_label = (base.get("label") or "").split(" (")[0]
        for b in summary["bundles"]:
            same_machine = (b.get("latency_label") or "").startswith(host_label)
            if b.get("built") and b.get("measured") and b.get("p50_ms") and same_machine:
                lines.append(
                    f"  - {b['budget']}: {lat['p50_ms'] / b['p50_ms']:.2f}x faster (p50), dev "
                    f"{metric} {_fmt(b.get('dev', b.get('dev_accuracy')))} vs "
                    f"{_fmt(dev.get(metric))}."
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


# -- a decoder LM's build ------------------------------------------------------------------
def lm_report(s: dict) -> str:
    """report.md of a decoder LM's build (:mod:`toolchain.plan_decoder`)."""
    t, triv, base = s["teacher"], s["trivial"], s.get("baseline") or {}
    lines = [
        f"# edgec build: {s['task']} (decoder LM) for {s['device']}",
        "",
        f"Perplexity protocol: {s['protocol']}. Lower is better.",
        "",
        f"- Teacher `{t['source']}` ({t.get('shape', '?')}, not fine-tuned): dev perplexity "
        f"{t['dev']['perplexity']:.3f}.",
        f"- Trivial baseline ({triv.get('description')}): {triv.get('perplexity')}.",
    ]
    if "dev" in base:
        lat = base.get("latency") or {}
        lines.append(
            f"- Baseline (teacher, optimum + ONNX Runtime dynamic INT8): perplexity "
            f"{base['dev']['perplexity']:.3f}, TTFT p90 {lat.get('ttft_ms')} ms, decode "
            f"{lat.get('decode_tok_s')} tok/s ({base.get('label')})."
        )
    elif "error" in base:
        lines.append(f"- Baseline failed: {base['error']}")
    lines += [
        f"- Precision {s['precision']} (weights; float activations), preset "
        f"{(s.get('preset') or {}).get('name')}, wall time {s['wall_s'] / 60:.1f} min.",
        "",
        "| budget | TTFT budget | decode budget | student | params | ppl | agree | loyalty | "
        "TTFT p90 | decode tok/s | peak memory | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in s["bundles"]:
        if not b.get("built"):
            lines.append(f"| {b['budget']} | {b['ttft_budget_ms']} ms | "
                         f"{b['decode_budget_tok_s']} | - | - | - | - | - | - | - | - | "
                         f"NOT BUILT: {b.get('error')} |")  # fmt: skip
            continue
        d, lat = b["dev"], b["latency"]
        lines.append(
            f"| {b['budget']} | {b['ttft_budget_ms']} ms | {b['decode_budget_tok_s']} | "
            f"{b['key']} ({b['shape']}) | {b['params'] / 1e6:.1f}M | {d['perplexity']:.2f} | "
            f"{d['next_token_agreement']:.3f} | {d['prob_loyalty']:.3f} | "
            f"{lat.get('ttft_ms')} ms | {lat.get('decode_tok_s')} | "
            f"{lat.get('memory_hi_mb')} MB | {b['verdict']} |"
        )
    lines += ["", "## Candidates", "",
              "| candidate | init | shape | params | " + " | ".join(
                  f"{b['budget']}" for b in s["bundles"]) + " |",
              "|---|---|---|---|" + "---|" * len(s["bundles"])]  # fmt: skip
    for c in s["candidates"]:
        cells = [c["budgets"][b["budget"]]["why"] for b in s["bundles"]]
        lines.append(f"| {c['key']} | {c['init']} | {c['shape']} | {c['params'] / 1e6:.1f}M | "
                     + " | ".join(cells) + " |")  # fmt: skip
    clean = t.get("cleaning") or {}
    if clean:
        removed = ", ".join(f"{k} {v}" for k, v in (clean.get("removed") or {}).items())
        lines += ["", f"Cleaning of the training text: kept {clean.get('kept')} of "
                  f"{clean.get('total')} lines (removed: {removed or 'none'})."]  # fmt: skip
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in s["stage_s"].items())]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (and ``report-stages.png``) into ``run_dir``."""
    run_dir = Path(run_dir)
    summary = _load(run_dir)
    if summary.get("kind") == "language-modeling":
        text = lm_report(summary)
        (run_dir / "report.md").write_text(text)
        title = f"edgec build: {summary['task']} (decoder LM) for {summary['device']}"
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                f"</title></head><body><pre>{html.escape(text)}</pre></body></html>\n")  # fmt: skip
        (run_dir / "report.html").write_text(page)
        return run_dir / "report.md", run_dir / "report.html"
    header, table = rows(summary)
    stage_png = run_dir / "report-stages.png"
    has_stage_png = plot_stage_times(summary.get("stage_s") or {}, stage_png)
    pareto = run_dir / "search" / "pareto.png"
    title = f"edgec build: {summary['task']} for {summary['device']}"
    md = [f"# {title}", ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in table]
    md[2:2] = [*_context(summary), ""]
    md += ["", "## How each budget chose", "", *_selection(summary), ""]
    md += ["## Compared with the teacher", "", *_comparison(summary), ""]
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
        f"<h1>{e(title)}</h1><ul>",
        *[f"<li>{e(line.strip(' -'))}</li>" for line in _context(summary)],
        "</ul><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>",
    ]
    page += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in table]
    page += ["</table><h2>How each budget chose</h2><ul>"]
    page += [f"<li>{e(line.strip(' -'))}</li>" for line in _selection(summary)]
    page += ["</ul><h2>Compared with the teacher</h2><ul>"]
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
