"""Text generation from an exported decoder (``model.onnx`` with past key values) on ONNX Runtime
alone: numpy and onnxruntime, no torch, so a bundle can generate on a device.

:class:`KVDecoder` runs the graph :mod:`toolchain.export.decoder` writes: one prefill of the
prompt, then one step per new token fed only that token and the previous step's ``present.*``
outputs. :func:`pick` chooses a token (greedy, temperature, top-k, top-p);
:func:`generate` streams text pieces with stop strings and measures time to first token and
decode tokens/s. Written by hand: onnxruntime-genai wants its own model folder (its model
builder, not this graph), and transformers' ``generate`` needs torch.

Example::

    sess = onnxruntime.InferenceSession("model.onnx")
    run = generate(sess, prompt_ids, decode=tok.decode, max_new_tokens=40, stop=["\\n\\n"])
    for piece in run:
        print(piece, end="", flush=True)
    run.stats  # {"ttft_ms", "decode_tok_s", "new_tokens", "stopped_by"}
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


def decode_feeds(sess, ids: np.ndarray, mask: np.ndarray, past: dict, past_len: int) -> dict:
    """The graph's inputs for ``ids`` (B, T) after ``past_len`` cached positions: position ids
    from the mask (left padding allowed), and empty (B, kv_heads, 0, head_dim) caches where
    ``past`` has none."""
    names = {i.name: i for i in sess.get_inputs()}
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "position_ids" in names:
        pos = np.cumsum(mask, axis=1) - 1
        feeds["position_ids"] = np.maximum(pos, 0)[:, -ids.shape[1] :].astype(np.int64)
    for name, info in names.items():
        if name.startswith("past_key_values"):
            if name in past:
                feeds[name] = past[name]
            else:
                heads, dim = info.shape[1], info.shape[3]
                dtype = np.float16 if "float16" in info.type else np.float32
                feeds[name] = np.zeros((ids.shape[0], heads, past_len, dim), dtype=dtype)
    return {k: v for k, v in feeds.items() if k in names}


def past_from(outputs: dict) -> dict:
    """A step's ``present.*`` outputs as the next step's ``past_key_values.*`` inputs."""
    return {
        name.replace("present", "past_key_values"): value
        for name, value in outputs.items()
        if "present" in name
    }


class KVDecoder:
    """One sequence (batch 1) through a decoder graph with its KV cache."""

    def __init__(self, sess):
        self.sess = sess
        self.outputs = [o.name for o in sess.get_outputs()]
        self.past: dict = {}
        self.length = 0

    def _run(self, ids: np.ndarray) -> np.ndarray:
        mask = np.ones((1, self.length + ids.shape[1]), dtype=np.int64)
        values = self.sess.run(None, decode_feeds(self.sess, ids, mask, self.past, 0))
        out = dict(zip(self.outputs, values, strict=True))
        self.past = past_from(out)
        self.length += ids.shape[1]
        return out["logits"][0, -1]

    def prefill(self, prompt_ids: Sequence[int]) -> np.ndarray:
        """Start a sequence; the logits (vocab,) for the token after the prompt."""
        if len(prompt_ids) == 0:
            raise ValueError("the prompt has no tokens")
        self.past, self.length = {}, 0
        return self._run(np.asarray(prompt_ids, dtype=np.int64)[None, :])

    def step(self, token: int) -> np.ndarray:
        """Append ``token``; the logits for the token after it."""
        return self._run(np.array([[token]], dtype=np.int64))


def pick(
    logits: np.ndarray,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: np.random.Generator | None = None,
) -> int:
    """The next token: argmax when ``temperature`` is 0, else a sample from the softmax at that
    temperature restricted to the ``top_k`` most likely tokens (0: all) and to the smallest set
    whose probability reaches ``top_p``."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    p = np.exp(z[order] - z[order[0]])
    p /= p.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    rng = rng or np.random.default_rng()
    return int(order[rng.choice(len(order), p=p)])


@dataclass
class Generation:
    """An iterator of text pieces; ``stats`` is filled as it runs (complete once exhausted)."""

    pieces: Iterator[str]
    stats: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[str]:
        return self.pieces

    def text(self) -> str:
        return "".join(self.pieces)


def generate(
    sess,
    prompt_ids: Sequence[int],
    *,
    decode: Callable[[list[int]], str],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    eos_ids: Sequence[int] = (),
    seed: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Generation:
    """Stream the continuation of ``prompt_ids`` as text pieces.

    Ends at ``max_new_tokens``, an end-of-sequence token (not shown) or the first stop string
    (the text is cut before it). ``stats``: ``new_tokens``, ``ttft_ms`` (prompt to first token),
    ``decode_tok_s`` (tokens after the first, per second of decoding), ``stopped_by``.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    stats: dict = {}
    rng = np.random.default_rng(seed)

    def pieces() -> Iterator[str]:
        decoder, tokens, shown = KVDecoder(sess), [], ""
        started = clock()
        logits = decoder.prefill(prompt_ids)
        first = last = None
        stats.update(new_tokens=0, stopped_by="max_new_tokens")
        while True:
            token = pick(logits, temperature=temperature, top_k=top_k, top_p=top_p, rng=rng)
            last = clock()
            if first is None:
                first = last
                stats["ttft_ms"] = round((last - started) * 1000, 3)
            if token in eos_ids:
                stats["stopped_by"] = "eos"
                break
            tokens.append(token)
            stats["new_tokens"] = len(tokens)
            text = decode(tokens)
            cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
            if cut >= 0:
                if cut > len(shown):
                    yield text[len(shown) : cut]
                stats["stopped_by"] = "stop"
                break
            # hold back what could still become a stop string (or an incomplete character)
            hold = max((len(s) - 1 for s in stop if s), default=0)
            ready = len(text) - hold if not text.endswith("\ufffd") else len(shown)
            if ready > len(shown):
                yield text[len(shown) : ready]
                shown = text[:ready]
            if len(tokens) >= max_new_tokens:
                if len(text) > len(shown):
                    yield text[len(shown) :]
                break
            logits = decoder.step(token)
        if first is not None and len(tokens) > 1:
            stats["decode_tok_s"] = round((len(tokens) - 1) / max(last - first, 1e-9), 2)

    return Generation(pieces(), stats)


def measure_generation(
    session, *, prompt: int, context: int, vocab: int, rounds: int = 3, seed: int = 0
) -> dict:
    """TTFT and decode speed of a decoder ONNX Runtime ``session`` on this machine: ``rounds``
    sequences of a random ``prompt``-token prompt decoded greedily to ``context`` positions.

    Returns p50/p90 of TTFT over rounds and of the per-step time over every step, with
    ``decode_tok_s`` = 1000 / p90 step (the rate 90 % of steps meet) and ``decode_tok_s_p50``.
    """
    rng = np.random.default_rng(seed)
    ttft, steps = [], []
    decoder = KVDecoder(session)
    decoder.prefill(rng.integers(0, vocab, size=min(prompt, 8)).tolist())  # warm-up
    for _ in range(rounds):
        ids = rng.integers(0, vocab, size=prompt).tolist()
        t0 = time.perf_counter()
        token = pick(decoder.prefill(ids))
        ttft.append((time.perf_counter() - t0) * 1000)
        for _ in range(context - prompt):
            t0 = time.perf_counter()
            token = pick(decoder.step(token))
            steps.append((time.perf_counter() - t0) * 1000)

    def p(values, q):
        return float(np.percentile(values, q)) if values else float("nan")

    out = {
        "ttft_ms": round(p(ttft, 90), 3),
        "ttft_p50_ms": round(statistics.median(ttft), 3),
        "prompt": prompt,
        "context": context,
        "rounds": rounds,
        "percentile": 90,
    }
    if steps:
        out.update(
            step_ms=round(p(steps, 90), 3),
            step_p50_ms=round(statistics.median(steps), 3),
            decode_tok_s=round(1000 / p(steps, 90), 2),
            decode_tok_s_p50=round(1000 / statistics.median(steps), 2),
        )
    return out


__all__ = [
    "Generation",
    "KVDecoder",
    "decode_feeds",
    "generate",
    "measure_generation",
    "past_from",
    "pick",
]
