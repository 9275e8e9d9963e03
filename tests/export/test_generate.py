"""toolchain/export/generate.py: token choice (greedy, temperature, top-k, top-p) and streamed
generation from an exported tiny GPT-2 with its KV cache (stop strings, end of sequence, timing)."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.data.tasks import TaskSpec
from toolchain.export.decoder import greedy_decode
from toolchain.export.generate import generate, pick
from toolchain.export.onnx import session
from toolchain.export.stage import export_model


def test_pick_greedy_top_k_top_p_and_seeded_sampling():
    logits = np.array([0.0, 3.0, 2.9, -1.0, 1.0])
    assert pick(logits) == 1  # temperature 0: argmax
    assert pick(logits, temperature=5.0, top_k=1, rng=np.random.default_rng(0)) == 1
    assert pick(logits, temperature=5.0, top_p=0.01, rng=np.random.default_rng(0)) == 1
    two = {pick(logits, temperature=5.0, top_k=2, rng=np.random.default_rng(s)) for s in range(50)}
    assert two == {1, 2}  # only the two most likely, both drawn
    many = [pick(logits, temperature=5.0, rng=np.random.default_rng(7)) for _ in range(3)]
    assert len(set(many)) == 1  # the same seed, the same draw
    flat = {pick(np.zeros(5), temperature=1.0, rng=np.random.default_rng(s)) for s in range(80)}
    assert flat == {0, 1, 2, 3, 4}


@pytest.fixture
def lm(tiny_gpt2, tmp_path):
    """The tiny GPT-2 exported with its KV cache: (session, tokenizer)."""
    (tmp_path / "valid.txt").write_text("the cat sat on the mat\na quick brown fox\n" * 4)
    spec = TaskSpec(name="toy-lm", kind="language-modeling", folder="", format="text",
                    files={"dev": str(tmp_path / "valid.txt")})  # fmt: skip
    tiny_gpt2.model.eval()
    tiny_gpt2.save(tmp_path / "float")
    export_model(tmp_path / "float", tmp_path / "o", fmt="fp32", spec=spec)
    return session(tmp_path / "o" / "model.onnx"), tiny_gpt2.tokenizer


PROMPT = [3, 9, 1, 27, 5]


def test_greedy_generation_streams_the_cached_greedy_tokens_with_timing(lm):
    sess, tok = lm
    tokens, _ = greedy_decode(sess, np.array([PROMPT]), 12)
    run = generate(sess, PROMPT, decode=tok.decode, max_new_tokens=12)
    pieces = list(run)
    assert "".join(pieces) == tok.decode(tokens.tolist())
    assert run.stats["new_tokens"] == 12 and run.stats["stopped_by"] == "max_new_tokens"
    assert run.stats["ttft_ms"] > 0 and run.stats["decode_tok_s"] > 0


def test_a_stop_string_cuts_the_text_before_it(lm):
    sess, tok = lm
    args = {"decode": tok.decode, "max_new_tokens": 24, "temperature": 1.5, "top_k": 8, "seed": 1}
    full = generate(sess, PROMPT, **args).text()
    # the first two characters that appear only from position >= 2 on: a stop string there
    at = next(i for i in range(2, len(full) - 1) if full.find(full[i : i + 2]) == i)
    run = generate(sess, PROMPT, stop=[full[at : at + 2]], **args)
    assert run.text() == full[:at] and run.stats["stopped_by"] == "stop"


def test_an_end_of_sequence_token_ends_without_being_shown(lm):
    sess, tok = lm
    first = int(greedy_decode(sess, np.array([PROMPT]), 1)[0][0])
    run = generate(sess, PROMPT, decode=tok.decode, eos_ids=[first])
    assert run.text() == "" and run.stats == {"new_tokens": 0, "stopped_by": "eos",
                                               "ttft_ms": run.stats["ttft_ms"]}  # fmt: skip


def test_sampling_is_seeded(lm):
    sess, tok = lm
    args = {"decode": tok.decode, "max_new_tokens": 10, "temperature": 1.5, "top_k": 8}
    a = generate(sess, PROMPT, seed=1, **args).text()
    assert a == generate(sess, PROMPT, seed=1, **args).text()
    others = {generate(sess, PROMPT, seed=s, **args).text() for s in range(2, 6)}
    assert others - {a}  # other seeds draw other texts
