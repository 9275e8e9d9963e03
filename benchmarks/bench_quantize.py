"""Quantization on SST-2: KDLSQ and round-to-nearest (RTN) at W8A8, W4A8, W2A8 and a mixed 3-bit
average (embeddings quantized too), ONNX Runtime's own MatMulNBits quantizer at 2/4/8 bits, and
the step-size initialisations compared. Writes ``benchmarks/results/quantize.json`` and
``quantize.md``.

    python benchmarks/bench_quantize.py --data-dir ../shared/data \\
        --model runs/bench_distill/L3H384A12F1536-truncation-rail-3000

The model is the best student of the distillation benchmark (its float copy supervises the
quantized one). Every row is a pipeline stage under ``--run-dir``: an interrupted benchmark
resumes at the first unfinished row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_distill import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (method, weight bits or None for mixed, avg bits, KDLSQ steps, learning rate)
ROWS = (
    ("rtn", 8, None, 0, 0),
    ("rtn", 4, None, 0, 0),
    ("rtn", 2, None, 0, 0),
    ("rtn", None, 3.0, 0, 0),
    ("kdlsq", 8, None, 300, 5e-5),
    ("kdlsq", 4, None, 800, 5e-5),
    ("kdlsq", 2, None, 2000, 1e-4),
    ("kdlsq", None, 3.0, 1500, 1e-4),
)
INIT_METHODS = ("lsq", "max", "mse")


def row_name(method, bits, avg) -> str:
    return f"{method}-" + (f"w{bits}a8" if bits else f"mixed{avg:g}a8")


def run_stage_row(args, method, bits, avg, steps, lr) -> dict:
    from toolchain.config import DataConfig, QuantizeConfig
    from toolchain.data.tasks import get_task
    from toolchain.pipeline import run_single
    from toolchain.quantize.stage import quantize_stage

    cfg = QuantizeConfig(
        method=method,
        weight_bits=bits or 4,
        act_bits=8,
        avg_bits=avg,
        quantize_embeddings=True,
        steps=max(steps, 1),
        learning_rate=lr or 5e-5,
        eval_every=200,
        eval_samples=1000,
    )
    name = row_name(method, bits, avg)
    stage = quantize_stage(
        model_dir=args.model,
        spec=get_task("sst2"),
        data_dir=args.data_dir,
        cfg=cfg,
        data_cfg=DataConfig(),
        name=name,
    )
    m = run_single(stage, Path(args.run_dir) / name, seed=0).record["metrics"]
    dev = m["dev"]
    row = {
        "model": args.model_label,
        "method": method,
        "w_bits": bits if bits else avg,
        "a_bits": 8,
        "dev_accuracy": dev["quantized"]["accuracy"],
        "float_dev_accuracy": dev["float"]["accuracy"],
        "label_loyalty": dev["label_loyalty"],
        "prob_loyalty": dev["prob_loyalty"],
        "bytes": m["bytes"],
        "compression_vs_fp32": m["compression_vs_fp32"],
        "embeddings_quantized": True,
        "init_sqnr_db_mean": m["init_sqnr_db"]["mean"],
    }
    if "mixed" in m:
        row["mixed"] = True
        row["stored_bits_per_weight"] = m["mixed"]["stored_bits_per_weight"]
        row["widths"] = sorted(set(m["widths"].values()))
    if "training" in m:
        t = m["training"]
        row.update(steps=t["steps"], best_step=t["best_step"], train_s=t["wall_s"], lr=lr)
    return row


def ort_rows(args, bench) -> list[dict]:
    from toolchain.evaluate.evaluate import score
    from toolchain.evaluate.loyalty import loyalty
    from toolchain.export.onnx import export_float
    from toolchain.export.ort_baseline import ort_logits, quantize_matmul_nbits

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        float_path = export_float(bench.model, Path(tmp) / "float.onnx")
        ref = ort_logits(float_path, bench.encoded_dev, pad_id=bench.pad_id)
        for bits in (8, 4, 2):
            path = Path(tmp) / f"w{bits}.onnx"
            quantize_matmul_nbits(float_path, path, bits=bits, block_size=32)
            logits = ort_logits(path, bench.encoded_dev, pad_id=bench.pad_id)
            acc = score(bench.spec, bench.dev, bench.encoded_dev, {"logits": logits})["accuracy"]
            loyal = loyalty(_stack(ref), _stack(logits))
            rows.append(
                {
                    "model": args.model_label,
                    "method": "ort-matmulnbits",
                    "w_bits": bits,
                    "a_bits": 32,
                    "dev_accuracy": acc,
                    "float_dev_accuracy": bench.float_acc,
                    "label_loyalty": loyal["label_loyalty"],
                    "prob_loyalty": loyal["prob_loyalty"],
                    "bytes": path.stat().st_size,
                    "compression_vs_fp32": round(bench.fp32_bytes / path.stat().st_size, 3),
                    "embeddings_quantized": False,
                }
            )
    return rows


def _stack(rows):
    import numpy as np

    return np.stack(rows)


def init_rows(bench) -> list[dict]:
    """Weight SQNR and dev accuracy right after initialisation (no training), per init rule."""
    import copy

    from toolchain.evaluate.evaluate import evaluate
    from toolchain.quantize.calibrate import calibrate, weight_sqnr_db
    from toolchain.quantize.modules import plan_modules, quantize_modules

    rows = []
    for bits in (2, 4):
        plan = plan_modules(bench.model.model, weight_bits=bits, quantize_embeddings=True)
        for method in INIT_METHODS:
            q = copy.deepcopy(bench.model)
            quantize_modules(q.model, plan, act_bits=8)
            calibrate(q.model, bench.calib, weight_init=method, act_init=method)
            sqnr = weight_sqnr_db(q.model)
            acc = evaluate(q, bench.spec, bench.dev)["accuracy"]
            rows.append(
                {
                    "w_bits": bits,
                    "a_bits": 8,
                    "init": method,
                    "weight_sqnr_db_mean": round(sum(sqnr.values()) / len(sqnr), 2),
                    "weight_sqnr_db_min": round(min(sqnr.values()), 2),
                    "dev_accuracy_untrained": acc,
                }
            )
    return rows


class Bench:
    def __init__(self, args):
        import random

        from toolchain.data.encode import batches, encode
        from toolchain.data.readers import load_split
        from toolchain.data.tasks import get_task
        from toolchain.evaluate.evaluate import evaluate, pad_id_of
        from toolchain.models.loading import load_model

        self.spec = get_task("sst2")
        self.model = load_model(args.model, head="sequence-classification")
        self.pad_id = pad_id_of(self.model.tokenizer)
        self.dev = load_split(self.spec, "dev", args.data_dir)
        self.encoded_dev = encode(self.spec, self.dev, self.model.tokenizer, 128)
        self.float_acc = evaluate(self.model, self.spec, self.dev)["accuracy"]
        self.fp32_bytes = sum(p.numel() for p in self.model.model.parameters()) * 4
        train = load_split(self.spec, "train", args.data_dir)
        sample = random.Random(0).sample(train, 256)
        enc = encode(self.spec, sample, self.model.tokenizer, 128)
        self.calib = [b for _, b in batches(enc, 32, pad_id=self.pad_id)]


def claims(rows: list[dict]) -> dict:
    def get(method, bits):
        return next((r for r in rows if r["method"] == method and r["w_bits"] == bits), None)

    out = {}
    w4, w2, rtn2 = get("kdlsq", 4), get("kdlsq", 2), get("rtn", 2)
    if w4:
        drop = 100 * (w4["float_dev_accuracy"] - w4["dev_accuracy"])
        out["kdlsq_w4a8_within_1pt"] = {"drop_points": round(drop, 2), "met": drop <= 1.0}
    if w2:
        drop = 100 * (w2["float_dev_accuracy"] - w2["dev_accuracy"])
        out["kdlsq_w2a8_within_3pt"] = {"drop_points": round(drop, 2), "met": drop <= 3.0}
        out["compression_w2_at_least_14.9x"] = {
            "compression": w2["compression_vs_fp32"],
            "met": w2["compression_vs_fp32"] >= 14.9,
        }
    if w2 and rtn2:
        gap = 100 * (w2["dev_accuracy"] - rtn2["dev_accuracy"])
        out["kdlsq_w2a8_10pt_above_rtn"] = {"gap_points": round(gap, 2), "met": gap >= 10.0}
    return out


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Quantization (SST-2 dev)",
        "",
        f"Model: `{report['model']}`; measured {report['date']} on {env['cpu']} "
        f"({env['cores']} cores, GPU: {env['gpu'] or 'none'}), torch {env['torch']}.",
        "Bytes: the packed checkpoint's `model.safetensors` (KDLSQ, RTN) or the `.onnx` file "
        "(ONNX Runtime, float activations and embeddings); compression against fp32 parameters.",
        "",
        "| method | W | A | dev acc | float acc | drop (pts) | label loyalty | MiB | x fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        width = f"{r['w_bits']:g}" + (" (mixed)" if r.get("mixed") else "")
        act = "float" if r["a_bits"] == 32 else r["a_bits"]
        drop = 100 * (r["float_dev_accuracy"] - r["dev_accuracy"])
        lines.append(
            f"| {r['method']} | {width} | {act} | {r['dev_accuracy']:.4f} | "
            f"{r['float_dev_accuracy']:.4f} | {drop:.2f} | {r['label_loyalty']:.4f} | "
            f"{r['bytes'] / 2**20:.2f} | {r['compression_vs_fp32']:.1f} |"
        )
    lines += ["", "## Targets", ""]
    for key, c in report["claims"].items():
        detail = ", ".join(f"{k} {v}" for k, v in c.items() if k != "met")
        lines.append(f"- {key}: {'met' if c['met'] else 'NOT met'} ({detail})")
    lines += [
        "",
        "## Step-size initialisation (W?A8, embeddings quantized, no training)",
        "",
        "| W | init | weight SQNR mean (dB) | min (dB) | dev acc |",
        "|---|---|---|---|---|",
    ]
    for r in report["init"]:
        lines.append(
            f"| {r['w_bits']} | {r['init']} | {r['weight_sqnr_db_mean']} | "
            f"{r['weight_sqnr_db_min']} | {r['dev_accuracy_untrained']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--model",
        default=str(REPO / "runs" / "bench_distill" / "L3H384A12F1536-truncation-rail-3000"),
    )
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_quantize"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--only", help="comma-separated row names (e.g. kdlsq-w2a8)")
    args = parser.parse_args()
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"no model at {args.model}: run benchmarks/bench_distill.py first")
    args.model = str(Path(args.model).resolve())
    args.model_label = Path(args.model).name
    out = Path(args.out)
    bench = Bench(args)
    rows, started = [], time.perf_counter()
    only = set(args.only.split(",")) if args.only else None

    def write(init, ort) -> None:
        report = {
            "model": args.model_label,
            "date": time.strftime("%Y-%m-%d"),
            "environment": environment(),
            "rows": rows + ort,
            "claims": claims(rows),
            "init": init,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "quantize.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out / "quantize.json")
        (out / "quantize.md").write_text(markdown(report))

    init = init_rows(bench)
    ort = ort_rows(args, bench)
    write(init, ort)
    for method, bits, avg, steps, lr in ROWS:
        if only and row_name(method, bits, avg) not in only:
            continue
        rows.append(run_stage_row(args, method, bits, avg, steps, lr))
        print(json.dumps(rows[-1]), flush=True)
        write(init, ort)
    print((out / "quantize.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
