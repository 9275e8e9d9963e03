"""`edgec devices`: list the device profiles, or show one with its facts, sources and budgets.

edgec devices [--json]
edgec devices show NAME [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from toolchain.devices.profiles import list_profiles, resolve_device
from toolchain.schema import to_dict

HELP = "list device profiles, or show one (facts with sources, runtimes, budgets)"
IMPLEMENTED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    show = sub.add_parser("show", help="one profile in full", description="Show one profile.")
    show.add_argument("name", help="profile name, alias (e.g. jetson) or path to a profile YAML")
    show.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        resolution = resolve_device(args.name)
        if resolution.note:
            print(f"edgec: {resolution.note}", file=sys.stderr)
        if args.json:
            print(json.dumps(profile_json(resolution.profile, full=True), indent=2))
        else:
            print(render_profile(resolution.profile))
        return 0
    profiles = list_profiles()
    if args.json:
        print(json.dumps([profile_json(p) for p in profiles], indent=2))
    else:
        print(render_table(profiles))
    return 0


def profile_json(profile, *, full: bool = False) -> dict:
    if full:
        return to_dict(profile)
    hw = profile.hardware
    return {
        "name": profile.name,
        "aliases": list(profile.aliases),
        "kind": profile.kind,
        "description": profile.description,
        "memory_gb": hw.memory.size_gb if hw else None,
        "memory_bandwidth_gbps": hw.memory.bandwidth_gbps if hw else None,
        "gpu_compute_capability": hw.gpu.compute_capability if hw and hw.gpu else None,
        "runtimes": {r.name: list(r.precisions) for r in profile.runtimes},
        "budgets": [to_dict(b) for b in profile.budgets],
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def render_table(profiles) -> str:
    rows = [["NAME", "ALIASES", "KIND", "MEMORY", "RUNTIMES"]]
    for p in profiles:
        mem = p.hardware.memory if p.hardware else None
        memory = "?" if mem is None else f"{mem.size_gb:g} GB"
        if mem is not None and mem.bandwidth_gbps:
            memory += f" @ {mem.bandwidth_gbps:g} GB/s"
        rows.append([p.name, ",".join(p.aliases) or "-", p.kind, memory, ",".join(p.runtime_names)])
    footer = (
        f"\n{len(profiles)} profiles. `edgec devices show NAME` gives the facts with their "
        "sources, runtimes, protocol and budgets."
    )
    return _table(rows) + footer


def _facts(prefix: str, section) -> list[list[str]]:
    import dataclasses

    rows = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name == "sources" or value in (None, (), "") or dataclasses.is_dataclass(value):
            continue
        if isinstance(value, tuple):
            value = ", ".join(value)
        elif isinstance(value, float):
            value = f"{value:g}"
        rows.append([f"  {prefix}{f.name}", f"{value}", section.sources.get(f.name, "")])
    return rows


def render_profile(p) -> str:
    wrap = textwrap.TextWrapper(width=100, initial_indent="  ", subsequent_indent="  ")
    out = [
        f"{p.name}: {p.description}",
        f"kind: {p.kind}   aliases: {', '.join(p.aliases) or '-'}",
        "",
        "Hardware",
    ]
    hw = p.hardware
    rows = [["  FACT", "VALUE", "SOURCE"]]
    for prefix, section in (("cpu.", hw.cpu), ("gpu.", hw.gpu), ("memory.", hw.memory), ("", hw)):
        if section is not None:
            rows += _facts(prefix, section)
    out += [_table(rows), "", "Runtimes"]
    out += [f"  {r.name:<17} {' '.join(r.precisions):<24} {r.notes}".rstrip() for r in p.runtimes]
    if p.software:
        out += ["", "Software"]
        for s in p.software:
            parts = [
                f"{k} {getattr(s, k)}"
                for k in ("l4t", "os", "cuda", "tensorrt", "cudnn", "python", "onnxruntime")
                if getattr(s, k)
            ]
            out.append(f"  {s.name}: {', '.join(parts)}  [{s.source}]")
    pr = p.protocol
    threads = f", {pr.threads} threads" if pr.threads else ""
    out += [
        "",
        "Measurement protocol",
        f"  warm-up {pr.warmup}, {pr.iterations} timed runs x {pr.repeats} repeats, "
        f"batch {pr.batch}, seq {pr.seq_len}, p{pr.percentile:g}{threads}",
    ]
    if pr.notes:
        out += wrap.wrap(pr.notes)
    out += ["", "Budgets"]
    rows = [["  NAME", "LATENCY", "PEAK MEMORY", "FOR"]]
    for b in p.budgets:
        rows.append(
            [
                f"  {b.name}",
                f"p{b.percentile:g} <= {b.latency_ms:g} ms",
                f"<= {b.memory_mb:g} MB",
                b.description,
            ]
        )
    out += [_table(rows)]
    out += wrap.wrap("How they were sized: " + p.budget_rationale)
    if p.references:
        out += ["", "References"] + [f"  {k:<4} {v}" for k, v in p.references.items()]
    if p.notes:
        out += ["", "Notes"]
        for note in p.notes:
            out += textwrap.wrap(note, width=100, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(out)
