"""The language-modelling entry of the task-kind registry: decoder LMs (GPT-2 and Llama
families) scored by perplexity on the dev split with a stated protocol, with next-token loyalty
to the teacher, the unigram model as the trivial baseline, the teacher exported with its KV cache
and ONNX Runtime's dynamic INT8 as the baseline, and bundles run by
:class:`~toolchain.bundle.generator.GeneratorRunner`.

Perplexity protocol (:func:`protocol`): the dev text's lines joined with newlines, no special
tokens, its first ``max_tokens`` tokens cut into non-overlapping blocks of ``block`` tokens
(stride = block); each block's first token is predicted from nothing and not scored. The same
blocks score the teacher (PyTorch) and every shipped ONNX file.

Loyalty for a decoder: next-token agreement (the student's argmax equals the teacher's, over
every scored position) and probability loyalty, 1 - sqrt(JSD) as for classifiers
(:mod:`toolchain.evaluate.loyalty`) but over the teacher's top-64 tokens plus one bucket for the
rest of the vocabulary: storing full 49k-way distributions of 16k positions would take 3 GB.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np

from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.kinds.registry import TaskKind, register_kind
from toolchain.pipeline import hash_path

HEAD = "causal-lm"
EXPORT_TASK = "text-generation-with-past"
EVAL_TOKENS = 16384  # the dev tokens scored (the first N of the split)
BLOCK = 256
TOP_K = 64

log = logging.getLogger(__name__)


def protocol(max_tokens: int = EVAL_TOKENS, block: int = BLOCK, split: str = "dev") -> str:
    """How every perplexity of a decoder build is computed (see the module docstring)."""
    return (
        f"the first {max_tokens} tokens of the {split} split (lines joined with newlines, no "
        f"special tokens) in non-overlapping blocks of {block} tokens (stride {block}); each "
        "block's first token has no context and is not scored; perplexity = exp(mean NLL)"
    )


def lm_blocks(lines: list[str], tokenizer, *, max_tokens: int, block: int) -> list[list[int]]:
    """The token blocks of :func:`protocol` from ``lines``."""
    ids: list[int] = []
    for line in lines:
        ids.extend(tokenizer(line + "\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= max_tokens:
            break
    ids = ids[:max_tokens]
    return [ids[i : i + block] for i in range(0, len(ids), block) if len(ids[i : i + block]) > 1]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _top(logp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argpartition(-logp, k - 1, axis=-1)[:, :k]
    return idx, np.take_along_axis(logp, idx, -1)


def _loyalty(t_idx, t_logp, s_logp) -> np.ndarray:
    """Per-position 1 - sqrt(JSD) over the teacher's top-k tokens plus a rest bucket."""
    p = np.exp(t_logp)
    q = np.exp(np.take_along_axis(s_logp, t_idx, -1))
    p = np.concatenate([p, np.clip(1 - p.sum(-1, keepdims=True), 0, 1)], -1)
    q = np.concatenate([q, np.clip(1 - q.sum(-1, keepdims=True), 0, 1)], -1)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * (np.log2(p) - np.log2(m)), 0).sum(-1)
        kl_q = np.where(q > 0, q * (np.log2(q) - np.log2(m)), 0).sum(-1)
    return 1 - np.sqrt(np.clip(0.5 * kl_p + 0.5 * kl_q, 0, 1))


class Unigram:
    """The trivial language model: token frequencies of the training text, add-one smoothed."""

    def __init__(self, counts: Counter, vocab: int):
        self.counts, self.vocab = counts, vocab
        self.total = sum(counts.values())

    def perplexity(self, blocks: list[list[int]]) -> float:
        nll, n = 0.0, 0
        for b in blocks:
            for t in b[1:]:
                nll -= math.log((self.counts.get(t, 0) + 1) / (self.total + self.vocab))
                n += 1
        return math.exp(nll / max(n, 1))


class LMDevScorer:
    """Scores shipped decoder ONNX files on the dev blocks: perplexity, next-token agreement and
    probability loyalty to the teacher (whose top-k next-token distributions are computed once,
    in PyTorch, on first use); each file once (keyed by its bytes)."""

    def __init__(self, spec: TaskSpec, teacher_dir, data_dir, *, confidence=0.95,
                 max_tokens: int = EVAL_TOKENS, block: int = BLOCK):  # fmt: skip
        self.spec, self.teacher_dir, self.data_dir = spec, Path(teacher_dir), data_dir
        self.max_tokens, self.block = max_tokens, block
        self._blocks: list[list[int]] | None = None
        self._teacher: dict | None = None
        self._trivial: dict | None = None
        self._scores: dict[str, dict] = {}

    def _tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.teacher_dir))

    @property
    def blocks(self) -> list[list[int]]:
        if self._blocks is None:
            lines = load_split(self.spec, "dev", self.data_dir)
            self._blocks = lm_blocks(lines, self._tokenizer(), max_tokens=self.max_tokens,
                                     block=self.block)  # fmt: skip
        return self._blocks

    def trivial_scores(self) -> dict:
        """The unigram model of the training text on the dev blocks."""
        if self._trivial is None:
            tok = self._tokenizer()
            counts: Counter = Counter()
            for line in load_split(self.spec, "train", self.data_dir):
                counts.update(tok(line + "\n", add_special_tokens=False)["input_ids"])
            ppl = Unigram(counts, len(tok)).perplexity(self.blocks)
            self._trivial = {
                "perplexity": round(ppl, 3),
                "description": "unigram token frequencies of the training text, add-one smoothed",
                "n": sum(len(b) - 1 for b in self.blocks),
            }
        return dict(self._trivial)

    def teacher(self) -> dict:
        """The teacher on the dev blocks: ``{"perplexity", "tokens", "protocol"}`` (the top-k
        distributions are kept for loyalty)."""
        if self._teacher is None:
            import torch

            from toolchain.models.loading import load_model

            model = load_model(self.teacher_dir, head=HEAD).model.eval()
            nll, n, idx, logp, arg = 0.0, 0, [], [], []
            with torch.no_grad():
                for b in self.blocks:
                    z = model(torch.tensor([b])).logits[0, :-1].float().numpy()
                    lp = _log_softmax(z)
                    nll -= lp[np.arange(len(b) - 1), b[1:]].sum()
                    n += len(b) - 1
                    i, v = _top(lp, TOP_K)
                    idx.append(i)
                    logp.append(v)
                    arg.append(lp.argmax(-1))
            self._teacher = {"perplexity": math.exp(nll / n), "tokens": n, "idx": idx,
                             "logp": logp, "argmax": arg}  # fmt: skip
        t = self._teacher
        return {"perplexity": round(t["perplexity"], 4), "tokens": t["tokens"],
                "protocol": protocol(self.max_tokens, self.block)}  # fmt: skip

    def __call__(self, onnx: Path) -> dict:
        """``{"perplexity", "next_token_agreement", "prob_loyalty", "tokens", "protocol",
        "vs_trivial"}`` of the decoder ``onnx``."""
        digest = hash_path(Path(onnx))
        if digest not in self._scores:
            self._scores[digest] = self._score(Path(onnx))
        return dict(self._scores[digest])

    def _score(self, onnx: Path) -> dict:
        from toolchain.export.decoder import full_logits
        from toolchain.export.onnx import session

        self.teacher()
        t = self._teacher
        sess = session(onnx)
        nll, n, agree, loyal = 0.0, 0, 0, []
        for k, b in enumerate(self.blocks):
            z = full_logits(sess, np.array([b], dtype=np.int64))[0, :-1]
            lp = _log_softmax(z)
            nll -= lp[np.arange(len(b) - 1), b[1:]].sum()
            n += len(b) - 1
            agree += int((lp.argmax(-1) == t["argmax"][k]).sum())
            loyal.append(_loyalty(t["idx"][k], t["logp"][k], lp))
        ppl = math.exp(nll / n)
        trivial = self.trivial_scores()["perplexity"]
        return {
            "perplexity": round(ppl, 4),
            "next_token_agreement": round(agree / n, 4),
            "prob_loyalty": round(float(np.concatenate(loyal).mean()), 4),
            "tokens": n,
            "protocol": protocol(self.max_tokens, self.block),
            "vs_trivial": {
                "trivial": trivial,
                "gain": round(trivial - ppl, 3),
                "above": ppl < trivial,
            },  # fmt: skip
        }


def baseline(teacher_dir: str | Path, folder: Path) -> Path:
    """The teacher as a user of optimum + ONNX Runtime would ship it: the decoder with its KV
    cache (optimum's ``text-generation-with-past``), then ONNX Runtime's dynamic INT8, with the
    tokenizer beside it. Returns the ONNX file."""
    from toolchain.export.decoder import export_decoder
    from toolchain.export.lowbit import to_dynamic_int8
    from toolchain.models.loading import load_model

    teacher = load_model(teacher_dir, head=HEAD)
    onnx = export_decoder(teacher, folder / "float")
    to_dynamic_int8(onnx, folder / "model.onnx")
    teacher.tokenizer.save_pretrained(str(folder))
    return folder / "model.onnx"


def _runner(*args, **kwargs):
    from toolchain.bundle.generator import GeneratorRunner

    return GeneratorRunner(*args, **kwargs)


LANGUAGE_MODELING = register_kind(
    TaskKind(
        name="language-modeling",
        spec_kinds=("language-modeling",),
        head=HEAD,
        export_task=EXPORT_TASK,
        dev_scorer=LMDevScorer,
        baseline=baseline,
        bundle_runner=_runner,
    )
)

__all__ = ["LANGUAGE_MODELING", "LMDevScorer", "Unigram", "baseline", "lm_blocks", "protocol"]
