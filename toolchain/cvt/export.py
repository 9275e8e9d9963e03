"""ONNX export of a CVT tagger (the primary module only; the auxiliary modules are training
aids), float or with ONNX Runtime's dynamic INT8 of the LSTMs (``DynamicQuantizeLSTM``), the
word-embedding table (a quantized ``Gather``) and the character CNN: those hold nearly every
weight. The prediction module's two small MatMuls stay float: quantized (per-tensor uint8
activations, ``MatMulInteger``) they changed 13.5 % of a small tagger's labels, against none with
the rest quantized. Checked against PyTorch on real sentences like every export.

Inputs ``word_ids`` (B, W), ``char_ids`` (B, W, bytes), ``mask`` (B, W); output ``logits``
(B, W, labels). The folder also holds the word tokenizer and ``export.json`` (format, parity,
``inputs: words``), which the bundle reads.

Example::

    export_cvt(Path("cvt"), Path("export"), fmt="int8-dynamic", sentences=dev_tokens)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from toolchain.cvt.data import collate
from toolchain.cvt.train import load_cvt, predict_words
from toolchain.export.onnx import ExportError

FORMATS = ("fp32", "int8-dynamic")
INT8_OPS = ("LSTM", "Gather", "Conv")
TOLERANCE = {"fp32": 1e-3, "int8-dynamic": None}  # INT8: judged by label agreement
MIN_AGREEMENT = {"fp32": 0.999, "int8-dynamic": 0.97}


def _onnx_fp32(model, tokenizer, path: Path, max_word_bytes: int) -> None:
    sample = collate([["An", "example", "sentence", "."], ["Two", "words"]], tokenizer,
                     max_word_bytes=max_word_bytes)  # fmt: skip
    args = (sample["word_ids"], sample["char_ids"], sample["mask"])
    try:
        torch.onnx.export(
            model, args, str(path), input_names=["word_ids", "char_ids", "mask"],
            output_names=["logits"], opset_version=17, dynamo=False,
            dynamic_axes={"word_ids": {0: "batch", 1: "words"},
                          "char_ids": {0: "batch", 1: "words"},
                          "mask": {0: "batch", 1: "words"}, "logits": {0: "batch", 1: "words"}},
        )  # fmt: skip
    except Exception as e:
        raise ExportError(f"torch.onnx.export of the CVT tagger failed: {e}") from e


def parity(onnx: Path, model, tokenizer, sentences, *, labels, fmt: str, max_word_bytes: int):
    """``{"max_abs_diff", "label_agreement", "n"}`` of the ONNX file against PyTorch on
    ``sentences``, run as the bundle runs it.

    Raises:
        ExportError: the bound of ``fmt`` is broken."""
    from toolchain.bundle.tagger import TaggerRunner

    ref = predict_words(model, tokenizer, sentences, max_word_bytes=max_word_bytes)
    runner = TaggerRunner.from_onnx(onnx, labels, max_len=max(len(s) for s in sentences))
    worst, agree, total = 0.0, 0, 0
    for s in range(0, len(sentences), 64):
        probs, _ = runner.word_probs([list(x) for x in sentences[s : s + 64]])
        for p, r in zip(probs, ref[s : s + 64], strict=True):
            expected = torch.softmax(torch.from_numpy(r), -1).numpy()
            worst = max(worst, float(np.abs(p - expected).max()) if len(p) else 0.0)
            agree += int((p.argmax(-1) == r.argmax(-1)).sum())
            total += len(p)
    out = {"max_abs_diff": worst, "label_agreement": agree / max(total, 1), "n": total,
           "compared": "softmax probabilities"}  # fmt: skip
    tol = TOLERANCE[fmt]
    if (tol is not None and worst > tol) or out["label_agreement"] < MIN_AGREEMENT[fmt]:
        raise ExportError(
            f"CVT {fmt} export differs from PyTorch: max |p diff| {worst:.2e} (bound {tol}), "
            f"label agreement {out['label_agreement']:.4f} (bound {MIN_AGREEMENT[fmt]})"
        )
    return out


def export_cvt(model_dir: Path, out: Path, *, fmt: str, sentences, labels=None) -> dict:
    """Export the CVT tagger in ``model_dir`` to ``out`` (written whole or not at all); its
    ``export.json`` record."""
    from toolchain.export.lowbit import to_dynamic_int8

    if fmt not in FORMATS:
        raise ExportError(f"a CVT tagger exports as {', '.join(FORMATS)}, not {fmt!r}")
    model, tokenizer, config = load_cvt(model_dir)
    labels = labels or [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
    width = model.shape.max_word_bytes
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        tmp = Path(tmp)
        folder = tmp / "out"
        folder.mkdir()
        _onnx_fp32(model, tokenizer, tmp / "float.onnx", width)
        if fmt == "fp32":
            shutil.copyfile(tmp / "float.onnx", folder / "model.onnx")
        else:
            to_dynamic_int8(tmp / "float.onnx", folder / "model.onnx", op_types=INT8_OPS)
        tokenizer.save(str(folder / "tokenizer.json"))
        sentences = [list(s) for s in sentences if s] or [["An", "example", "."]]
        check = parity(folder / "model.onnx", model, tokenizer, sentences, labels=labels,
                       fmt=fmt, max_word_bytes=width)  # fmt: skip
        record = {
            "format": fmt,
            "source": str(Path(model_dir).resolve()),
            "inputs": "words",
            "max_word_bytes": width,
            "parity": check,
            "bytes": (folder / "model.onnx").stat().st_size,
        }
        (folder / "export.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        folder.rename(out)
    return record


def export_checked(model: Path, out: Path, *, spec, fmt: str, parity_samples: int, data_dir):
    """:func:`export_cvt` of ``model`` to ``out`` as ``fmt`` (``auto``: dynamic INT8), its
    parity checked on the first ``parity_samples`` validation sentences of ``spec``."""
    from toolchain.data.readers import load_split

    fmt = "int8-dynamic" if fmt == "auto" else fmt
    rows = load_split(spec, "validation", data_dir)[:parity_samples]
    return export_cvt(model, out, fmt=fmt, sentences=[ex.tokens for ex in rows],
                      labels=list(spec.labels))  # fmt: skip


def export_stage(model: Path, name: str, *, spec, fmt: str, parity_samples: int, data_dir):
    """The pipeline stage ``name`` running :func:`export_checked`."""
    from toolchain.pipeline import Stage

    fmt = "int8-dynamic" if fmt == "auto" else fmt

    def run(ctx) -> dict:
        tmp = ctx.out_dir / "export"
        record = export_checked(model, tmp, spec=spec, fmt=fmt, parity_samples=parity_samples,
                                data_dir=data_dir)  # fmt: skip
        for path in tmp.iterdir():
            path.rename(ctx.out_dir / path.name)
        tmp.rmdir()
        return record

    config = {"format": fmt, "parity": parity_samples}
    return Stage(name, run, config=config, inputs=(Path(model),))


__all__ = ["FORMATS", "export_checked", "export_cvt", "export_stage", "parity"]
