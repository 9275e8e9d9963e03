"""The trivial baseline of a task, and whether a model is clearly above it.

The trivial model answers the same thing for every input: the most frequent training label
(classification) or the mean training target (regression). Every score a build reports stands
beside it, in the task's own metric: always answering "positive" scores 0.51 accuracy on SST-2 dev
but 0.81 F1 on MRPC, and 0 MCC on CoLA.

"Clearly above" is a one-sided paired bootstrap on the scored examples: the model's metric minus
the trivial model's, recomputed on resamples of the same examples; the model is clearly above
when the ``1 - confidence`` quantile of that gain is above zero. Written here, not taken from
scipy, because the metrics are ours (MCC, F1 of a class, Pearson) and the resampling is paired.

Example::

    trivial = TrivialBaseline.fit(spec, train)
    trivial.scores(spec, dev_labels)                         # {"accuracy": 0.509, ...}
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
    """The constant answer of a task's trivial model, and what it is."""

    prediction: int | float
    description: str

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
        name = spec.labels[label] if spec.labels and label < len(spec.labels) else str(label)
        share = count / len(labels)
        return cls(int(label), f"always answers '{name}' ({share:.1%} of the training labels)")

    def predictions(self, n: int) -> np.ndarray:
        return np.full(n, self.prediction)

    def scores(self, spec: TaskSpec, labels) -> dict:
        """The task's metrics of the constant answer on examples with ``labels``."""
        preds = self.predictions(len(labels))
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
        const = self.predictions(len(labels))
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


def predictions_of(spec: TaskSpec, logits) -> np.ndarray:
    """Predicted labels (classification) or values (regression) from a model's logits."""
    logits = np.asarray(logits)
    if spec.kind == "regression":
        return logits.reshape(len(logits), -1)[:, 0]
    return logits.argmax(-1)


__all__ = ["Gain", "TrivialBaseline", "predictions_of"]
