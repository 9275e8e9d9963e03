"""Time to first token, decode speed and peak memory of a decoder LM on a device: the calibrated
latency model of :mod:`toolchain.devices.latency` carried to both phases of generation.

- **Time to first token** (TTFT) at a prompt of N tokens: one pass of N tokens through the
  blocks (Q/O, grouped-query K/V, a gated FFN for Llama) and the LM head at every position (the
  exported graph computes logits for the whole prompt), as
  :meth:`~toolchain.devices.latency.DeviceModel.predict` prices any pass: per-inference and
  per-kernel overheads plus the larger of compute and bytes moved.
- **Decode**: one step of one token that attends to C cached positions. Its work is small; what
  it moves is every weight (the LM head included) and the KV cache of C positions, so on most
  devices it is memory- or launch-bound. ``decode_tok_s`` is 1000 / (p90 step time): the rate
  met by 90 % of steps.
- **Peak memory** at context C: the model's resident memory for the prefill plus the float32 KV
  cache of C positions (2 x layers x C x kv width x 4 bytes).

Every figure keeps the interval and label of the pass it comes from. The CPU family's constants
were fitted on encoder passes (batch 1, seq 16-256): a decode step is outside what they were
fitted on, which the label says; on this host, a build measures its candidates and bundles
instead (:func:`toolchain.export.generate.measure_generation`).

Example::

    model = model_for(get_profile("jetson"), "int4")
    predict_generation(model, decoder_shape(adapter.shape, vocab=49152), prompt=128, context=512)
"""

from __future__ import annotations

from dataclasses import replace

from toolchain.devices.latency import BYTES_PER_WEIGHT, MB, Shape


def decoder_shape(shape, *, vocab: int, gated: bool = True) -> Shape:
    """The latency model's :class:`Shape` of a decoder of
    :class:`~toolchain.models.adapters.Shape` ``shape`` (seq and cache set per phase)."""
    kv_heads = getattr(shape, "kv_heads", None) or shape.heads
    head_dim = shape.hidden // shape.heads
    return Shape(
        shape.layers,
        shape.hidden,
        shape.heads,
        shape.ffn,
        seq=1,
        vocab=vocab,
        kv_hidden=kv_heads * head_dim,
        ffn_mats=3 if gated else 2,
        lm_head=True,
    )


def predict_generation(model, shape: Shape, *, prompt: int, context: int) -> dict:
    """TTFT (prefill of ``prompt`` tokens), decode tokens/s at ``context`` positions and peak
    memory of ``shape`` on ``model``'s device (a :class:`~toolchain.devices.latency.DeviceModel`).

    Returns ``{"ttft_ms", "ttft_lo_ms", "ttft_hi_ms", "step_ms", "step_hi_ms", "decode_tok_s",
    "decode_tok_s_lo", "memory_mb", "memory_hi_mb", "kv_cache_mb", "label", "assumed"}``; the
    ``_lo``/``_hi`` ends are the pass model's interval (``decode_tok_s_lo``: at the slow end).
    """
    if prompt < 1 or context < prompt:
        raise ValueError(f"need 1 <= prompt <= context, got prompt {prompt}, context {context}")
    prefill = model.predict(replace(shape, seq=prompt, cached=0))
    step = model.predict(replace(shape, seq=1, cached=context - 1))
    kv_mb = shape.kv_cache_bytes(context) / MB
    return {
        "ttft_ms": prefill["latency_ms"],
        "ttft_lo_ms": prefill["latency_lo_ms"],
        "ttft_hi_ms": prefill["latency_hi_ms"],
        "step_ms": step["latency_ms"],
        "step_hi_ms": step["latency_hi_ms"],
        "decode_tok_s": round(1000 / step["latency_ms"], 2),
        "decode_tok_s_lo": round(1000 / step["latency_hi_ms"], 2),
        "memory_mb": round(prefill["memory_mb"] + kv_mb, 1),
        "memory_hi_mb": round(prefill["memory_hi_mb"] + kv_mb, 1),
        "kv_cache_mb": round(kv_mb, 2),
        "prompt": prompt,
        "context": context,
        "percentile": prefill["percentile"],
        "label": prefill["label"],
        "bound": {"prefill": prefill["bound"], "decode": step["bound"]},
        "assumed": prefill["assumed"] + "; decode: one token attending to the cache, p90",
    }


def weight_mb(shape: Shape, precision: str) -> float:
    """MB of the weights at ``precision`` (the embedding table included)."""
    return (shape.weights() + shape.embedding()) * BYTES_PER_WEIGHT[precision] / MB


__all__ = ["decoder_shape", "predict_generation", "weight_mb"]
