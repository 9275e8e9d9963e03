"""Distillation grid on SST-2 with the fine-tuned MiniLM-L6 teacher: students of 3 layers
(hidden 384) and 4 layers at half width, init x mapping at equal steps, plus one long run of the
best 3-layer configuration. Writes ``benchmarks/results/distill.json`` and ``distill.md``.

    python benchmarks/bench_distill.py --data-dir ../shared/data --teacher runs/bench_teacher/sst2

Every row is a pipeline stage in ``runs/bench_distill/`` (git-ignored): an interrupted benchmark
resumes at the first unfinished row. The GA mapping is searched once per student shape (its cost
is reported separately) and used by every init's ``ga`` row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {"L3:H384:A12:F1536": "3 layers, hidden 384", "L4:H192:A6:F768": "4 layers, half width"}
INITS = ("random", "truncation", "etd-rand", "etd-impt")
MAPPINGS = ("none", "uniform", "last", "rail", "ga")


def environment() -> dict:
    import torch

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


class Bench:
    """Shared, preloaded state (teacher, data, importance) for every row."""

    def __init__(self, args):
        from toolchain.config import DataConfig
        from toolchain.data.clean import clean
        from toolchain.data.readers import load_split
        from toolchain.data.tasks import get_task
        from toolchain.models.loading import load_model

        self.args = args
        self.spec = get_task("sst2")
        self.teacher_dir = str(Path(args.teacher).resolve())
        if not Path(self.teacher_dir, "config.json").is_file():
            raise SystemExit(
                f"no fine-tuned teacher at {self.teacher_dir}: run "
                "benchmarks/bench_teacher.py first (or pass --teacher DIR)"
            )
        self.teacher = load_model(self.teacher_dir, head="sequence-classification")
        self.train, _ = clean(load_split(self.spec, "train", args.data_dir), DataConfig())
        self.validation = load_split(self.spec, "validation", args.data_dir)
        self.dev = load_split(self.spec, "dev", args.data_dir)
        from toolchain.data.encode import encode

        self.encoded_train = encode(self.spec, self.train, self.teacher.tokenizer, 64)
        self._importance = None

    def importance(self):
        from toolchain.distill.importance import importance

        if self._importance is None:
            sample = random.Random(0).sample(self.train, 512)
            self._importance = importance(self.teacher, self.spec, sample, max_len=64)
        return self._importance

    def cfg(self, shape: str, init: str, mapping: str, steps: int):
        from toolchain.config import DistillConfig, GAConfig

        a = self.args
        return DistillConfig(
            student_shape=shape,
            init=init,
            mapping=mapping,
            steps=steps,
            batch_size=32,
            learning_rate=a.lr,
            max_seq_len=64,
            eval_every=a.eval_every,
            eval_samples=a.eval_samples,
            temperature=2.0,
            kd_weight=0.5,
            hidden_weight=1.0,
            ga=GAConfig(population=6, generations=3, proxy_fraction=0.1, proxy_steps=a.proxy_steps),
        )

    def stage(self, name: str, cfg, genome=None):
        from toolchain.pipeline import Stage

        def run(ctx):
            return self.run_row(ctx, cfg, genome)

        return Stage(
            name, run, config={"teacher": self.teacher_dir, "cfg": cfg, "genome": genome, "rev": 1}
        )

    def run_row(self, ctx, cfg, genome) -> dict:
        from toolchain.distill.init import init_student
        from toolchain.models.adapters import Shape

        shape = Shape.parse(cfg.student_shape)
        imp = self.importance() if cfg.init == "etd-impt" else None
        student = init_student(self.teacher, shape, cfg.init, importance=imp, seed=ctx.seed)
        return self.distill_student(ctx, cfg, student, genome)

    def distill_student(self, ctx, cfg, student, genome=None) -> dict:
        """Distil ``student`` (already initialised) and score it on dev against the teacher."""
        from toolchain.distill.trainer import distill
        from toolchain.evaluate.evaluate import compare

        t0 = time.perf_counter()
        result = distill(
            self.teacher,
            student,
            self.spec,
            self.train,
            self.validation,
            cfg,
            out_dir=ctx.out_dir,
            seed=ctx.seed,
            genome=genome,
            checkpoint_dir=ctx.checkpoint_dir,
            encoded_train=self.encoded_train,
        )
        train_s = time.perf_counter() - t0
        dev = compare(self.teacher, student, self.spec, self.dev, max_len=128)
        return {
            "result": result,
            "dev": dev,
            "train_s": round(train_s, 1),
            "parameters": student.num_parameters(),
        }

    def search(self, run_dir, shape: str) -> dict:
        from toolchain.distill.stage import search_mapping
        from toolchain.models.adapters import Shape
        from toolchain.pipeline import Stage

        cfg = self.cfg(shape, "etd-impt", "ga", self.args.steps)

        def run(ctx):
            t0 = time.perf_counter()
            best, info = search_mapping(
                self.teacher,
                Shape.parse(shape),
                self.spec,
                self.train,
                self.validation,
                cfg,
                self.importance(),
                seed=ctx.seed,
                state_dir=ctx.checkpoint_dir,
                device=None,
            )
            return {**info, "search_s": round(time.perf_counter() - t0, 1)}

        name = f"ga-{shape.replace(':', '')}"
        (res,) = run_dir.run([Stage(name, run, config={"teacher": self.teacher_dir, "cfg": cfg})])
        return res.record["metrics"]


def row_name(shape, init, mapping, steps):
    return f"{shape.replace(':', '')}-{init}-{mapping}-{steps}"


def steps_to_reach(history: list[dict], target: float) -> int | None:
    return next((h["step"] for h in history if h["accuracy"] >= target), None)


def summarise(rows: list[dict], teacher_acc: float) -> dict:
    claims = {}
    for shape in SHAPES:
        rs = {(r["init"], r["mapping"]): r for r in rows if r["student"] == shape and r["grid"]}
        etd = {}
        for mapping in MAPPINGS:
            base = rs.get(("random", mapping))
            if not base:
                continue
            target = base["final_validation"]
            for init in ("etd-rand", "etd-impt", "truncation"):
                r = rs.get((init, mapping))
                if r:
                    reach = steps_to_reach(r["history"], target)
                    saved = None if reach is None else round(1 - reach / base["steps"], 3)
                    etd[f"{init}/{mapping}"] = {"target": target, "steps": reach, "saved": saved}
        rail_vs_uniform = {
            init: (rs[(init, "rail")]["dev_accuracy"], rs[(init, "uniform")]["dev_accuracy"])
            for init in INITS
            if (init, "rail") in rs and (init, "uniform") in rs
        }
        ga_vs_best = {}
        for init in INITS:
            heur = [
                rs[(init, m)]["dev_accuracy"]
                for m in ("uniform", "last", "rail")
                if (init, m) in rs
            ]
            if heur and (init, "ga") in rs:
                ga_vs_best[init] = (rs[(init, "ga")]["dev_accuracy"], max(heur))
        claims[shape] = {
            "etd_steps_to_random_final": etd,
            "rail_vs_uniform": rail_vs_uniform,
            "ga_vs_best_heuristic": ga_vs_best,
        }
    best3 = max(
        (r for r in rows if r["student"].startswith("L3")),
        key=lambda r: r["dev_accuracy"],
        default=None,
    )
    claims["best_3_layer"] = (
        None
        if best3 is None
        else {
            "row": f"{best3['init']}/{best3['mapping']}/{best3['steps']} steps",
            "dev_accuracy": best3["dev_accuracy"],
            "gap_to_teacher": round(teacher_acc - best3["dev_accuracy"], 4),
            "within_2_points": teacher_acc - best3["dev_accuracy"] <= 0.02,
        }
    )
    return claims


def to_row(shape, init, mapping, metrics, grid: bool) -> dict:
    res, dev = metrics["result"], metrics["dev"]
    return {
        "student": shape,
        "init": init,
        "mapping": mapping if mapping != "ga" else "ga",
        "ga_mapping": res["mapping"] if mapping == "ga" else None,
        "dev_accuracy": dev["student"]["accuracy"],
        "label_loyalty": dev["label_loyalty"],
        "prob_loyalty": dev["prob_loyalty"],
        "train_s": metrics["train_s"],
        "steps": res["steps"],
        "final_validation": res["history"][-1]["accuracy"],
        "best_validation": res["best_validation"]["accuracy"],
        "history": [{"step": h["step"], "accuracy": h["accuracy"]} for h in res["history"]],
        "parameters": metrics["parameters"],
        "grid": grid,
    }


def markdown(report: dict) -> str:
    env = report["environment"]
    out = [
        f"# Distillation on SST-2 (teacher dev accuracy {report['teacher_dev_accuracy']:.4f})",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {env['cpu']}, {env['cores']} cores, GPU: {env['gpu'] or 'none'}",
        "",
        "| student | init | mapping | steps | dev acc | label loyalty | prob loyalty | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        mapping = r["mapping"] + (f" {r['ga_mapping']}" if r["ga_mapping"] else "")
        out.append(
            f"| {r['student']} | {r['init']} | {mapping} | {r['steps']} | "
            f"{r['dev_accuracy']:.4f} | {r['label_loyalty']:.4f} | "
            f"{r['prob_loyalty']:.4f} | {r['train_s']:.0f} |"
        )
    out += ["", "GA search (once per student shape, used by every init's ga row):", ""]
    for shape, ga in report["ga_search"].items():
        out.append(
            f"- {shape}: best mapping {ga['best']}, {ga['evaluations']} mappings scored, "
            f"{ga['search_s']:.0f} s"
        )
    out += ["", "## Seed claims", ""] + claim_lines(report["claims"])
    return "\n".join(out) + "\n"


def claim_lines(claims: dict) -> list[str]:
    out = []
    for shape, c in claims.items():
        if shape == "best_3_layer" or not c["rail_vs_uniform"]:
            continue
        out.append(f"**{shape}**")
        saved = [v["saved"] for v in c["etd_steps_to_random_final"].values() if v["saved"]]
        if saved:
            worst = min(saved)
            out.append(
                f"- Inherited-weight inits reach the random-init student's final validation "
                f"accuracy with {100 * worst:.0f}%-{100 * max(saved):.0f}% fewer steps "
                f"(claim: >= 50%; evaluations every 50 steps bound the resolution)."
            )
        for init, (rail, uni) in c["rail_vs_uniform"].items():
            verdict = "holds" if rail >= uni else "refuted"
            out.append(f"- RAIL-KD >= uniform, {init} init: {rail:.4f} vs {uni:.4f} ({verdict}).")
        for init, (ga, best) in c["ga_vs_best_heuristic"].items():
            verdict = "holds" if ga >= best else "refuted"
            out.append(
                f"- GA mapping >= best heuristic, {init} init: {ga:.4f} vs {best:.4f} ({verdict})."
            )
        out.append("")
    best = claims.get("best_3_layer")
    if best:
        met = "met" if best["within_2_points"] else "missed"
        out.append(
            f"Best 3-layer student: {best['row']}, dev accuracy {best['dev_accuracy']:.4f}, "
            f"{100 * best['gap_to_teacher']:.2f} points below the teacher (target <= 2: "
            f"{met})."
        )
    return out


def long_run(bench, run_dir, rows, ga, shape, args) -> None:
    """The best grid configuration of ``shape``, trained for ``--long-steps``."""
    best = max(
        (r for r in rows if r["student"] == shape and r["grid"]), key=lambda r: r["dev_accuracy"]
    )
    init, mapping = best["init"], best["mapping"]
    cfg = replace(bench.cfg(shape, init, mapping, args.long_steps), eval_every=250)
    genome = ga[shape]["best"] if mapping == "ga" else None
    name = row_name(shape, init, mapping, args.long_steps)
    (res,) = run_dir.run([bench.stage(name, cfg, genome)])
    rows.append(to_row(shape, init, mapping, res.record["metrics"], grid=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("EDGEC_DATA_DIR", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--teacher", default=str(REPO / "runs" / "bench_teacher" / "sst2"))
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_distill"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--steps", type=int, default=300, help="grid steps (equal for every row)")
    parser.add_argument("--long-steps", type=int, default=3000, help="the best 3-layer row, long")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--proxy-steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite distill.md from distill.json without training",
    )
    args = parser.parse_args()
    if args.report_only:
        report = json.loads(Path(args.out, "distill.json").read_text())
        report["claims"] = summarise(report["rows"], report["teacher_dev_accuracy"])
        Path(args.out, "distill.md").write_text(markdown(report))
        print(markdown(report))
        return 0

    from toolchain.log import setup_logging
    from toolchain.pipeline import RunDir

    setup_logging()
    env = environment()
    print(f"# {env}", flush=True)
    bench = Bench(args)
    teacher_acc = json.loads(Path(bench.teacher_dir, "metrics.json").read_text())["dev"]["accuracy"]
    rows, ga = [], {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "teacher_dev_accuracy": teacher_acc,
        "rows": rows,
        "ga_search": ga,
        "environment": env,
        "steps": args.steps,
        "command": "python benchmarks/bench_distill.py " + " ".join(sys.argv[1:]),
    }

    def write():
        report["claims"] = summarise(rows, teacher_acc)
        (out / "distill.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "distill.md").write_text(markdown(report))

    with RunDir(args.run_dir) as run_dir:
        for shape in args.shapes.split(","):
            ga[shape] = bench.search(run_dir, shape)
            for init in INITS:
                if init == "truncation" and not shape.endswith(":H384:A12:F1536"):
                    continue  # truncation keeps the teacher's width
                for mapping in MAPPINGS:
                    cfg = bench.cfg(shape, init, mapping, args.steps)
                    genome = ga[shape]["best"] if mapping == "ga" else None
                    name = row_name(shape, init, mapping, args.steps)
                    (res,) = run_dir.run([bench.stage(name, cfg, genome)])
                    rows.append(to_row(shape, init, mapping, res.record["metrics"], grid=True))
                    print(
                        f"{shape} {init} {mapping}: dev {rows[-1]['dev_accuracy']:.4f}", flush=True
                    )
                    write()
            if shape.startswith("L3") and args.long_steps:
                long_run(bench, run_dir, rows, ga, shape, args)
                write()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
