"""Float ONNX export of encoders (sequence and token classification), and the parity check that
follows every export.

The graph comes from ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch and
sequence), written with an IR version the installed onnxruntime reads (onnx 1.23 would write 14;
onnxruntime 1.31 reads <= 13). A packed checkpoint (``edgec quantize``) is exported through its
dequantized float twin: every quantized Linear becomes a plain Linear holding exactly
``codes * step``, which the low-bit passes (:mod:`toolchain.export.lowbit`) then find and replace.

Example::

    adapter, quant = load_for_export("runs/student-w4a8")
    export_float(adapter, "model.onnx")
    report = check_parity("model.onnx", reference, spec, dev, tolerance=1e-4)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolchain.errors import ExportError

log = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def head_of(config) -> str:
    """The :func:`~toolchain.models.loading.load_model` head of a saved model's config."""
    arch = (getattr(config, "architectures", None) or [""])[0]
    for suffix, head in (
        ("ForSequenceClassification", "sequence-classification"),
        ("ForTokenClassification", "token-classification"),
        ("LMHeadModel", "causal-lm"),
        ("ForCausalLM", "causal-lm"),
    ):
        if arch.endswith(suffix):
            return head
    return "base"


def load_for_export(path: str | Path):
    """``(float adapter, quantization_config or None)`` for a model directory.

    A packed checkpoint comes back as its dequantized float twin (plain Linear and Embedding
    modules holding ``codes * step``) together with its ``quantization_config``.
    """
    import json

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ExportError(f"{path} is not a model directory (no config.json)")
    from toolchain.models.loading import load_errors

    with load_errors(path, "config"):
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    if isinstance(raw, dict) and "quantization_config" in raw:
        from toolchain.quantize.convert import load_quantized, read_quantization_config

        adapter = load_quantized(path)
        dequantize_modules(adapter.model)
        return adapter, read_quantization_config(path)
    import transformers

    from toolchain.models.loading import load_model

    with load_errors(path, "config"):
        config = transformers.AutoConfig.from_pretrained(str(path))
    return load_model(str(path), head=head_of(config)), None


@torch.no_grad()
def dequantize_modules(model: nn.Module) -> None:
    """Replace every QuantLinear / QuantEmbedding by the float module holding its quantized
    weight (``codes * step``); activation quantization is dropped (the export passes add it)."""
    from toolchain.quantize.modules import QuantLinear, quantized_modules

    for name, m in quantized_modules(model).items():
        w = m.weight_quant.codes(m.weight.float()).float()
        w = w * m.weight_quant.step.view(-1, 1)
        if isinstance(m, QuantLinear) and m.from_conv1d:
            from transformers.pytorch_utils import Conv1D

            new = Conv1D(m.out_features, m.in_features)  # keeps the checkpoint layout of GPT-2
            new.weight.copy_(w.T)
            new.bias.copy_(m.bias)
        elif isinstance(m, QuantLinear):
            new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            new.weight.copy_(w)
            if m.bias is not None:
                new.bias.copy_(m.bias)
        else:
            new = nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx)
            new.weight.copy_(w)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)


class _Logits(nn.Module):
    def __init__(self, inner: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self, *args):
        return self.inner(**dict(zip(self.names, args, strict=True))).logits


def export_float(adapter, path: str | Path, *, opset: int = OPSET) -> Path:
    """Export ``adapter``'s logits to one ONNX file with dynamic batch and sequence."""
    import onnx

    path = Path(path)
    if adapter.tokenizer is None:
        raise ExportError("the model has no tokenizer: export needs one to build inputs")
    if adapter.is_decoder:
        raise ExportError("a decoder: use toolchain.export.decoder.export_decoder")
    model = adapter.model.eval().cpu()
    tok = adapter.tokenizer(
        ["an example", "another example sentence"], padding=True, return_tensors="pt"
    )
    names = tuple(n for n in INPUT_NAMES if n in tok)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    token_level = type(model).__name__.endswith("ForTokenClassification")
    out_axes = {0: "batch", 1: "sequence"} if token_level else {0: "batch"}
    try:
        torch.onnx.export(
            _Logits(model, names),
            tuple(tok[n] for n in names),
            str(path),
            input_names=list(names),
            output_names=["logits"],
            dynamic_axes={**axes, "logits": out_axes},
            opset_version=opset,
            dynamo=False,
        )
    except Exception as e:  # the exporter raises many kinds
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    onnx.save(proto, str(path))
    return path


def session(path: str | Path, *, threads: int | None = None):
    """An ONNX Runtime CPU session, with a clear error for a missing or corrupt file."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX file not found: {path}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({e})") from None


def onnx_logits(sess, batch: dict) -> np.ndarray:
    wanted = {i.name for i in sess.get_inputs()}
    feeds = {k: v.numpy().astype(np.int64) for k, v in batch.items() if k in wanted}
    return sess.run(["logits"], feeds)[0]


@torch.no_grad()
def check_parity(
    path: str | Path,
    reference,
    batches: list[dict],
    *,
    tolerance: float,
    min_label_agreement: float = 0.995,
) -> dict:
    """Compare the ONNX model's logits with ``reference`` (the PyTorch model it came from).

    Args:
        batches: model inputs (dicts of CPU tensors, with attention_mask).
        tolerance: the largest allowed |logit difference| (over real tokens).
        min_label_agreement: the share of argmax labels that must agree.

    Returns:
        ``{"max_abs_diff", "label_agreement", "n"}``.

    Raises:
        ExportError: either bound is broken (the message gives both figures).
    """
    sess = session(path)
    model = reference.model.eval().cpu()
    worst, agree, total = 0.0, 0, 0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        ref = model(**inputs).logits.float().numpy()
        got = onnx_logits(sess, inputs)
        if ref.ndim == 3:  # token logits: compare real tokens only
            keep = inputs["attention_mask"].numpy().astype(bool)
            ref, got = ref[keep], got[keep]
        worst = max(worst, float(np.abs(ref - got).max()))
        agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
        total += ref.shape[0]
    result = {"max_abs_diff": worst, "label_agreement": agree / max(total, 1), "n": total}
    if worst > tolerance or result["label_agreement"] < min_label_agreement:
        raise ExportError(
            f"{Path(path).name}: parity with PyTorch failed: max |logit diff| {worst:.3g} "
            f"(allowed {tolerance:g}), label agreement {result['label_agreement']:.4f} "
            f"(required {min_label_agreement})"
        )
    return result
