"""Sequence tagging on CoNLL-2003 (NER) and CoNLL-2000 (chunking): the fine-tuned teacher, a
distilled 3-layer student, Cross-View Training (CVT) and CVT without its unlabelled loss, at
100% and 10% of the training labels, each shipped as an ONNX Runtime dynamic-INT8 bundle and
timed round-robin on this host. Writes ``benchmarks/results/tagging.json`` and ``tagging.md``.

    python benchmarks/bench_tagging.py --data-dir ../shared/data

Goals (Clark et al. 2018's claim, answered on our data): CVT within 2 span-F1 points of the
distilled student at 100% labels with >= 3x lower latency; at 10% labels, the unlabelled loss
adds >= 1 F1 to CVT.

Every model is a pipeline stage under ``runs/bench_tagging/`` (git-ignored): an interrupted
benchmark resumes at the first unfinished one. At 10% labels the teacher and the student see
only the labelled 10% (``data.labelled_fraction``, the same sentences for every model); CVT
also reads every training sentence without its label and the unlabelled text of the data folder
(MR/SUBJ sentences, WikiText-2 validation). Latency: batch 1, one real dev sentence per call
(the bundle runner's whole path: words to tokenizer to ONNX Runtime to spans), 5 rounds over the
bundles in turn, 200 sentences a round; p50 over all calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("teacher", "student-L3", "cvt", "cvt-no-unlabelled")


def _done(folder: Path) -> bool:
    return (folder / "stage.json").is_file()


def _train(args, task: str, fraction: float, run: Path) -> dict | None:
    """Train (or find trained) the models of (task, fraction) named by ``--models``; the folders
    and costs of all four, or None while one of them is not trained yet (another process of
    this benchmark may be training it: each model is its own stage)."""
    from toolchain import api
    from toolchain.config import CVTConfig, DataConfig, DistillConfig, TeacherConfig

    data_cfg = DataConfig(labelled_fraction=fraction)
    out = {}
    wanted = set(args.models.split(","))
    epochs = min(args.teacher_epochs / fraction, args.max_teacher_epochs)
    if "teacher" in wanted or _done(run / "teacher"):
        t = api.teacher("default", run / "teacher", task=task, data_dir=args.data_dir,
                        cfg=TeacherConfig(epochs=epochs, eval_every=200,
                                          require_above_trivial=False),
                        data_cfg=data_cfg, seed=0)  # fmt: skip
        out["teacher"] = {"model": t.path, "train_s": _wall(t.path)}
    if "teacher" in out and ("student-L3" in wanted or _done(run / "student-L3")):
        s = api.distill(out["teacher"]["model"], run / "student-L3", task=task,
                        data_dir=args.data_dir,
                        cfg=DistillConfig(student_shape="L3:H384:A12:F1536", init="etd-impt",
                                          steps=args.distill_steps, eval_every=200),
                        data_cfg=data_cfg, seed=0)  # fmt: skip
        out["student-L3"] = {"model": s.path, "train_s": _wall(s.path)}
    for name, unlabelled in (("cvt", True), ("cvt-no-unlabelled", False)):
        if name not in wanted and not _done(run / name):
            continue
        c = api.cvt(run / name, task=task, data_dir=args.data_dir,
                    cfg=CVTConfig(steps=args.cvt_steps, unlabelled=unlabelled, eval_every=250),
                    data_cfg=data_cfg, teacher="default", seed=0)  # fmt: skip
        out[name] = {"model": c.path, "train_s": c.metrics.get("train_s")}
    return out if set(out) == set(MODELS) else None


def _wall(folder: Path) -> float | None:
    rec = Path(folder) / "stage.json"
    return json.loads(rec.read_text()).get("wall_s") if rec.is_file() else None


def _ship(task: str, models: dict, run: Path, data_dir) -> None:
    """Each model exported and bundled for this host: a transformer as `edgec build` ships it
    (``auto``: every format timed here, the fastest that passes parity with PyTorch), a CVT
    tagger as ONNX Runtime dynamic INT8."""
    from toolchain import api

    for name, m in models.items():
        exp = api.export(m["model"], run / f"export-{name}", task=task,
                         fmt="int8-dynamic" if name.startswith("cvt") else "auto",
                         data_dir=data_dir)  # fmt: skip
        m["format"] = exp.metrics.get("format")
        bundle = run / "bundles" / f"{task}-{name}.edgec"
        if not (bundle / "manifest.json").is_file():
            api.bundle(exp.path, bundle, task=task, device="host", data_dir=data_dir,
                       tarball=False, model_card=False)  # fmt: skip
        m["bundle"] = bundle


def _params(model_dir: Path) -> int:
    from toolchain.cvt.train import is_cvt, load_cvt

    if is_cvt(model_dir):
        return sum(p.numel() for p in load_cvt(model_dir)[0].parameters())
    from toolchain.models.loading import load_model

    adapter = load_model(model_dir, head="token-classification")
    return sum(p.numel() for p in adapter.model.parameters())


def _timings(bundles: dict, sentences: list, rounds: int) -> dict:
    """name -> p50/p90 ms of one-sentence calls, measured round-robin (see the docstring)."""
    import numpy as np

    from toolchain.bundle.tagger import TaggerRunner

    runners = {k: TaggerRunner(b, threads=os.cpu_count()) for k, b in bundles.items()}
    for r in runners.values():  # warm-up
        for s in sentences[:20]:
            r.predict([{"tokens": list(s)}])
    times: dict[str, list] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            for s in sentences:
                t0 = time.perf_counter()
                r.predict([{"tokens": list(s)}])
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"p50_ms": round(float(np.percentile(v, 50)), 3),
                "p90_ms": round(float(np.percentile(v, 90)), 3), "calls": len(v)}
            for k, v in times.items()}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("EDGEC_DATA_DIR", "../shared/data"))
    p.add_argument("--tasks", default="conll2003,conll2000")
    p.add_argument("--fractions", default="1.0,0.1")
    p.add_argument("--teacher-epochs", type=float, default=1.0)
    p.add_argument("--distill-steps", type=int, default=800)
    p.add_argument("--cvt-steps", type=int, default=1500)
    p.add_argument("--max-teacher-epochs", type=float, default=3.0,
                   help="at a fraction of the labels the teacher trains teacher-epochs / "
                   "fraction epochs, at most this many")  # fmt: skip
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help="train only these (the others must be trained by another run)",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--retime", action="store_true",
                   help="only time the bundles of the rows in --out's tagging.json again (with "
                   "nothing else running) and rewrite it")  # fmt: skip
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--runs", default=str(REPO / "runs" / "bench_tagging"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from toolchain.data.tasks import get_task
    from toolchain.kinds.token import TokenDevScorer

    if args.retime:
        return _retime(args)
    rows, claims = [], {}
    for task in args.tasks.split(","):
        spec = get_task(task)
        sample = _sample(task, args.data_dir, args.sentences)
        for fraction in (float(f) for f in args.fractions.split(",")):
            run = Path(args.runs) / f"{task}-f{fraction:g}"
            print(f"bench_tagging: {task} at {fraction:.0%} labels -> {run}", flush=True)
            models = _train(args, task, fraction, run)
            if models is None:
                print(f"bench_tagging: {task} at {fraction:.0%}: not every model is trained yet",
                      flush=True)  # fmt: skip
                continue
            _ship(task, models, run, args.data_dir)
            scorer = TokenDevScorer(spec, models["teacher"]["model"], args.data_dir)
            timing = _timings({k: m["bundle"] for k, m in models.items()}, sample, args.rounds)
            trivial = scorer.trivial_scores()
            for name in MODELS:
                m = models[name]
                dev_scores = scorer(m["bundle"] / "model.onnx")
                rows.append({
                    "task": task,
                    "model": name,
                    "labelled_fraction": fraction,
                    "params": _params(m["model"]),
                    "format": m.get("format"),
                    "mb": round((m["bundle"] / "model.onnx").stat().st_size / 1e6, 2),
                    "f1": round(dev_scores["span_f1"], 4),
                    "accuracy": round(dev_scores["accuracy"], 4),
                    "label_loyalty": round(dev_scores["label_loyalty"], 4),
                    "prob_loyalty": round(dev_scores["prob_loyalty"], 4),
                    "p50_ms": timing[name]["p50_ms"],
                    "p90_ms": timing[name]["p90_ms"],
                    "train_s": m["train_s"],
                    "trivial_f1": round(trivial.get("span_f1", float("nan")), 4),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        claims[task] = _claims([r for r in rows if r["task"] == task])
    if not rows:
        return 0
    result = {
        "rows": rows,
        "claims": claims,
        "settings": {k: v for k, v in vars(args).items()
                     if k not in ("out", "runs", "models", "threads")},
        "environment": {"cores": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d"),
                        "runtime": "ONNX Runtime, CPUExecutionProvider"},
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tagging.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "tagging.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


def _sample(task: str, data_dir: str, n: int) -> list:
    import random

    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task

    dev = load_split(get_task(task), "dev", data_dir)
    return [ex.tokens for ex in random.Random(0).sample(dev, min(n, len(dev)))]


def _retime(args) -> int:
    out = Path(args.out)
    result = json.loads((out / "tagging.json").read_text())
    combos = sorted({(r["task"], r["labelled_fraction"]) for r in result["rows"]})
    for task, fraction in combos:
        run = Path(args.runs) / f"{task}-f{fraction:g}"
        bundles = {m: run / "bundles" / f"{task}-{m}.edgec" for m in MODELS}
        timing = _timings(bundles, _sample(task, args.data_dir, args.sentences), args.rounds)
        for r in result["rows"]:
            if (r["task"], r["labelled_fraction"]) == (task, fraction):
                r.update(timing[r["model"]])
                r.pop("calls", None)
        print(f"bench_tagging: {task} at {fraction:.0%}: {timing}", flush=True)
    result["claims"] = {t: _claims([r for r in result["rows"] if r["task"] == t])
                        for t in sorted({r["task"] for r in result["rows"]})}  # fmt: skip
    env = result["environment"]
    env.pop("format", None)  # the first runs' field, wrong for the transformers' bundles
    env.update(runtime="ONNX Runtime, CPUExecutionProvider",
               timed="again with --retime, nothing else running")  # fmt: skip
    (out / "tagging.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "tagging.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


def _claims(rows: list[dict]) -> dict:
    def get(model, frac):
        return next((r for r in rows if r["model"] == model and r["labelled_fraction"] == frac),
                    None)  # fmt: skip

    out = {}
    cvt, student = get("cvt", 1.0), get("student-L3", 1.0)
    if cvt and student:
        gap = round(student["f1"] - cvt["f1"], 4)
        speed = round(student["p50_ms"] / cvt["p50_ms"], 2)
        out["cvt_vs_student_at_100"] = {
            "f1_gap": gap, "speedup": speed,
            "met": gap <= 0.02 and speed >= 3.0,
            "goal": "CVT within 2 F1 of the distilled student with >= 3x lower latency",
        }  # fmt: skip
    with_u, without = get("cvt", 0.1), get("cvt-no-unlabelled", 0.1)
    if with_u and without:
        gain = round(with_u["f1"] - without["f1"], 4)
        out["unlabelled_gain_at_10"] = {
            "gain": gain,
            "met": gain >= 0.01,
            "goal": "the unlabelled loss adds >= 1 F1 at 10% labels",
        }
    return out


def _markdown(r: dict) -> str:
    lines = [
        "# Sequence tagging: transformer teacher and student against Cross-View Training",
        "",
        "`python benchmarks/bench_tagging.py --data-dir ../shared/data` "
        f"({r['environment']['date']}, {r['environment']['cores']} cores; settings: "
        + ", ".join(f"{k} {v}" for k, v in r["settings"].items() if k != "data_dir")
        + "). Every model shipped as a bundle: a transformer in the format `edgec build` ships "
        "(auto: the fastest here that passes parity with PyTorch, the `format` column), CVT as "
        "ONNX Runtime dynamic INT8; F1 is dev span F1 "
        "(conlleval exact match) of the bundle; latency p50/p90 of one-sentence calls through "
        "the bundle runner, measured round-robin on this host"
        + (f" ({r['environment']['timed']})" if r["environment"].get("timed") else "")
        + ". Trivial: each word's most frequent training tag. Dev F1 of CoNLL-2003 is on "
        "valid.txt, which also chose every model's best checkpoint (the task's dev split); "
        "CoNLL-2000's dev is test.txt, its validation a hold-out of train.",
        "",
        "| task | labels | model | format | params | MB | dev F1 | trivial F1 | label loyalty | "
        "p50 ms | p90 ms | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['task']} | {x['labelled_fraction']:.0%} | {x['model']} | {x['format']} | "
            f"{x['params']:,} | "
            f"{x['mb']} | {x['f1']:.4f} | {x['trivial_f1']:.4f} | {x['label_loyalty']:.4f} | "
            f"{x['p50_ms']} | {x['p90_ms']} | {x['train_s']} |"
        )
    lines += ["", "## Goals", ""]
    for task, claims in r["claims"].items():
        for c in claims.values():
            figures = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("goal", "met"))
            lines.append(f"- {task}: {c['goal']}: **{'met' if c['met'] else 'NOT met'}** "
                         f"({figures})")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
