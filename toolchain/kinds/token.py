"""The token-classification entry of the task-kind registry (named entities, chunking): models
with a token-classification head, word labels read from the **first sub-token** of each word
(the other sub-tokens are ignored, in training and at run time), scored on the dev split in
exact-match span F1 (conlleval) with per-word label and probability loyalty to the teacher,
against the CoNLL baseline (each word's most frequent training tag,
:class:`~toolchain.evaluate.trivial.WordTagBaseline`); the teacher baseline through optimum's
``token-classification`` export and ONNX Runtime's dynamic INT8; bundles run by
:class:`~toolchain.bundle.tagger.TaggerRunner`.

Every ONNX file is scored through the runner the bundle uses (its ``tokenizer.json`` beside it),
so a transformer export and a Cross-View Training tagger (word inputs, :mod:`toolchain.cvt`) are
scored the same way and exactly as they run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.bundle.tagger import TaggerRunner
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.kinds.registry import TaskKind, register_kind
from toolchain.kinds.sequence import optimum_int8
from toolchain.pipeline import hash_path

HEAD = "token-classification"
EXPORT_TASK = "token-classification"
MAX_LEN = 128
SCORE_BATCH = 64


def word_log_probs(onnx: Path, labels, sentences: list[tuple[str, ...]]) -> list[np.ndarray]:
    """Per sentence a (words, labels) array of log-probabilities from the ONNX file ``onnx``
    (its tokenizer beside it), run as its bundle runs it; rows of words the model cannot see
    (cut off at 128 sub-tokens) are NaN."""
    runner = TaggerRunner.from_onnx(onnx, labels, max_len=MAX_LEN)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out: list = [None] * len(sentences)
    for s in range(0, len(order), SCORE_BATCH):
        idx = order[s : s + SCORE_BATCH]
        probs, missing = runner.word_probs([list(sentences[i]) for i in idx])
        for i, p, miss in zip(idx, probs, missing, strict=True):
            rows = np.log(np.maximum(p, 1e-12))
            out[i] = np.vstack([rows, np.full((miss, len(runner.labels)), np.nan)])
    return out


class TokenDevScorer:
    """Scores shipped ONNX files on the dev split: span F1 and word accuracy, per-word label and
    probability loyalty to the teacher (its dev predictions computed once), and the gain over the
    CoNLL baseline. A file shipped by several budgets is scored once (keyed by its bytes)."""

    def __init__(self, spec: TaskSpec, teacher_dir: str | Path, data_dir, *, confidence=0.95):
        self.spec, self.teacher_dir, self.data_dir = spec, Path(teacher_dir), data_dir
        self.confidence = confidence
        self._teacher: list | None = None
        self._dev: list | None = None
        self._trivial = None
        self._scores: dict[str, dict] = {}

    @property
    def dev(self) -> list:
        if self._dev is None:
            self._dev = load_split(self.spec, "dev", self.data_dir)
        return self._dev

    @property
    def trivial(self):
        if self._trivial is None:
            from toolchain.evaluate.trivial import WordTagBaseline

            train = load_split(self.spec, "train", self.data_dir)
            self._trivial = WordTagBaseline.fit(self.spec, train)
        return self._trivial

    def trivial_scores(self) -> dict:
        if "dev" not in self.spec.files or self.trivial is None:
            return {}
        return {
            **self.trivial.scores(self.spec, self.dev),
            "description": self.trivial.describe(self.spec),
            "n": len(self.dev),
        }

    def teacher_logits(self) -> list[np.ndarray]:
        """Per dev sentence the teacher's (words, labels) logits from PyTorch (first sub-token;
        NaN rows for words past 128 sub-tokens)."""
        if self._teacher is None:
            from toolchain.data.encode import encode
            from toolchain.evaluate.evaluate import pad_id_of, predict
            from toolchain.models.loading import load_model

            teacher = load_model(self.teacher_dir, head=HEAD)
            encoded = encode(self.spec, self.dev, teacher.tokenizer, MAX_LEN)
            pred = predict(teacher.model, self.spec, encoded, pad_id=pad_id_of(teacher.tokenizer),
                           desc="teacher dev")  # fmt: skip
            self._teacher = [
                words_from_subwords(enc.word_ids, lg, len(ex.tokens))
                for ex, enc, lg in zip(self.dev, encoded, pred["logits"], strict=True)
            ]
        return self._teacher

    def __call__(self, onnx: Path) -> dict:
        """``{span_f1, accuracy, label_loyalty, prob_loyalty, n, vs_trivial}`` of ``onnx``;
        {} without a dev split."""
        if "dev" not in self.spec.files:
            return {}
        digest = hash_path(Path(onnx))
        if digest not in self._scores:
            self._scores[digest] = self.score_logits(
                word_log_probs(Path(onnx), self.spec.labels, [ex.tokens for ex in self.dev])
            )
        return dict(self._scores[digest])

    def score_logits(self, logits: list[np.ndarray]) -> dict:
        """The dev scores of per-sentence word logits (NaN rows: unseen words, predicted O)."""
        from toolchain.evaluate.loyalty import loyalty
        from toolchain.evaluate.metrics import accuracy, span_f1

        spec, dev = self.spec, self.dev
        o = spec.labels.index("O") if "O" in spec.labels else 0
        preds = [tags_of(lg, o) for lg in logits]
        gold = [[spec.labels[t] for t in ex.tags] for ex in dev]
        out = {
            "span_f1": span_f1([[spec.labels[t] for t in p] for p in preds], gold),
            "accuracy": accuracy([t for p in preds for t in p], [t for ex in dev for t in ex.tags]),
            "words": sum(len(ex.tokens) for ex in dev),
        }
        teacher = np.vstack(self.teacher_logits())
        student = np.vstack(logits)
        seen = np.isfinite(teacher).all(-1) & np.isfinite(student).all(-1)
        out.update(loyalty(teacher[seen], student[seen]))
        out["loyalty_unit"] = "word (first sub-token)"
        if self.trivial is not None:
            gain = self.trivial.compare(spec, dev, preds, confidence=self.confidence)
            out["vs_trivial"] = gain.to_dict()
        return {**out, "n": len(dev)}


def words_from_subwords(word_ids, logits: np.ndarray, n_words: int) -> np.ndarray:
    """(n_words, labels): each word's row at its first sub-token; NaN for words not encoded."""
    out = np.full((n_words, logits.shape[-1]), np.nan)
    previous = None
    for pos, w in enumerate(word_ids):
        if w is not None and w != previous and pos < len(logits):
            out[w] = logits[pos]
        previous = w
    return out


def tags_of(logits: np.ndarray, fallback: int) -> list[int]:
    """Arg-max tag per word; ``fallback`` (the O tag) for a NaN row (a word the model cannot
    see counts as predicted O, as conlleval scores a missing prediction)."""
    seen = np.isfinite(logits).all(-1)
    best = np.where(seen, np.nan_to_num(logits, nan=-np.inf).argmax(-1), fallback)
    return [int(t) for t in best]


def baseline(teacher_dir: str | Path, folder: Path) -> Path:
    """The teacher as a user of optimum would ship it: optimum's ``token-classification``
    export, then ONNX Runtime's dynamic INT8, with the tokenizer beside it."""
    return optimum_int8(teacher_dir, folder, EXPORT_TASK)


TOKEN = register_kind(
    TaskKind(
        name="token-classification",
        spec_kinds=("token-classification",),
        head=HEAD,
        export_task=EXPORT_TASK,
        dev_scorer=TokenDevScorer,
        baseline=baseline,
        bundle_runner=TaggerRunner,
    )
)

__all__ = ["TOKEN", "TokenDevScorer", "baseline", "word_log_probs", "words_from_subwords"]
