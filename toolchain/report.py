"""The report of a build: ``OUT/report.md`` and ``OUT/report.html`` with their plots, made only
from what the run directory holds (``build.json`` and the stage records), so ``edgec report
RUN_DIR`` regenerates the same files.

First what every score is judged against: the task's main metric (named in every column), the
trivial baseline, the teacher (and its gate against the trivial baseline), the floor, the preset.
Per bundle, what ships: architecture, export format, runtime and execution providers, precision as
shipped (and as trained where they differ), stored bits per parameter, size, dev score and its
distance to the teacher, label/probability loyalty, latency (measured on X, or predicted for Y
with its interval), peak memory, and the verdict ("met (measured on X)", "met (predicted for Y)",
"NOT MET: why"); a model-card table in AI Hub's columns (device, chipset, target runtime,
inference time, peak memory, precision); how each budget chose among its distilled finalists; the
teacher as optimum + ONNX Runtime INT8 would ship it; plots of the shipped bundles against the
budgets, the teacher and that INT8 baseline (measured and predicted drawn differently), of the
search's front and of the time per stage; which stages ran and which were cached; the commands to
deploy and to measure on the device; when, with which versions and with which recipe it was built.
The HTML embeds its images, so the page alone is the whole report.

Example::

    write_report(Path("runs/sst2-orin"))
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from toolchain.bundle.build import provider_names
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


def _format_runtime(b: dict) -> str:
    """'int8-qdq / ONNX Runtime (TensorRT, CUDA, CPU)': the export format and where it runs."""
    runtime = {"onnxruntime": "ONNX Runtime"}.get(b.get("runtime") or "", b.get("runtime"))
    providers = provider_names(b.get("providers"))
    return f"{b.get('format') or '?'} / {runtime or 'ONNX Runtime'} ({providers})"


def _precision(b: dict) -> str:
    """The precision as shipped, and as trained where that differs."""
    shipped, trained = str(b.get("bits") or "-"), b.get("trained_bits")
    if trained and trained not in shipped and "trained" not in shipped:
        return f"{shipped} (trained {trained})"
    return shipped


def rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The per-bundle table: header and rows of text."""
    metric = _metric(summary)
    header = [
        "budget",
        "subnet",
        "format / runtime",
        "precision shipped",
        "bits/param",
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
                _format_runtime(b),
                _precision(b),
                _fmt(b.get("stored_bits_per_param"), ".2f"),
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


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_stage_times(stage_s: dict, path: Path, status: dict | None = None) -> bool:
    """Seconds per stage; a stage cached from an earlier pass is grey and says so."""
    plt = _pyplot()
    if plt is None:
        return False
    status = status or {}
    names = list(stage_s)[::-1]
    colors = ["lightgrey" if status.get(n) == "cached" else "tab:blue" for n in names]
    labels = [f"{n} (cached)" if status.get(n) == "cached" else n for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1.2), dpi=110)
    ax.barh(labels, [stage_s[n] for n in names], color=colors)
    ax.set_xlabel(
        "seconds this pass (blue: ran; grey: cached, done by an earlier pass)"
        if status
        else "seconds (this pass; a cached stage shows ~0)"
    )
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return True


def plot_shipped(summary: dict, path: Path) -> bool:
    """The Pareto view of what ships: each built bundle's dev score against its latency at the
    budget's percentile (filled: measured; hollow with its interval: predicted), the budgets as
    dashed verticals, the teacher and the trivial baseline as horizontals, and the teacher through
    optimum + ONNX Runtime INT8 as a point where it was measured on the build's device (a line
    otherwise: its latency is from another machine)."""
    plt = _pyplot()
    built = [b for b in summary["bundles"] if b.get("built") and b.get("p90_ms") is not None]
    if plt is None or not built:
        return False
    metric = _metric(summary)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    seen: dict[tuple, list[str]] = {}
    for b in built:
        seen.setdefault((b["p90_ms"], b.get("dev")), []).append(b["budget"])
    for (x, y), names in seen.items():
        b = next(r for r in built if r["budget"] == names[0])
        if y is None:
            continue
        if b.get("measured"):
            ax.plot(x, y, "o", color="tab:blue", ms=8)
        else:
            lo, hi = b.get("p90_lo_ms"), b.get("p90_hi_ms")
            xerr = [[x - lo if lo is not None else 0], [hi - x if hi is not None else 0]]
            ax.errorbar(x, y, xerr=xerr, fmt="s", mfc="white", color="tab:orange", ms=8,
                        capsize=3)  # fmt: skip
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(6, 6),
                    fontsize=7)  # fmt: skip
    xs = [b["budget_ms"] for b in summary["bundles"]] + [b["p90_ms"] for b in built]
    if min(xs) > 0 and max(xs) / min(xs) > 20:  # budgets far apart: a log axis shows them all
        ax.set_xscale("log")
    for b in summary["bundles"]:
        ax.axvline(b["budget_ms"], ls="--", lw=0.8, color="grey")
        ax.text(b["budget_ms"], 0.02, f" {b['budget']}", rotation=90, fontsize=7, va="bottom",
                color="grey", transform=ax.get_xaxis_transform())  # fmt: skip
    teacher = ((summary.get("teacher") or {}).get("dev") or {}).get(metric)
    if teacher is not None:
        ax.axhline(teacher, color="tab:green", lw=1, label=f"teacher (PyTorch fp32) {teacher:.3f}")
    trivial = (summary.get("trivial") or {}).get(metric)
    if trivial is not None:
        ax.axhline(trivial, color="tab:red", ls=":", lw=1, label=f"trivial baseline {trivial:.3f}")
    base = summary.get("baseline_ort_int8_teacher") or {}
    base_dev = (base.get("dev") or {}).get(metric)
    if base_dev is not None and base.get("latency"):
        here = (base.get("label") or "").startswith(f"measured on {summary['device']}")
        if here:
            ax.plot(base["latency"]["p90_ms"], base_dev, "D", color="tab:purple",
                    label=f"teacher, optimum + ORT INT8 {base_dev:.3f}")  # fmt: skip
        else:
            ax.axhline(base_dev, color="tab:purple", ls="-.", lw=1,
                       label=f"teacher, optimum + ORT INT8 {base_dev:.3f} (latency from another "
                       "machine: not placed)")  # fmt: skip
    ax.plot([], [], "o", color="tab:blue", label="bundle, measured")
    ax.plot([], [], "s", mfc="white", color="tab:orange", label="bundle, predicted (interval)")
    ax.set_xlabel(f"p90 latency, ms, on {summary['device']} (budgets dashed)")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title("What ships: each bundle against the budgets", fontsize=9)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return True


def card_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The model-card table AI Hub users know: device, chipset, target runtime, inference time,
    peak memory, precision; one row per built bundle, each figure marked measured or
    predicted."""
    facts = summary.get("device_facts") or {}
    header = ["budget", "device", "chipset", "target runtime", "inference time (ms)",
              "peak memory (MB)", "precision"]  # fmt: skip
    out = []
    for b in summary["bundles"]:
        if not b.get("built"):
            continue
        how = "measured" if b.get("measured") else "predicted"
        pct = b.get("budget_percentile", 90)
        out.append([
            b["budget"],
            summary["device"],
            facts.get("chipset", "-"),
            _format_runtime(b),
            f"{_fmt(b.get('p90_ms'), '.2f')} (p{pct:g}, {how})",
            f"{_fmt(b.get('peak_memory_mb'), '.0f')} ({how})" if b.get("peak_memory_mb") else "-",
            _precision(b),
        ])  # fmt: skip
    return header, out


def stage_lines(summary: dict) -> list[str]:
    """Each stage with what happened to it in this pass."""
    status = summary.get("stage_status") or {}
    out = []
    for name, secs in (summary.get("stage_s") or {}).items():
        state = status.get(name)
        what = {"cached": "cached (done by an earlier pass; not re-run)", "ran": "ran"}.get(
            state, "not recorded"
        )
        out.append(f"- {name}: {what}, {secs:g} s this pass")
    return out


def _inputs_of(onnx_path: Path) -> list[str]:
    try:
        import onnx

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception:  # a missing or unreadable model: the usual BERT inputs
        return ["input_ids", "attention_mask", "token_type_ids"]
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def commands(summary: dict, run_dir: Path) -> list[str]:
    """Shell lines to check, run and measure each bundle on the device (paths from the run
    directory)."""
    device = summary["device"]
    facts = summary.get("device_facts") or {}
    lines = []
    for b in summary["bundles"]:
        if not b.get("built"):
            continue
        path = b["bundle"]
        lines += [f"# {b['budget']}", f"edgec bundle verify {path}",
                  f"edgec run {path} --text 'an example input'"]  # fmt: skip
        if facts.get("kind") == "host-cpu" or device.startswith("x86-64-host"):
            lines.append(f"edgec profile {path} --device host")
            continue
        lines += [
            'pip install "edgec[runtime]"   # on the device: onnxruntime, numpy, tokenizers',
            f"edgec agent --device {device} --token-file TOKEN   # on the device",
            f"edgec profile {path} --device {device} --target http://DEVICE:9600 --token-file "
            "TOKEN",
        ]
        if "tensorrt" in (facts.get("runtimes") or []):
            batch, seq = b.get("budget_shape") or (1, 128)
            shapes = ",".join(
                f"{n}:{batch}x{seq}" for n in _inputs_of(run_dir / path / "model.onnx")
            )
            lines += [
                f"trtexec --onnx={path}/model.onnx --shapes={shapes} --int8 --fp16 "
                "--percentile=90,95,99 > trtexec.log   # on the device",
                f"edgec profile --import-trtexec trtexec.log --device {device}",
            ]
    return lines


def provenance(summary: dict, run_dir: Path) -> tuple[list[str], str | None]:
    """(lines on when and with what this build ran, the effective recipe's text)."""
    lines = [f"- Built {summary.get('created') or 'at an unrecorded time'} (UTC), this pass "
             f"{summary.get('wall_s')} s."]  # fmt: skip
    versions = summary.get("versions") or {}
    if versions:
        lines.append(
            "- Versions: " + ", ".join(f"{k} {v or 'absent'}" for k, v in versions.items())
        )
    else:
        lines.append("- Versions: not recorded by this build (an older edgec)")
    recipe = None
    if summary.get("recipe_file") and (run_dir / summary["recipe_file"]).is_file():
        recipe = (run_dir / summary["recipe_file"]).read_text()
        lines.append(f"- Recipe: {summary['recipe_file']} (repeat with `edgec build --recipe "
                     f"{summary['recipe_file']}`)")  # fmt: skip
    return lines, recipe


def _data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


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
    card_header, card = card_table(summary)
    stage_png, shipped_png = run_dir / "report-stages.png", run_dir / "report-pareto.png"
    plots = []  # (file, caption)
    if plot_shipped(summary, shipped_png):
        plots.append((shipped_png, "What ships: dev score against p90 latency, budgets dashed "
                      "(filled: measured; hollow: predicted, with its interval)"))  # fmt: skip
    search_png = run_dir / "search" / "pareto.png"
    if search_png.is_file():
        plots.append((search_png, "The search's front: accuracy with inherited weights (before "
                      "distillation) against predicted latency; not what ships"))  # fmt: skip
    if plot_stage_times(summary.get("stage_s") or {}, stage_png, summary.get("stage_status")):
        plots.append((stage_png, "Time per stage in this pass (grey: cached)"))
    run_lines = commands(summary, run_dir)
    prov, recipe = provenance(summary, run_dir)
    title = f"edgec build: {summary['task']} for {summary['device']}"

    def md_table(head, body):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return lines + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]

    md = [f"# {title}", "", *_context(summary), "", *md_table(header, table)]
    md += ["", "## Model card", "", *md_table(card_header, card)]
    md += ["", "## How each budget chose", "", *_selection(summary), ""]
    md += ["## Compared with the teacher", "", *_comparison(summary), ""]
    md += ["## Plots", ""]
    md += [f"![{cap}]({f.relative_to(run_dir).as_posix()})" for f, cap in plots]
    md += ["", "## Stages", "", *stage_lines(summary)]
    md += ["", "## Deploy and measure", "", "From the run directory:", "", "```bash", *run_lines,
           "```"]  # fmt: skip
    md += ["", "## Provenance", "", *prov]
    if recipe:
        md += ["", "```yaml", recipe.rstrip(), "```"]
    md += ["", f"Search space: {summary.get('search', {}).get('space')}.", ""]
    if _supernet_line(summary):
        md[-1:] = [_supernet_line(summary), ""]
    (run_dir / "report.md").write_text("\n".join(md) + "\n")

    e = html.escape

    def html_table(head, body):
        return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                          for r in body) + "</table>")  # fmt: skip

    def items(lines):
        return "<ul>" + "".join(f"<li>{e(x.strip(' -'))}</li>" for x in lines) + "</ul>"

    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:80em;margin:2em auto}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
        "padding:3px 6px}pre{background:#f6f6f6;padding:.5em;overflow-x:auto}</style>"
        "</head><body>",
        f"<h1>{e(title)}</h1>", items(_context(summary)), html_table(header, table),
        "<h2>Model card</h2>", html_table(card_header, card),
        "<h2>How each budget chose</h2>", items(_selection(summary)),
        "<h2>Compared with the teacher</h2>", items(_comparison(summary)),
        "<h2>Plots</h2>",
        # embedded, so the page alone is the whole report
        *[f"<figure><img src='{_data_uri(f)}' alt='{e(cap)}'><figcaption>{e(cap)}</figcaption>"
          "</figure>" for f, cap in plots],
        "<h2>Stages</h2>", items(stage_lines(summary)),
        "<h2>Deploy and measure</h2><p>From the run directory:</p>",
        f"<pre>{e(chr(10).join(run_lines))}</pre>",
        "<h2>Provenance</h2>", items(prov),
        f"<details><summary>{e(summary.get('recipe_file') or 'recipe')}</summary>"
        f"<pre>{e(recipe)}</pre></details>" if recipe else "",
        f"<p>Search space: {e(str(summary.get('search', {}).get('space')))}.</p>",
        f"<p>{e(_supernet_line(summary))}</p>" if _supernet_line(summary) else "",
        "</body></html>",
    ]  # fmt: skip
    (run_dir / "report.html").write_text("\n".join(page) + "\n")
    return run_dir / "report.md", run_dir / "report.html"


def _supernet_line(summary: dict) -> str:
    """Where the searched supernet came from, when it was the task-agnostic one."""
    search = summary.get("search") or {}
    if not search.get("supernet_agnostic"):
        return ""
    return (
        f"Supernet: the task-agnostic one ({search['supernet_agnostic']}), trained once on "
        f"unlabelled text, adapted to this task in {search.get('supernet_steps')} steps."
    )
