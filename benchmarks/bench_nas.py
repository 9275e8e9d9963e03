"""NAS-BERT search on SST-2 with the fine-tuned MiniLM-L6 teacher and this host as the device:
the searched subnets (after their final distillation) against hand-designed students of equal
measured latency (3- and 2-layer truncations, a half-width ETD-Impt student), every student
distilled with the same number of steps. Writes ``benchmarks/results/nas.json``, ``nas.md`` and
``nas_pareto.png``.

    python benchmarks/bench_nas.py --data-dir ../shared/data --teacher runs/bench_teacher/sst2 \\
        --predictors runs/bench_profile

1. distil the baselines; export each to ONNX and measure its p50 here (batch 1, seq 128);
2. one supernet training and one search stage with one budget per baseline: latency = the
   baseline's measured p50 (at p50), memory unbounded;
3. distil each searched subnet from its supernet weights with the baselines' settings and steps;
4. measure every final model again, all of them round-robin in the same rounds (each in a fresh
   process, the least disturbed of ``--rounds``), so both sides see the same machine.

Every step is a pipeline stage in ``runs/bench_nas/`` (git-ignored): an interrupted benchmark
resumes at the first unfinished one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from bench_distill import Bench, environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASELINES = (
    ("L3:H384:A12:F1536", "truncation", "3 layers, truncated"),
    ("L2:H384:A12:F1536", "truncation", "2 layers, truncated"),
    ("L6:H192:A6:F768", "etd-impt", "6 layers, half width, ETD-Impt"),
)
LATENCY_TOLERANCE_PCT = 2.0  # "equal latency": within the measured repeat spread of this host


def measure_round_robin(onnx_files: dict[str, Path], rounds: int) -> dict[str, dict]:
    """p50 (batch 1, seq 128) of each model: the least disturbed of ``rounds`` round-robin
    rounds, each measurement in a fresh process."""
    from toolchain.profile.local import run_worker

    p50s: dict[str, list[float]] = {k: [] for k in onnx_files}
    for _ in range(rounds):
        for key, path in onnx_files.items():
            reply = run_worker(
                {
                    "target": str(path),
                    "runtime": "onnxruntime",
                    "shapes": [[1, 128]],
                    "threads": None,
                    "warmup": 20,
                    "iterations": 100,
                    "repeats": 1,
                }
            )
            p50s[key].append(reply["results"][0]["p50_ms"])
    return {k: {"p50_ms": min(v), "round_p50_ms": v} for k, v in p50s.items()}


def block_ops(hidden: int = 384, heads: int = 12, seq: int = 128, rounds: int = 5) -> dict:
    """NAS-BERT's candidate operations as single blocks in ONNX Runtime here (batch 1): multi-head
    attention (projections + scores + output) vs separable convolutions (depthwise k + pointwise)
    of kernel 3, 7 and 15, and the FFN of 4x width; p50 in ms, least disturbed of ``rounds``."""
    import tempfile

    import onnxruntime as ort
    import torch
    from torch import nn

    from toolchain.profile.protocol import measure

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).view(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            p = torch.softmax(q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5, -1)
            return self.out((p @ v).transpose(1, 2).reshape(b, t, hidden))

    class SepConv(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.dw = nn.Conv1d(hidden, hidden, k, padding=k // 2, groups=hidden)
            self.pw = nn.Linear(hidden, hidden)

        def forward(self, x):
            return self.pw(self.dw(x.transpose(1, 2)).transpose(1, 2))

    ops = {
        "attention": Attention(),
        "ffn-4x": nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden)
        ),
    }
    ops.update({f"sepconv-k{k}": SepConv(k) for k in (3, 7, 15)})
    x = torch.randn(1, seq, hidden)
    times: dict[str, list[float]] = {k: [] for k in ops}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, op in ops.items():
            path = Path(tmp) / f"{name}.onnx"
            torch.onnx.export(op.eval(), (x,), str(path), dynamo=False, opset_version=17)
            sessions[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for _ in range(rounds):
            for name, sess in sessions.items():
                feed = {sess.get_inputs()[0].name: x.numpy()}
                stats = measure(lambda s=sess, f=feed: s.run(None, f), warmup=20, iterations=200)
                times[name].append(stats["p50_ms"])
    return {k: {"p50_ms": min(v)} for k, v in times.items()}


def export_onnx(model_dir: Path, out: Path) -> Path:
    if out.is_file():
        return out
    from toolchain.export.onnx import export_float, load_for_export

    tmp = out.with_name(out.name + ".tmp.onnx")
    adapter, _ = load_for_export(model_dir)
    export_float(adapter, tmp)
    tmp.replace(out)
    return out


def final_stage(bench: Bench, name: str, subnet_dir: Path, cfg):
    """Distil a searched subnet (its supernet weights as the start) with the baselines' settings."""
    from toolchain.pipeline import Stage

    def run(ctx):
        from toolchain.models.loading import load_model

        student = load_model(str(subnet_dir), head="sequence-classification")
        return bench.distill_student(ctx, cfg, student)

    # the subnet's content is an input: a new search re-runs its final distillation
    return Stage(
        name, run, config={"subnet": str(subnet_dir), "cfg": cfg, "rev": 1}, inputs=(subnet_dir,)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="shared/data (default: $EDGEC_DATA_DIR)")
    parser.add_argument("--teacher", default=str(REPO / "runs" / "bench_teacher" / "sst2"))
    parser.add_argument(
        "--predictors",
        default=str(REPO / "runs" / "bench_profile"),
        help="folder holding x86-64-host.json (benchmarks/bench_profile.py writes it)",
    )
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_nas"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--steps", type=int, default=1000, help="distillation steps, every model")
    parser.add_argument("--supernet-steps", type=int, default=1000)
    parser.add_argument("--sandwich", type=int, default=3)
    parser.add_argument("--population", type=int, default=24)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    args.proxy_steps = 10  # Bench's GA settings (no GA row here)
    from toolchain.config import BudgetSpec, SearchConfig
    from toolchain.nas.stage import search_stage
    from toolchain.pipeline import RunDir
    from toolchain.target import DeviceTarget

    if not Path(args.predictors, "x86-64-host.json").is_file():
        raise SystemExit(f"no fitted predictor in {args.predictors}: run bench_profile.py first")
    started = time.perf_counter()
    bench = Bench(args)
    run = RunDir(args.run_dir)
    onnx_dir = Path(args.run_dir) / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)

    ops = block_ops(rounds=args.rounds)
    # 1. baselines
    baselines = []
    for shape, init, what in BASELINES:
        name = f"baseline-{shape.replace(':', '')}-{init}"
        cfg = bench.cfg(shape, init, "rail", args.steps)
        (res,) = run.run([bench.stage(name, cfg)])
        m = res.record["metrics"]
        onnx = export_onnx(Path(args.run_dir) / name, onnx_dir / f"{name}.onnx")
        baselines.append(
            {"name": name, "what": what, "shape": shape, "init": init, "m": m, "onnx": onnx}
        )
    first = measure_round_robin({b["name"]: b["onnx"] for b in baselines}, args.rounds)

    # 2. one supernet, one search with a budget per baseline
    budgets = tuple(
        BudgetSpec(
            name=f"like-{b['shape'].replace(':', '').lower()}",
            latency_ms=first[b["name"]]["p50_ms"],
            memory_mb=4096,
            percentile=50,
            description=f"the measured p50 of the baseline {b['what']}",
        )
        for b in baselines
    )
    scfg = SearchConfig(
        supernet_steps=args.supernet_steps,
        sandwich=args.sandwich,
        learning_rate=args.lr,
        batch_size=32,
        max_seq_len=64,
        population=args.population,
        generations=args.generations,
        eval_samples=args.eval_samples,
        measure_top_k=3,
    )
    stage = search_stage(
        teacher_dir=bench.teacher_dir,
        spec=bench.spec,
        data_dir=args.data_dir,
        target=DeviceTarget.resolve("host", predictors_dir=args.predictors),
        budgets=budgets,
        cfg=scfg,
    )
    (sres,) = run.run([stage])
    search = sres.record["metrics"]

    # 3. final distillation of each searched subnet
    searched = []
    for budget, base in zip(budgets, baselines, strict=True):
        r = search["budgets"][budget.name]
        name = f"searched-{budget.name}"
        cfg = bench.cfg(r["shape"], "etd-impt", "rail", args.steps)  # init unused: supernet weights
        (res,) = run.run(
            [final_stage(bench, name, Path(args.run_dir) / "search" / r["model"], cfg)]
        )
        onnx = export_onnx(Path(args.run_dir) / name, onnx_dir / f"{name}.onnx")
        searched.append(
            {
                "name": name,
                "budget": budget.name,
                "base": base["name"],
                "r": r,
                "m": res.record["metrics"],
                "onnx": onnx,
            }
        )

    # 4. every final model measured in the same rounds
    lat = measure_round_robin({x["name"]: x["onnx"] for x in baselines + searched}, args.rounds)

    def row(x, arch):
        m = x["m"]
        return {
            "name": x["name"],
            "arch": arch,
            "params": m["parameters"],
            "p50_ms": lat[x["name"]]["p50_ms"],
            "round_p50_ms": lat[x["name"]]["round_p50_ms"],
            "dev_accuracy": m["dev"]["student"]["accuracy"],
            "label_loyalty": m["dev"].get("label_loyalty"),
            "train_s": m["train_s"],
            "steps": m["result"]["steps"],
        }

    budget_ms = {b.name: b.latency_ms for b in budgets}
    base_rows = [{**row(b, b["shape"]), "what": b["what"], "init": b["init"]} for b in baselines]
    searched_rows = [
        {
            **row(s, s["r"]["subnet"]),
            "shape": s["r"]["shape"],
            "budget": s["budget"],
            "budget_ms": budget_ms[s["budget"]],
            "accuracy_inherited": s["r"]["accuracy_inherited"],
            "predicted_ms": s["r"]["predicted"]["latency_ms"],
            "search_measured": s["r"].get("measured"),
            "search_s": s["r"]["search_s"],
        }
        for s in searched
    ]
    verdicts = []
    for b in base_rows:
        tol = b["p50_ms"] * (1 + LATENCY_TOLERANCE_PCT / 100)
        winners = [
            s["name"]
            for s in searched_rows
            if s["p50_ms"] <= tol and s["dev_accuracy"] >= b["dev_accuracy"]
        ]
        verdicts.append(
            {"baseline": b["name"], "matched_or_beaten_by": winners, "met": bool(winners)}
        )
    supernet_s = search["supernet"]["train_s"]
    scratch_s = sum(b["train_s"] for b in base_rows)
    report = {
        "searched": searched_rows,
        "baselines": base_rows,
        "supernet_train_s": supernet_s,
        "per_budget_s": {
            s["budget"]: round(s["search_s"] + s["train_s"], 1) for s in searched_rows
        },
        "search_wall_s": search["wall_s"],
        "scratch_distill_s_all_budgets": round(scratch_s, 1),
        "goals": {
            "every_baseline_matched_or_beaten": all(v["met"] for v in verdicts),
            "verdicts": verdicts,
            "latency_tolerance_pct": LATENCY_TOLERANCE_PCT,
            "supernet_cheaper_than_scratch_students": supernet_s < scratch_s,
        },
        "block_ops_p50_ms": ops,
        "supernet": search["supernet"],
        "pruning": search["pruning"],
        "space": search["space"],
        "space_size": search["space_size"],
        "settings": {k: v for k, v in vars(args).items()},
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    (out / "nas.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    png = Path(args.run_dir) / "search" / "pareto.png"
    if png.is_file():
        shutil.copyfile(png, out / "nas_pareto.png")
    lines = [
        "# NAS-BERT search vs hand-designed students (SST-2, this host)",
        "",
        f"Measured {report['date']} on {report['environment']['cpu']} "
        f"({report['environment']['cores']} cores). Every model distilled {args.steps} steps "
        "from the fine-tuned MiniLM-L6 teacher (RAIL-KD, same settings); p50 at batch 1, seq 128, "
        f"ONNX Runtime fp32, least disturbed of {args.rounds} round-robin rounds.",
        "",
        "| model | arch | params | p50 ms | SST-2 dev acc |",
        "|---|---|---|---|---|",
    ]
    for r in base_rows:
        lines.append(
            f"| baseline: {r['what']} | {r['arch']} | {r['params'] / 1e6:.1f} M "
            f"| {r['p50_ms']:.2f} | {r['dev_accuracy']:.4f} |"
        )
    for r in searched_rows:
        lines.append(
            f"| searched for {r['budget']} ({r['budget_ms']:.2f} ms) | {r['arch']} | "
            f"{r['params'] / 1e6:.1f} M | {r['p50_ms']:.2f} | {r['dev_accuracy']:.4f} |"
        )
    lines += [
        "",
        f"Supernet training: {supernet_s} s ({search['supernet']['steps']} steps, sandwich "
        f"{args.sandwich}); distilling the {len(base_rows)} baselines from scratch: "
        f"{scratch_s:.0f} s. "
        f"Every baseline matched or beaten at equal or lower latency (within "
        f"{LATENCY_TOLERANCE_PCT}%): {report['goals']['every_baseline_matched_or_beaten']}.",
    ]
    conv = min((v["p50_ms"], k) for k, v in ops.items() if k.startswith("sepconv"))
    lines += [
        "",
        "NAS-BERT's block operations as single ONNX blocks here (hidden 384, batch 1, seq 128, "
        "p50 ms): "
        + ", ".join(f"{k} {v['p50_ms']:.3f}" for k, v in ops.items())
        + f". The fastest separable convolution ({conv[1]}) takes "
        f"{conv[0] / ops['attention']['p50_ms']:.0%} of the attention block's time.",
    ]
    (out / "nas.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
