"""Where users load edgec's outputs, on real models and data: a packed KDLSQ checkpoint through
transformers' Auto classes, its ONNX exports (MatMulNBits, INT8 Q/DQ) and a Jetson bundle through
optimum's ORTModelForSequenceClassification, each scored on the whole dev split and compared with
edgec's own runs. Writes ``benchmarks/results/interop.json`` and ``interop.md``.

    python benchmarks/bench_interop.py --data-dir ../shared/data \\
        --model sst2=runs/loyalty/sst2/kdlsq-w4a8 --model cola=runs/loyalty/cola/kdlsq-w4a8

A checkpoint written before packed checkpoints named ``model_type: edgec_lsq`` is first re-saved
in the current format (load_quantized, then save_quantized): what the table shows is what
`edgec quantize` writes now.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_distill import environment  # noqa: E402


def _logits(model, tok, texts, batch=64) -> np.ndarray:
    import torch

    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], padding=True, truncation=True, max_length=128,
                  return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            out.append(model(**enc).logits.float().numpy())
    return np.concatenate(out)


def _score(spec, logits: np.ndarray, labels) -> float:
    from toolchain.evaluate.metrics import accuracy, mcc

    preds = logits.argmax(-1).tolist()
    return mcc(preds, labels) if spec.main_metric == "mcc" else accuracy(preds, labels)


def one(task: str, packed: Path, data_dir: str, tmp: Path) -> dict:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from toolchain import api
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.export.stage import export_model
    from toolchain.quantize.convert import load_quantized, save_quantized

    spec = get_task(task)
    dev = load_split(spec, "dev", data_dir)
    if any(e.text_pair is not None for e in dev):
        raise SystemExit(f"{task}: sentence-pair tasks are not covered by this benchmark")
    texts, labels = [e.text for e in dev], [e.label for e in dev]
    ours = load_quantized(packed)
    current = save_quantized(ours, tmp / "packed", block_size=ours_block(packed))
    row: dict = {"task": task, "metric": spec.main_metric, "n": len(dev), "source": str(packed)}
    from toolchain.evaluate.trivial import TrivialBaseline

    trivial = TrivialBaseline.fit(spec, load_split(spec, "train", data_dir))
    row["trivial"] = trivial.scores(spec, labels)[spec.main_metric]
    row["trivial_answers"] = trivial.describe(spec, labels)
    tok = AutoTokenizer.from_pretrained(str(current))
    reference = _logits(ours.model.eval(), ours.tokenizer, texts)
    row["edgec_load_quantized"] = _score(spec, reference, labels)
    try:  # without the remote code: refused, never random weights
        AutoModelForSequenceClassification.from_pretrained(str(current))
        row["transformers_plain"] = "LOADED (wrong)"
    except ValueError as e:
        asks = "trust_remote_code=True" in str(e)
        row["transformers_plain"] = (
            "refused, asks for trust_remote_code=True" if asks else ("refused: " + str(e)[:120])
        )
        row["transformers_plain_error"] = " ".join(str(e).split())
    start = time.perf_counter()
    hf = AutoModelForSequenceClassification.from_pretrained(str(current), trust_remote_code=True)
    got = _logits(hf.eval(), tok, texts)
    row["transformers_remote_code"] = {
        "score": _score(spec, got, labels),
        "max_abs_logit_diff": float(np.abs(got - reference).max()),
        "label_agreement": float((got.argmax(-1) == reference.argmax(-1)).mean()),
        "load_s": round(time.perf_counter() - start, 1),
    }
    for fmt in ("nbits", "int8-qdq"):
        out = tmp / f"onnx-{fmt}"
        export_model(current, out, fmt=fmt, spec=spec, data_dir=data_dir)
        model = ORTModelForSequenceClassification.from_pretrained(str(out))
        got = _logits(model, tok, texts)
        row[f"optimum_{fmt}"] = {
            "score": _score(spec, got, labels),
            "label_agreement_vs_pytorch": float((got.argmax(-1) == reference.argmax(-1)).mean()),
        }
    api.bundle(tmp / "onnx-int8-qdq", tmp / f"{task}-orin.edgec", device="jetson", task=spec)
    model = ORTModelForSequenceClassification.from_pretrained(str(tmp / f"{task}-orin.edgec"))
    got = _logits(model, tok, texts)
    from toolchain.bundle.runtime import BundleRunner

    runner = BundleRunner(tmp / f"{task}-orin.edgec")
    mine = np.array([[r["scores"][lb] for lb in runner.labels] for r in
                     runner.predict([{"text": t} for t in texts])])  # fmt: skip
    row["optimum_bundle"] = {
        "score": _score(spec, got, labels),
        "label_agreement_vs_edgec_run": float((got.argmax(-1) == mine.argmax(-1)).mean()),
        "providers_listed": runner.manifest["runtime"]["providers"],
        "providers_here": runner.session.get_providers(),
    }
    print(json.dumps(row), flush=True)
    return row


def ours_block(packed: Path) -> int:
    from toolchain.quantize.convert import read_quantization_config

    return read_quantization_config(packed)["block_size"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--model", action="append", required=True, metavar="TASK=PACKED_DIR")
    args = ap.parse_args()
    rows = []
    for item in args.model:
        task, _, path = item.partition("=")
        with tempfile.TemporaryDirectory(prefix="edgec-interop-") as tmp:
            rows.append(one(task, Path(path).resolve(), args.data_dir, Path(tmp)))
    env = environment()
    out = REPO / "benchmarks" / "results"
    data = {"environment": env, "command": " ".join(sys.argv), "rows": rows}
    (out / "interop.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# Loading edgec outputs with transformers and optimum (whole dev split)",
        "",
        f"Command: `{data['command']}`; {env['cpu']}, {env['cores']} cores. Every score is "
        "measured on this host over the whole dev split (ONNX Runtime on the CPU; the Jetson "
        "bundle ran here on its CPU fallback), beside the trivial baseline (the best constant "
        "answer).",
        "",
        "| task | metric | n | trivial baseline | edgec load_quantized | transformers, plain | "
        "transformers, trust_remote_code (max logit diff) | optimum, MatMulNBits export | "
        "optimum, INT8 Q/DQ "
        "export | optimum, Jetson bundle (agreement with edgec run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rc, b = r["transformers_remote_code"], r["optimum_bundle"]
        lines.append(
            f"| {r['task']} | {r['metric']} | {r['n']} | {r['trivial']:.4f} | "
            f"{r['edgec_load_quantized']:.4f} | "
            f"{r['transformers_plain']} | {rc['score']:.4f} ({rc['max_abs_logit_diff']:.2g}) | "
            f"{r['optimum_nbits']['score']:.4f} | {r['optimum_int8-qdq']['score']:.4f} | "
            f"{b['score']:.4f} ({b['label_agreement_vs_edgec_run']:.4f}) |"
        )
    (out / "interop.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
