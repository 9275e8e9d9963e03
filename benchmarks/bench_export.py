"""Export formats on this host: latency (p50/p90 at batch 1 and 32, sequence 128), file size and
SST-2 dev accuracy of the fine-tuned teacher, the best student and its quantized versions, in
PyTorch eager and ONNX Runtime (fp32, fp16, dynamic INT8, Q/DQ INT8, MatMulNBits 4 and 2 bits),
plus the peer baseline: the teacher through optimum's ONNX export and onnxruntime's
``quantize_dynamic``. Writes ``benchmarks/results/export.json`` and ``export.md``.

    python benchmarks/bench_export.py --data-dir ../shared/data --teacher T --student S \\
        --w4 runs/bench_quantize/kdlsq-w4a8 --w2 runs/bench_quantize/kdlsq-w2a8

Every figure is measured in this one run on this machine; nothing here is a device figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from bench_distill import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = ((1, 128), (32, 128))


def timings(fn, *, warmup: int, runs: int) -> tuple[float, float]:
    """(p50, p90) in ms of ``fn()``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


class Bench:
    def __init__(self, args):
        from toolchain.data.readers import load_split
        from toolchain.data.tasks import get_task

        self.args = args
        self.spec = get_task("sst2")
        self.dev = load_split(self.spec, "dev", args.data_dir)
        self.rows: list[dict] = []

    def inputs(self, tokenizer, batch: int, seq: int) -> dict:
        text = " ".join(["edge"] * seq * 2)
        return dict(
            tokenizer(
                [text] * batch,
                truncation=True,
                max_length=seq,
                padding="max_length",
                return_tensors="pt",
            )
        )

    def accuracy_onnx(self, path: Path, tokenizer) -> float:
        from toolchain.data.encode import encode
        from toolchain.evaluate.evaluate import pad_id_of, score
        from toolchain.export.ort_baseline import ort_logits

        enc = encode(self.spec, self.dev, tokenizer, 128)
        logits = ort_logits(path, enc, pad_id=pad_id_of(tokenizer))
        return score(self.spec, self.dev, enc, {"logits": logits})["accuracy"]

    def onnx_rows(self, model, fmt, exported, tokenizer, runtime="onnxruntime"):
        path, note = exported if isinstance(exported, tuple) else (exported, "")
        from toolchain.export.onnx import onnx_logits, session

        acc = self.accuracy_onnx(path, tokenizer)
        sess = session(path)
        for batch, seq in SHAPES:
            feeds = self.inputs(tokenizer, batch, seq)
            p50, p90 = timings(lambda f=feeds: onnx_logits(sess, f), **self.runs(batch))
            self.add(model, runtime, fmt, batch, seq, p50, p90, path.stat().st_size, acc, note)

    def eager_rows(self, model: str, adapter, nbytes: int):
        import torch

        from toolchain.evaluate.evaluate import evaluate

        acc = evaluate(adapter, self.spec, self.dev)["accuracy"]
        m = adapter.model.eval()
        for batch, seq in SHAPES:
            feeds = self.inputs(adapter.tokenizer, batch, seq)

            def call(f=feeds):
                with torch.no_grad():
                    m(**f)

            p50, p90 = timings(call, **self.runs(batch))
            self.add(model, "pytorch-eager", "fp32", batch, seq, p50, p90, nbytes, acc)

    def runs(self, batch: int) -> dict:
        return {"warmup": 3, "runs": 30 if batch == 1 else 8}

    def add(self, model, runtime, fmt, batch, seq, p50, p90, nbytes, acc, note=""):
        row = {
            "model": model,
            "runtime": runtime,
            "format": fmt,
            "batch": batch,
            "seq": seq,
            "p50_ms": round(p50, 3),
            "p90_ms": round(p90, 3),
            "bytes": nbytes,
            "dev_accuracy": acc,
            "parity": note,
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def export(bench, model_dir: str, fmt: str, out: Path, **cfg) -> tuple[Path, str]:
    """(ONNX path, parity note). A format that fails edgec's parity check is still built and
    measured here, straight from the fp32 export, and its row says so."""
    from toolchain.config import ExportConfig
    from toolchain.export.lowbit import to_dynamic_int8
    from toolchain.export.onnx import ExportError
    from toolchain.export.stage import export_model

    target = out / f"{Path(model_dir).name}-{fmt}{cfg.get('accuracy_level', '')}"
    note_file = target / "parity.txt"
    if not (target / "model.onnx").is_file():
        try:
            report = export_model(
                model_dir,
                target,
                fmt=fmt,
                spec=bench.spec,
                data_dir=bench.args.data_dir,
                cfg=ExportConfig(**cfg),
            )
            note = "passed (max |diff| {max_abs_diff:.3g}, agreement {label_agreement:.4f})"
            note_file.write_text(note.format(**report["parity"]))
        except ExportError as e:
            if fmt != "int8-dynamic":
                raise
            fp32, _ = export(bench, model_dir, "fp32", out)
            target.mkdir(parents=True, exist_ok=True)
            to_dynamic_int8(fp32, target / "model.onnx")
            note_file.write_text(f"FAILED edgec parity: {str(e).split('failed: ')[-1]}")
    return target / "model.onnx", note_file.read_text()


def optimum_baseline(bench, teacher: str, out: Path, tokenizer) -> None:
    """What a user of optimum would do: main_export, then onnxruntime quantize_dynamic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from optimum.exporters.onnx import main_export

    folder = out / "optimum-teacher"
    if not (folder / "model.onnx").is_file():
        main_export(teacher, output=folder, task="text-classification")
    q = folder / "model-dynamic-int8.onnx"
    if not q.is_file():
        logging.disable(logging.WARNING)
        quantize_dynamic(str(folder / "model.onnx"), str(q), weight_type=QuantType.QInt8)
        logging.disable(logging.NOTSET)
    bench.onnx_rows("teacher", "fp32", folder / "model.onnx", tokenizer, runtime="optimum+ort")
    bench.onnx_rows("teacher", "int8-dynamic", q, tokenizer, runtime="optimum+ort")


def markdown(report: dict) -> str:
    env = report["environment"]
    rows = report["rows"]
    # quantized students are compared with their float student's ONNX Runtime fp32 row
    base = {
        (r["model"], r["batch"]): r["p50_ms"]
        for r in rows
        if r["runtime"] == "onnxruntime" and r["format"] == "fp32"
    }
    lines = [
        "# Export formats (SST-2; latency at sequence 128)",
        "",
        f"Measured {report['date']} on {env['cpu']} ({env['cores']} cores, GPU: "
        f"{env['gpu'] or 'none'}), torch {env['torch']}; one run, one machine. Speed-up is the "
        "ONNX Runtime fp32 p50 of the same float model over this row's p50.",
        "",
        "| model | runtime | format | batch | p50 ms | p90 ms | speed-up | MiB | dev acc "
        "| parity |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = base.get((r["model"].split("-")[0], r["batch"]))
        speed = f"{ref / r['p50_ms']:.2f}x" if ref else "-"
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['format']} | {r['batch']} | {r['p50_ms']:.2f} "
            f"| {r['p90_ms']:.2f} | {speed} | {r['bytes'] / 2**20:.1f} | {r['dev_accuracy']:.4f} "
            f"| {(r.get('parity') or '-').replace('|', '&#124;')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--teacher", default=str(REPO / "runs" / "bench_teacher" / "sst2"))
    parser.add_argument(
        "--student",
        default=str(REPO / "runs" / "bench_distill" / "L3H384A12F1536-truncation-rail-3000"),
    )
    parser.add_argument("--w4", default=str(REPO / "runs" / "bench_quantize" / "kdlsq-w4a8"))
    parser.add_argument("--w2", default=str(REPO / "runs" / "bench_quantize" / "kdlsq-w2a8"))
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "bench_export"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--report-only", action="store_true", help="rewrite export.md only")
    args = parser.parse_args()
    if args.report_only:
        report = json.loads((Path(args.out) / "export.json").read_text())
        (Path(args.out) / "export.md").write_text(markdown(report))
        return 0
    from toolchain.export.onnx import load_for_export

    bench = Bench(args)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for label, model_dir in (("teacher", args.teacher), ("student", args.student)):
        adapter, _ = load_for_export(model_dir)
        nbytes = (Path(model_dir) / "model.safetensors").stat().st_size
        bench.eager_rows(label, adapter, nbytes)
        for fmt in ("fp32", "fp16", "int8-dynamic"):
            bench.onnx_rows(label, fmt, export(bench, model_dir, fmt, run_dir), adapter.tokenizer)
        if label == "teacher":
            optimum_baseline(bench, model_dir, run_dir, adapter.tokenizer)
    for label, model_dir in (("student-w4a8", args.w4), ("student-w2a8", args.w2)):
        adapter, _ = load_for_export(model_dir)
        tok = adapter.tokenizer
        bench.onnx_rows(label, "int8-qdq", export(bench, model_dir, "int8-qdq", run_dir), tok)
        for level in (4, 0):
            exported = export(bench, model_dir, "nbits", run_dir, accuracy_level=level)
            bench.onnx_rows(label, f"nbits-acc{level}", exported, tok)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "environment": environment(),
        "rows": bench.rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "export.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
