"""Run a token-classification bundle (named entities, chunks): verified, then word labels and
entity spans on ONNX Runtime, ``tokenizers`` and numpy alone (no torch, no transformers).

Two kinds of model ship in such a bundle, told apart by the manifest's ``runtime.inputs``:

- ``subwords`` (a transformer tagger): the words are encoded with the bundle's sub-word
  tokenizer; each word's label is read from the logits of its **first sub-token** (the other
  sub-tokens are ignored, as in training). Words cut off by ``runtime.max_seq_len`` get no label
  and are counted in ``unlabelled_words``.
- ``words`` (a Cross-View Training BiLSTM tagger, :mod:`toolchain.cvt`): one id per word from the
  bundle's word-level tokenizer (lower-cased) and the word's UTF-8 bytes (at most
  ``runtime.max_word_bytes``) for its character CNN; one label per word.

Input text is split into words at white space and punctuation (``"Paris."`` -> ``Paris``, ``.``,
as CoNLL tokenizes); a row may give its own words as ``{"tokens": [...]}`` instead. Spans are read
from the IOB tags as conlleval reads them (an ``I-X`` after ``O`` or another type opens a span);
a span's score is the mean probability of its words' labels.

Example::

    runner = TaggerRunner("conll2003-host-balanced.edgec")
    runner.predict([{"text": "John Smith flew to Paris."}])
    # [{"words": [...], "labels": ["B-PER", "I-PER", "O", "O", "B-LOC", "O"],
    #   "scores": [0.99, 0.98, ...],
    #   "spans": [{"label": "PER", "text": "John Smith", "start": 0, "end": 10,
    #              "words": [0, 2], "score": 0.97}, ...]}]
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from toolchain.bundle.manifest import BundleError, verify
from toolchain.bundle.runtime import load_listed
from toolchain.evaluate.loyalty import softmax
from toolchain.evaluate.metrics import tag_spans

WORD = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` of each word of ``text`` (white space and punctuation split)."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def word_bytes(words: list[list[str]], width: int) -> np.ndarray:
    """(B, W, width) int64: each word's UTF-8 bytes + 1, zero-padded (0 is padding)."""
    n = max((len(w) for w in words), default=0)
    out = np.zeros((len(words), max(n, 1), width), dtype=np.int64)
    for b, sentence in enumerate(words):
        for i, w in enumerate(sentence):
            raw = w.encode("utf-8")[:width]
            out[b, i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) + 1
    return out


class TaggerRunner:
    """A verified token-classification bundle, ready to tag (see the module docstring).

    Args:
        bundle: the ``NAME.edgec`` folder.
        threads: ONNX Runtime intra-op threads (None: its default).
        trust: a :class:`toolchain.bundle.sign.TrustedKeys` (see
            :class:`~toolchain.bundle.runtime.BundleRunner`).
    """

    def __init__(
        self, bundle: str | Path, *, threads: int | None = None, trust=None, providers=None
    ):
        self.folder = Path(bundle)
        self.manifest = verify(self.folder, trust=trust)
        if self.manifest["task"]["kind"] != "token-classification":
            raise BundleError(f"{self.folder}: not a token-classification bundle")
        tokenizer, session = load_listed(self.folder, self.manifest, threads, providers)
        self._setup(tokenizer, session, self.manifest["labels"], self.manifest["runtime"])

    @classmethod
    def from_onnx(cls, onnx: str | Path, labels, *, max_len: int = 128) -> TaggerRunner:
        """A runner over an exported ONNX file and the ``tokenizer.json`` beside it (an export
        folder, not a bundle: nothing is verified); for scoring exports the same way bundles
        run."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        onnx = Path(onnx)
        tokenizer = Tokenizer.from_file(str(onnx.parent / "tokenizer.json"))
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        pad = (tokenizer.padding or {}) if tokenizer.padding else {}
        rt = {
            "inputs": "words" if "word_ids" in names else "subwords",
            "max_seq_len": max_len,
            "pad_id": pad.get("pad_id", 0),
            "pad_token": pad.get("pad_token", "[PAD]"),
        }
        self = cls.__new__(cls)
        self.folder, self.manifest = onnx.parent, {"runtime": {"model": onnx.name}}
        self._setup(tokenizer, session, labels, rt)
        return self

    def _setup(self, tokenizer, session, labels, rt: dict) -> None:
        self.labels = list(labels)
        self.inputs = rt.get("inputs", "subwords")
        self.max_len = int(rt["max_seq_len"])
        self.tokenizer, self.session = tokenizer, session
        self.tokenizer.no_truncation()
        self.tokenizer.enable_padding(pad_id=int(rt["pad_id"]), pad_token=rt["pad_token"])
        self.max_word_bytes = int(rt.get("max_word_bytes", 16))
        self.feeds = {i.name for i in self.session.get_inputs()}

    def words_of(self, rows: list[dict]) -> list[list[tuple[str, int, int]]]:
        out = []
        for i, row in enumerate(rows):
            if "tokens" in row:
                tokens = row["tokens"]
                if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                    raise BundleError(f"input {i + 1}: 'tokens' must be a list of strings")
                out.append([(t, None, None) for t in tokens])
            elif "text" in row:
                out.append(split_words(str(row["text"])))
            else:
                raise BundleError(f"input {i + 1} has no 'text' or 'tokens' (keys: {sorted(row)})")
        return out

    def word_probs(self, words: list[list[str]]) -> tuple[list[np.ndarray], list[int]]:
        """Per sentence a (words labelled, labels) probability array, and how many words of
        each sentence got no label (cut off by the model's maximum length)."""
        if self.inputs == "words":
            return self._word_model(words)
        return self._subword_model(words)

    def _run(self, feed: dict) -> np.ndarray:
        try:
            return self.session.run(["logits"], {k: v for k, v in feed.items()
                                                 if k in self.feeds})[0]  # fmt: skip
        except Exception as e:  # onnxruntime's own types
            model = self.manifest["runtime"]["model"]
            raise BundleError(f"{self.folder}: ONNX Runtime cannot run {model}: {e}") from None

    def _subword_model(self, words):
        texts = [w if w else [""] for w in words]
        enc = self.tokenizer.encode_batch(texts, is_pretokenized=True)
        width = min(self.max_len, max(len(e.ids) for e in enc))
        ids = np.array([e.ids[:width] for e in enc], dtype=np.int64)
        for b, e in enumerate(enc):  # a sentence cut at max_seq_len keeps its final [SEP]
            sep = sum(e.attention_mask) - 1
            if sep >= width:
                ids[b, -1] = e.ids[sep]
        feed = {
            "input_ids": ids,
            "attention_mask": np.array([e.attention_mask[:width] for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids[:width] for e in enc], dtype=np.int64),
        }
        probs = softmax(self._run(feed).astype(np.float64))
        out, missing = [], []
        for b, (e, sentence) in enumerate(zip(enc, words, strict=True)):
            first: dict[int, int] = {}
            for pos, w in enumerate(e.word_ids[: width - 1]):
                if w is not None and w not in first:
                    first[w] = pos
            n = len(sentence)
            kept = [w for w in range(n) if w in first]
            out.append(
                probs[b, [first[w] for w in kept]] if kept else np.zeros((0, probs.shape[-1]))
            )
            missing.append(n - len(kept))
        return out, missing

    def _word_model(self, words):
        n = [min(len(w), self.max_len) for w in words]
        texts = [w[: self.max_len] if w else [""] for w in words]
        enc = self.tokenizer.encode_batch(texts, is_pretokenized=True)
        width = max(max(n), 1)
        ids = np.zeros((len(words), width), dtype=np.int64)
        mask = np.zeros((len(words), width), dtype=np.int64)
        for b, e in enumerate(enc):
            ids[b, : n[b]] = e.ids[: n[b]]
            mask[b, : n[b]] = 1
        chars = word_bytes([w[: self.max_len] for w in words], self.max_word_bytes)[:, :width]
        probs = softmax(self._run({"word_ids": ids, "char_ids": chars, "mask": mask})
                        .astype(np.float64))  # fmt: skip
        return [probs[b, : n[b]] for b in range(len(words))], [
            len(w) - k for w, k in zip(words, n, strict=True)
        ]

    def predict(self, rows: list[dict]) -> list[dict]:
        """One ``{"words", "labels", "scores", "spans"}`` per row (see the module docstring):
        ``scores`` is each word's probability of its label; ``labels`` and ``scores`` have
        ``null`` for a word the model could not see (``unlabelled_words`` counts them)."""
        if not rows:
            return []
        located = self.words_of(rows)
        words = [[w for w, _, _ in sentence] for sentence in located]
        probs, missing = self.word_probs(words)
        out = []
        for row, sentence, p, miss in zip(rows, located, probs, missing, strict=True):
            best = p.argmax(-1) if len(p) else np.zeros(0, dtype=int)
            tags = [self.labels[int(k)] for k in best]
            conf = [float(p[i, k]) for i, k in enumerate(best)]
            spans = []
            for kind, a, b in tag_spans(tags):
                span = {
                    "label": kind,
                    "words": [a, b],
                    "score": round(float(np.mean(conf[a:b])), 6),
                }
                start, end = sentence[a][1], sentence[b - 1][2]
                if start is not None:
                    span.update(text=row["text"][start:end], start=start, end=end)
                else:
                    span["text"] = " ".join(w for w, _, _ in sentence[a:b])
                spans.append(span)
            result = {
                "words": [w for w, _, _ in sentence],
                "labels": tags + [None] * miss,
                "scores": [round(c, 6) for c in conf] + [None] * miss,
                "spans": spans,
            }
            if miss:
                result["unlabelled_words"] = miss
            out.append(result)
        return out


__all__ = ["TaggerRunner", "split_words", "tag_spans", "word_bytes"]
