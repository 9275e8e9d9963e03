"""The trivial baseline of a task, and whether a model is clearly above it.

The trivial model answers the same thing for every input: for classification the constant that
scores best on the examples being scored (the majority class there, for accuracy), for regression
the mean training target. Every score a build reports stands beside it, in the task's own metric:
always answering "positive" scores 0.51 accuracy on SST-2 dev but 0.81 F1 on MRPC, and 0 MCC on
CoLA; on RTE dev always answering "not_entailment" scores 0.527.

"Clearly above" is a one-sided paired bootstrap on the scored examples: the model's metric minus
the trivial model's, recomputed on resamples of the same examples; the model is clearly above
when the ``1 - confidence`` quantile of that gain is above zero. Written here, not taken from
scipy, because the metrics are ours (MCC, F1 of a class, Pearson) and the resampling is paired.

Example::

    trivial = TrivialBaseline.fit(spec, train)
    trivial.scores(spec, dev_labels)                         # {"accuracy": 0.5092, ...}
    gate = trivial.compare(spec, dev_labels, model_preds)    # gate.clearly_above, gate.lower
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from toolchain.data.tasks import TaskSpec
from toolchain.evaluate import metrics as M

KINDS = ("classification", "regression")


def _metric_fn(spec: TaskSpec, name: str):
    table = M.CLASSIFICATION_METRICS if spec.kind == "classification" else M.REGRESSION_METRICS
    return table[name]


@dataclass(frozen=True)
class Gain:
    """A model against the trivial baseline on the same examples, in ``metric``."""

    metric: str
    model: float
    trivial: float
    gain: float
    lower: float  # the gain's one-sided lower confidence bound
    confidence: float
    n: int

    @property
    def clearly_above(self) -> bool:
        return self.lower > 0

    def to_dict(self) -> dict:
        return {**asdict(self), "clearly_above": self.clearly_above}

    def describe(self) -> str:
        return (
            f"{self.metric} {self.model:.4f} vs {self.trivial:.4f} for the trivial baseline "
            f"(gain {self.gain:+.4f}; {self.confidence:.0%} lower bound {self.lower:+.4f}, "
            f"{self.n} examples)"
        )


@dataclass(frozen=True)
class TrivialBaseline:
    """A task's trivial model: a constant answer. Classification: the constant that scores best
    on the examples being scored (the majority class there for accuracy; for F1, answering the
    positive class), so a model is never called better than trivial because the training split's
    majority happens to be the minority of the evaluation split (RTE: 50.9% 'entailment' in
    train, 44% in our validation split). Regression: the mean training target."""

    prediction: int | float  # the training split's answer (majority label, mean target)
    description: str
    labels: tuple = ()  # the classes a constant may answer

    @classmethod
    def fit(cls, spec: TaskSpec, train: list) -> TrivialBaseline | None:
        """From the training examples' labels; None for kinds without a constant answer here
        (token classification, language modelling) or without labels."""
        labels = [ex.label for ex in train if getattr(ex, "label", None) is not None]
        if spec.kind not in KINDS or not labels:
            return None
        if spec.kind == "regression":
            mean = float(np.mean(labels))
            return cls(mean, f"always predicts the mean training target {mean:.3f}")
        (label, count), *_ = Counter(labels).most_common(1)
        classes = tuple(range(len(spec.labels))) if spec.labels else tuple(sorted(set(labels)))
        return cls(int(label), "always gives the same answer, the best one on the scored split",
                   classes)  # fmt: skip

    def answer(self, spec: TaskSpec, labels) -> int | float:
        """The constant this baseline answers on examples with ``labels``: for classification
        the class whose constant scores best in the task's main metric there."""
        if spec.kind == "regression" or not self.labels:
            return self.prediction
        fn = _metric_fn(spec, spec.main_metric)
        labels = np.asarray(labels)
        return max(self.labels, key=lambda c: (fn(np.full(len(labels), c), labels), -c))

    def describe(self, spec: TaskSpec, labels) -> str:
        """What the constant is on these examples, in words."""
        if spec.kind == "regression":
            return self.description
        c = self.answer(spec, labels)
        name = spec.labels[c] if spec.labels and c < len(spec.labels) else str(c)
        share = float(np.mean(np.asarray(labels) == c)) if len(labels) else 0.0
        return f"always answers '{name}' ({share:.1%} of these examples), the best constant answer"

    def scores(self, spec: TaskSpec, labels) -> dict:
        """The task's metrics of the constant answer on examples with ``labels``."""
        preds = np.full(len(labels), self.answer(spec, labels))
        return {name: _metric_fn(spec, name)(preds, labels) for name in spec.metrics}

    def compare(
        self,
        spec: TaskSpec,
        labels,
        preds,
        *,
        confidence: float = 0.95,
        resamples: int = 1000,
        seed: int = 0,
    ) -> Gain:
        """The model's ``preds`` against the constant answer, in the task's main metric."""
        metric = spec.main_metric
        fn = _metric_fn(spec, metric)
        labels, preds = np.asarray(labels), np.asarray(preds)
        const = np.full(len(labels), self.answer(spec, labels))
        model, trivial = fn(preds, labels), fn(const, labels)
        rng = np.random.default_rng(seed)
        gains = np.empty(resamples)
        for i in range(resamples):
            idx = rng.integers(0, len(labels), len(labels))
            gains[i] = fn(preds[idx], labels[idx]) - fn(const[idx], labels[idx])
        lower = float(np.quantile(gains, 1 - confidence)) if len(labels) else 0.0
        return Gain(
            metric=metric,
            model=float(model),
            trivial=float(trivial),
            gain=float(model - trivial),
            lower=lower,
            confidence=confidence,
            n=len(labels),
        )


@dataclass(frozen=True)
class WordTagBaseline:
    """The trivial baseline of a tagging task: each word gets its most frequent tag in the
    training split (ties to the earlier tag), an unseen word the most frequent tag overall (the
    baseline of the CoNLL shared tasks; always answering the majority tag ``O`` finds no span
    and scores 0 span F1, which no model fails to beat). Compared in span F1, bootstrapped over
    sentences."""

    table: dict  # word -> tag index
    default: int

    @classmethod
    def fit(cls, spec: TaskSpec, train: list) -> WordTagBaseline | None:
        counts: dict[str, Counter] = {}
        overall: Counter = Counter()
        for ex in train:
            if ex.tags is None:
                continue
            for word, tag in zip(ex.tokens, ex.tags, strict=True):
                counts.setdefault(word, Counter())[tag] += 1
                overall[tag] += 1
        if not overall:
            return None
        table = {w: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for w, c in counts.items()}
        return cls(table, overall.most_common(1)[0][0])

    def predict(self, sentences) -> list[list[int]]:
        return [[self.table.get(w, self.default) for w in words] for words in sentences]

    def describe(self, spec: TaskSpec, labels=None) -> str:
        return (
            f"tags each word with its most frequent training tag ({len(self.table)} words "
            f"known; unseen words: '{spec.labels[self.default]}'), the CoNLL baseline"
        )

    def scores(self, spec: TaskSpec, examples) -> dict:
        from toolchain.evaluate.metrics import accuracy, span_f1

        preds = self.predict([ex.tokens for ex in examples])
        gold = [[spec.labels[t] for t in ex.tags] for ex in examples]
        names = [[spec.labels[t] for t in p] for p in preds]
        flat_p = [t for p in preds for t in p]
        flat_g = [t for ex in examples for t in ex.tags]
        return {"span_f1": span_f1(names, gold), "accuracy": accuracy(flat_p, flat_g)}

    def compare(self, spec: TaskSpec, examples, preds, *, confidence=0.95, resamples=1000,
                seed=0) -> Gain:  # fmt: skip
        """A model's per-word tag ``preds`` (one list per sentence) against this baseline in span
        F1, with a paired bootstrap over sentences."""
        from toolchain.evaluate.metrics import spans

        def counts(tags, gold):
            p, g = spans(tags), spans(gold)
            return len(p & g), len(p - g), len(g - p)

        gold = [[spec.labels[t] for t in ex.tags] for ex in examples]
        base = self.predict([ex.tokens for ex in examples])
        model_c = np.array([counts([spec.labels[t] for t in p], g)
                            for p, g in zip(preds, gold, strict=True)]).reshape(-1, 3)  # fmt: skip
        base_c = np.array([counts([spec.labels[t] for t in p], g)
                           for p, g in zip(base, gold, strict=True)]).reshape(-1, 3)  # fmt: skip

        def f1(c):
            tp, fp, fn = c.sum(0)
            return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

        rng = np.random.default_rng(seed)
        n = len(examples)
        gains = np.empty(resamples)
        for i in range(resamples):
            idx = rng.integers(0, n, n)
            gains[i] = f1(model_c[idx]) - f1(base_c[idx])
        model, trivial = f1(model_c), f1(base_c)
        return Gain(
            metric="span_f1",
            model=float(model),
            trivial=float(trivial),
            gain=float(model - trivial),
            lower=float(np.quantile(gains, 1 - confidence)) if n else 0.0,
            confidence=confidence,
            n=n,
        )


def predictions_of(spec: TaskSpec, logits) -> np.ndarray:
    """Predicted labels (classification) or values (regression) from a model's logits."""
    logits = np.asarray(logits)
    if spec.kind == "regression":
        return logits.reshape(len(logits), -1)[:, 0]
    return logits.argmax(-1)


__all__ = ["Gain", "TrivialBaseline", "WordTagBaseline", "predictions_of"]
