"""The sequence classification / regression entry of the task-kind registry: models with a
sequence-classification head, scored on the dev split in the task's metric with label and
probability loyalty to the teacher, the teacher baseline through optimum's
``text-classification`` export and ONNX Runtime's dynamic INT8, bundles run by
:class:`~toolchain.bundle.runtime.BundleRunner`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolchain.bundle.runtime import BundleRunner
from toolchain.data.readers import load_split
from toolchain.data.tasks import TaskSpec
from toolchain.kinds.registry import TaskKind, register_kind
from toolchain.pipeline import hash_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
HEAD = "sequence-classification"
EXPORT_TASK = "text-classification"


class DevScorer:
    """Scores shipped ONNX files on the dev split: the task metric, and label / probability
    loyalty to the teacher (whose dev predictions are computed once, on first use). A file
    shipped by several budgets is scored once (keyed by its bytes)."""

    def __init__(self, spec: TaskSpec, teacher_dir: str | Path, data_dir, *, confidence=0.95):
        self.spec, self.teacher_dir, self.data_dir = spec, Path(teacher_dir), data_dir
        self.confidence = confidence  # of "clearly above the trivial baseline"
        self._teacher: tuple | None = None  # (dev examples, encoded, pad id, teacher logits)
        self._trivial = None
        self._scores: dict[str, dict] = {}

    @property
    def trivial(self):
        """The task's trivial baseline (:class:`~toolchain.evaluate.trivial.TrivialBaseline`),
        from the training labels; None for a task without one."""
        if self._trivial is None:
            from toolchain.evaluate.trivial import TrivialBaseline

            self._trivial = TrivialBaseline.fit(self.spec, load_split(self.spec, "train",
                                                                      self.data_dir))  # fmt: skip
        return self._trivial

    def trivial_scores(self) -> dict:
        """The trivial baseline on the dev split: its metrics and what it answers; {} without
        a dev split or a trivial baseline."""
        if "dev" not in self.spec.files or self.trivial is None:
            return {}
        dev = load_split(self.spec, "dev", self.data_dir)
        labels = [ex.label for ex in dev]
        scores = self.trivial.scores(self.spec, labels)
        return {**scores, "description": self.trivial.describe(self.spec, labels), "n": len(dev)}

    def __call__(self, onnx: Path) -> dict:
        """``{metric: value, label_loyalty, prob_loyalty, n, vs_trivial}`` of ``onnx``; {}
        without a dev split. ``vs_trivial``: the main metric against the trivial baseline's on
        the same examples, with the bootstrap lower bound of the gain."""
        if "dev" not in self.spec.files:
            return {}

        digest = hash_path(Path(onnx))
        if digest not in self._scores:
            self._scores[digest] = self._score(Path(onnx))
        return dict(self._scores[digest])

    def _teacher_dev(self) -> tuple:
        if self._teacher is None:
            from toolchain.data.encode import encode
            from toolchain.evaluate.evaluate import _first_token_logits, pad_id_of, predict
            from toolchain.models.loading import load_model

            teacher = load_model(self.teacher_dir, head=HEAD)
            dev = load_split(self.spec, "dev", self.data_dir)
            encoded = encode(self.spec, dev, teacher.tokenizer, 128)
            pad = pad_id_of(teacher.tokenizer)
            pred = predict(teacher.model, self.spec, encoded, pad_id=pad, desc="teacher dev")
            logits = _first_token_logits(self.spec, encoded, pred["logits"])
            self._teacher = (dev, encoded, pad, logits)
        return self._teacher

    def _score(self, onnx: Path) -> dict:
        from toolchain.evaluate.evaluate import _first_token_logits, score
        from toolchain.evaluate.loyalty import loyalty
        from toolchain.export.ort_baseline import ort_logits

        dev, encoded, pad, teacher_logits = self._teacher_dev()
        logits = ort_logits(onnx, encoded, pad_id=pad)
        out = score(self.spec, dev, encoded, {"logits": logits})
        first = _first_token_logits(self.spec, encoded, logits)
        if self.spec.kind == "classification":
            out.update(loyalty(teacher_logits, first))
        if self.trivial is not None:
            from toolchain.evaluate.trivial import predictions_of

            gain = self.trivial.compare(self.spec, [ex.label for ex in dev],
                                        predictions_of(self.spec, first),
                                        confidence=self.confidence)  # fmt: skip
            out["vs_trivial"] = gain.to_dict()
        return {**out, "n": len(dev)}


def baseline(teacher_dir: str | Path, folder: Path) -> Path:
    """The teacher as a user of optimum would ship it: optimum's ONNX export, then ONNX Runtime's
    dynamic INT8, with the tokenizer beside it. Returns the ONNX file."""
    return optimum_int8(teacher_dir, folder, EXPORT_TASK)


def optimum_int8(teacher_dir: str | Path, folder: Path, task: str) -> Path:
    """optimum's ONNX export of ``teacher_dir`` for its ``task``, then ONNX Runtime's dynamic
    INT8, with the tokenizer beside it in ``folder``; the ONNX file."""
    from optimum.exporters.onnx import main_export

    from toolchain.export.lowbit import to_dynamic_int8

    logging.getLogger("optimum").setLevel(logging.ERROR)
    main_export(str(teacher_dir), output=str(folder / "optimum"), task=task, opset=17)
    to_dynamic_int8(folder / "optimum" / "model.onnx", folder / "model.onnx")
    for name in TOKENIZER_FILES:
        if (folder / "optimum" / name).is_file():
            (folder / name).write_bytes((folder / "optimum" / name).read_bytes())
    return folder / "model.onnx"


SEQUENCE = register_kind(
    TaskKind(
        name="sequence-classification",
        spec_kinds=("classification", "regression"),
        head=HEAD,
        export_task=EXPORT_TASK,
        dev_scorer=DevScorer,
        baseline=baseline,
        bundle_runner=BundleRunner,
    )
)

__all__ = ["SEQUENCE", "DevScorer", "baseline", "optimum_int8"]
