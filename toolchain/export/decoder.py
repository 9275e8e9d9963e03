"""Decoder export: a causal LM with past key values (GPT-2, Llama families) through optimum's
``text-generation-with-past`` ONNX config, and its parity check (prefill and one decode step).

The graph takes ``input_ids``, ``attention_mask``, ``position_ids`` (where the family uses them)
and ``past_key_values.{i}.key/value`` of shape (batch, kv_heads, past, head_dim), and returns
``logits`` and ``present.{i}.key/value``. Its Linear layers are MatMuls against ``W.T`` like the
encoders', so :mod:`toolchain.export.lowbit` rewrites them the same way.

Example::

    export_decoder(adapter, tmp / "decoder")       # -> tmp/decoder/model.onnx
    check_decoder_parity(tmp / "decoder/model.onnx", adapter, texts, tolerance=1e-3)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from toolchain.export.generate import KVDecoder, decode_feeds, past_from, pick
from toolchain.export.onnx import IR_VERSION, ExportError, session

log = logging.getLogger(__name__)


def export_decoder(adapter, folder: str | Path, *, opset: int = 17) -> Path:
    """Export ``adapter``'s causal LM with past key values into ``folder/model.onnx``.

    The model is saved to a scratch directory and exported from there with optimum's
    ``main_export`` (its exporter patches the mask code for the traced graph; exporting the
    in-memory model object gave wrong decode steps).
    """
    import tempfile

    import onnx
    from optimum.exporters.onnx import main_export

    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="edgec-decoder-") as scratch:
        adapter.model.eval().cpu().save_pretrained(scratch, safe_serialization=True)
        if adapter.tokenizer is not None:
            adapter.tokenizer.save_pretrained(scratch)
        logging.disable(logging.WARNING)  # optimum is chatty about deprecations
        try:
            main_export(
                scratch,
                output=folder,
                task="text-generation-with-past",
                opset=opset,
                do_validation=False,
                local_files_only=True,
            )
        except Exception as e:
            raise ExportError(f"decoder export failed: {type(e).__name__}: {e}") from e
        finally:
            logging.disable(logging.NOTSET)
    path = folder / "model.onnx"
    if not path.is_file():
        raise ExportError(f"optimum wrote no model.onnx into {folder}")
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    for stale in folder.glob("model.onnx*"):
        stale.unlink()
    onnx.save(proto, str(path))
    return path


def full_logits(sess, input_ids: np.ndarray) -> np.ndarray:
    """Logits (batch, T, vocab) of whole sequences in one pass, without a cache (what perplexity
    and a check of the cached decode use)."""
    ids = input_ids.astype(np.int64)
    return sess.run(["logits"], decode_feeds(sess, ids, np.ones_like(ids), {}, 0))[0]


def greedy_decode(sess, input_ids: np.ndarray, max_new_tokens: int) -> tuple[np.ndarray, list]:
    """Greedy generation with the KV cache (:class:`~toolchain.export.generate.KVDecoder`) of
    one prompt (1, T).

    Returns:
        ``(tokens, logits)``: the ``max_new_tokens`` generated ids, and the last-position logits
        (vocab,) that chose each of them.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"greedy_decode takes one prompt of shape (1, T), got {input_ids.shape}")
    decoder = KVDecoder(sess)
    logits = [decoder.prefill(input_ids[0].tolist())]
    tokens = [pick(logits[0])]
    while len(tokens) < max_new_tokens:
        logits.append(decoder.step(tokens[-1]))
        tokens.append(pick(logits[-1]))
    return np.array(tokens, dtype=np.int64), logits


@torch.no_grad()
def check_decoder_parity(
    path: str | Path, reference, texts: list[str], *, tolerance: float, min_agreement: float = 0.99
) -> dict:
    """Prefill ``texts`` and take one greedy decode step in ONNX Runtime and in PyTorch; compare
    the logits (max |diff| over real tokens) and the next-token argmax agreement.

    Raises:
        ExportError: a bound is broken (the message gives both figures).
    """
    sess = session(path)
    tok = reference.tokenizer
    side, tok.padding_side = tok.padding_side, "left"  # generation pads on the left
    try:
        batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    finally:
        tok.padding_side = side
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # what the ONNX feeds use too
    model = reference.model.eval().cpu()
    ref = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    out_names = [o.name for o in sess.get_outputs()]
    outputs = sess.run(None, decode_feeds(sess, ids.numpy(), mask.numpy(), {}, 0))
    got = dict(zip(out_names, outputs, strict=True))
    keep = mask.numpy().astype(bool)
    worst = float(np.abs(ref.logits.numpy()[keep] - got["logits"][keep]).max())
    agree = ref.logits.argmax(-1).numpy()[keep] == got["logits"].argmax(-1)[keep]
    # one decode step fed with the presents
    nxt = ref.logits[:, -1].argmax(-1, keepdim=True)
    mask2 = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    ref2 = model(
        input_ids=nxt,
        attention_mask=mask2,
        position_ids=pos[:, -1:] + 1,
        past_key_values=ref.past_key_values,
    )
    past = past_from(got)
    feeds = decode_feeds(sess, nxt.numpy(), mask2.numpy(), past, ids.shape[1])
    got2 = sess.run(["logits"], feeds)[0]
    worst = max(worst, float(np.abs(ref2.logits.numpy() - got2).max()))
    agree = np.concatenate(
        [agree, ref2.logits.argmax(-1).numpy().ravel() == got2.argmax(-1).ravel()]
    )
    result = {"max_abs_diff": worst, "label_agreement": float(agree.mean()), "n": int(agree.size)}
    if worst > tolerance or result["label_agreement"] < min_agreement:
        raise ExportError(
            f"{Path(path).name}: decoder parity with PyTorch failed: max |logit diff| "
            f"{worst:.3g} (allowed {tolerance:g}), next-token agreement "
            f"{result['label_agreement']:.4f} (required {min_agreement})"
        )
    return result
