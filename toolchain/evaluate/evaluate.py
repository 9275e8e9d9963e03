"""Batched evaluation of a model on a task split: the task's metrics (accuracy, F1, MCC,
Pearson/Spearman, span F1, perplexity), with a progress bar.

Example::

    adapter = load_model("runs/teacher", head="sequence-classification")
    evaluate(adapter, get_task("sst2"), load_split(get_task("sst2"), "dev", "../shared/data"))
    # {'accuracy': 0.90, 'n': 872}
"""

from __future__ import annotations

import math

import numpy as np
import torch

from toolchain.data.encode import IGNORE, Encoded, batches, encode
from toolchain.data.tasks import TaskSpec
from toolchain.errors import EdgecError
from toolchain.evaluate import metrics as M
from toolchain.log import progress


def pad_id_of(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else (tokenizer.eos_token_id or 0)


@torch.no_grad()
def predict(
    model,
    spec: TaskSpec,
    encoded: list[Encoded],
    *,
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    desc: str = "eval",
) -> dict:
    """Run ``model`` over ``encoded`` in order.

    Returns:
        ``{"logits": [...]}`` per example (class scores, a regression value, or per-token class
        scores), or for language modelling ``{"nll": summed NLL, "tokens": predicted tokens}``.
    """
    model.eval()
    out: dict = {"logits": [None] * len(encoded), "nll": 0.0, "tokens": 0}
    steps = math.ceil(len(encoded) / batch_size)
    it = batches(encoded, batch_size, pad_id=pad_id)
    for idx, batch in progress(it, total=steps, desc=desc, unit="batch"):
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits = model(**batch).logits.float()
        if spec.kind == "language-modeling":
            nll, n = lm_nll(logits, batch["input_ids"], batch["attention_mask"])
            out["nll"] += nll
            out["tokens"] += n
            continue
        for row, i in enumerate(idx):
            length = int(batch["attention_mask"][row].sum())
            out["logits"][i] = (
                logits[row, :length].cpu().numpy()
                if logits.dim() == 3
                else (logits[row].cpu().numpy())
            )
    return out


def lm_nll(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL and the number of predicted tokens. logits: (B, T, V)."""
    targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)  # (B, T-1)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return float(nll), int((targets != IGNORE).sum())


def score(spec: TaskSpec, examples: list, encoded: list[Encoded], pred: dict) -> dict:
    """The task's metrics from :func:`predict` output."""
    if spec.kind == "language-modeling":
        return {"perplexity": M.perplexity(pred["nll"], pred["tokens"]), "tokens": pred["tokens"]}
    if spec.kind == "token-classification":
        return _score_tokens(spec, examples, encoded, pred["logits"])
    labels = [ex.label for ex in examples]
    if any(v is None for v in labels):
        raise EdgecError(f"{spec.name}: this split has unlabelled examples; it cannot be scored")
    logits = np.stack(pred["logits"])
    if spec.kind == "regression":
        preds = logits.reshape(len(examples), -1)[:, 0]
        return {
            name: fn(preds, labels)
            for name, fn in M.REGRESSION_METRICS.items()
            if name in spec.metrics
        }
    preds = logits.argmax(-1)
    return {name: M.CLASSIFICATION_METRICS[name](preds, labels) for name in spec.metrics}


def _score_tokens(spec: TaskSpec, examples, encoded, logits) -> dict:
    true_tags, pred_tags, correct, total = [], [], 0, 0
    for ex, enc, lg in zip(examples, encoded, logits, strict=True):
        if ex.tags is None:
            raise EdgecError(f"{spec.name}: this split has unlabelled sentences")
        pred = ["O"] * len(ex.tokens)  # words cut off by truncation count as predicted O
        previous = None
        for pos, w in enumerate(enc.word_ids):
            if w is not None and w != previous:
                pred[w] = spec.labels[int(lg[pos].argmax())]
            previous = w
        gold = [spec.labels[t] for t in ex.tags]
        correct += sum(p == g for p, g in zip(pred, gold, strict=True))
        total += len(gold)
        true_tags.append(gold)
        pred_tags.append(pred)
    return {"span_f1": M.span_f1(pred_tags, true_tags), "accuracy": correct / max(total, 1)}


def evaluate(
    adapter,
    spec: TaskSpec,
    examples: list,
    *,
    batch_size: int = 64,
    max_len: int = 128,
    device: torch.device | str | None = None,
    desc: str = "eval",
) -> dict:
    """Score ``adapter`` (a :class:`~toolchain.models.adapters.ModelAdapter`) on ``examples``.

    Returns:
        The task's metrics plus ``n`` (examples scored).
    """
    device = device or next(adapter.model.parameters()).device
    tokenizer = adapter.tokenizer
    if tokenizer is None:
        raise EdgecError("the model has no tokenizer: save one beside it (tokenizer files)")
    encoded = encode(spec, examples, tokenizer, max_len)
    pred = predict(
        adapter.model,
        spec,
        encoded,
        pad_id=pad_id_of(tokenizer),
        batch_size=batch_size,
        device=device,
        desc=desc,
    )
    out = {**score(spec, examples, encoded, pred), "n": len(examples)}
    if spec.kind == "language-modeling":
        out["protocol"] = lm_protocol(max_len)
    return out


def lm_protocol(max_len: int) -> str:
    """How a perplexity was computed (what :func:`~toolchain.data.encode.encode` does)."""
    return (
        f"lines joined with newlines, no special tokens, cut into non-overlapping blocks of "
        f"{max_len} tokens (stride {max_len}); each block's first token has no context; "
        "perplexity = exp(summed next-token NLL / predicted tokens)"
    )


def compare(
    teacher,
    student,
    spec: TaskSpec,
    examples: list,
    *,
    batch_size: int = 64,
    max_len: int = 128,
    device=None,
) -> dict:
    """Score ``student`` and ``teacher`` on the same examples and measure the student's loyalty
    (label and probability loyalty; classification and token tasks).

    Returns:
        ``{"student": metrics, "teacher": metrics, "label_loyalty": ..., "prob_loyalty": ...}``
    """
    from toolchain.evaluate.loyalty import loyalty

    device = device or next(student.model.parameters()).device
    tokenizer = student.tokenizer or teacher.tokenizer
    encoded = encode(spec, examples, tokenizer, max_len)
    pad = pad_id_of(tokenizer)
    out = {}
    logits = {}
    for name, adapter in (("student", student), ("teacher", teacher)):
        pred = predict(
            adapter.model.to(device),
            spec,
            encoded,
            pad_id=pad,
            batch_size=batch_size,
            device=device,
            desc=f"{name}",
        )
        out[name] = {**score(spec, examples, encoded, pred), "n": len(examples)}
        logits[name] = _first_token_logits(spec, encoded, pred["logits"])
    if spec.kind in ("classification", "token-classification"):
        out.update(loyalty(logits["teacher"], logits["student"]))
    return out


def _first_token_logits(spec: TaskSpec, encoded: list[Encoded], logits: list) -> np.ndarray:
    """(N, C) logits: one row per example, or per word (first sub-word) for token tasks."""
    if spec.kind == "language-modeling":
        return np.zeros((0, 1))
    if spec.kind != "token-classification":
        return np.stack(logits)
    rows = []
    for enc, lg in zip(encoded, logits, strict=True):
        previous = None
        for pos, w in enumerate(enc.word_ids):
            if w is not None and w != previous:
                rows.append(lg[pos])
            previous = w
    return np.stack(rows)
