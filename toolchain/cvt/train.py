"""Cross-View Training of the BiLSTM tagger (:mod:`toolchain.cvt.model`).

Training alternates a supervised batch (cross-entropy of the primary module on labelled
sentences) and, with ``cfg.unlabelled``, an unsupervised batch of unlabelled sentences: the
primary module's predictions on the full view, without dropout and without gradient, are the
fixed targets, and the loss is the sum over the auxiliary views of KL(primary || view), computed
with dropout. That loss reaches the shared encoder (embeddings, character CNN, first LSTM
layer) and the auxiliary modules, never the primary module: the views learn to agree with the
full model and the representation they share improves, as in the paper. Adam (the paper used
SGD with momentum; Adam needs no learning-rate search on a new task), gradients clipped.

Word embeddings start from the teacher's sub-word embeddings (``cfg.embeddings: teacher``: a
word's vector is the mean of its sub-tokens' input embeddings, so its size is the teacher's
hidden size) or at random (``scratch``); either way they are trained. The vocabulary is built
from the labelled and the unlabelled sentences alike, also without the unlabelled loss, so the
ablation differs from CVT by the loss alone.

The checkpoint with the best validation span F1 is kept. A killed run resumes from its last
check (``checkpoint_dir``).

Example::

    metrics = train_cvt(Path("out"), spec=get_task("conll2003"), data_dir="../shared/data",
                        cfg=CVTConfig(steps=3000), data_cfg=DataConfig(), teacher="default")
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toolchain.config import CVTConfig, DataConfig
from toolchain.cvt.data import build_vocab, collate, length_batches, unlabelled_sentences
from toolchain.cvt.model import VIEWS, CVTShape, CVTTagger
from toolchain.errors import EdgecError

log = logging.getLogger(__name__)
WEIGHTS = "cvt.pt"
ARCHITECTURE = "CVTTagger"


def supervised_loss(model: CVTTagger, batch: dict) -> torch.Tensor:
    """Cross-entropy of the primary module on labelled words."""
    logits = model(batch["word_ids"], batch["char_ids"], batch["mask"])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1),
                           ignore_index=-100)  # fmt: skip


def unsupervised_loss(model: CVTTagger, batch: dict) -> torch.Tensor:
    """Sum over the auxiliary views of the mean KL(primary || view) over real words; the
    primary module's predictions are fixed targets (no dropout, no gradient)."""
    args = (batch["word_ids"], batch["char_ids"], batch["mask"])
    training = model.training
    with torch.no_grad():
        model.eval()
        target = F.softmax(model(*args), -1)  # (B, W, labels)
        model.train(training)
    views = model.views(*args)
    mask = batch["mask"].to(target.dtype)
    words = mask.sum().clamp(min=1)
    loss = torch.zeros((), dtype=target.dtype)
    log_target = torch.log(target.clamp_min(1e-12))
    for v in VIEWS:
        kl = (target * (log_target - F.log_softmax(views[v], -1))).sum(-1)  # (B, W)
        loss = loss + (kl * mask).sum() / words
    return loss / len(VIEWS)


def teacher_embeddings(teacher, vocab: list[str]) -> torch.Tensor:
    """(len(vocab), hidden): each word's mean sub-token input embedding of ``teacher``
    (padding and unknown: zeros)."""
    from toolchain.models.loading import load_model

    adapter = load_model(teacher, head="base")
    table = adapter.model.get_input_embeddings().weight.detach()
    tok = adapter.tokenizer
    out = torch.zeros((len(vocab), table.size(1)))
    ids = tok(vocab[2:], add_special_tokens=False)["input_ids"]
    for i, row in enumerate(ids, 2):
        if row:
            out[i] = table[row].mean(0)
    return out


def predict_words(model: CVTTagger, tokenizer, sentences, *, max_word_bytes: int,
                  batch_size: int = 64) -> list[np.ndarray]:  # fmt: skip
    """Per sentence the primary module's (words, labels) logits, in PyTorch."""
    model.eval()
    out: list = [None] * len(sentences)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = collate([list(sentences[i]) for i in idx], tokenizer,
                            max_word_bytes=max_word_bytes)  # fmt: skip
            logits = model(batch["word_ids"], batch["char_ids"], batch["mask"]).numpy()
            for b, i in enumerate(idx):
                out[i] = logits[b, : len(sentences[i])]
    return out


def evaluate_tags(spec, examples, logits) -> dict:
    from toolchain.evaluate.metrics import accuracy, span_f1

    pred = [[spec.labels[int(k)] for k in lg.argmax(-1)] for lg in logits]
    gold = [[spec.labels[t] for t in ex.tags] for ex in examples]
    flat_p = [t for p in pred for t in p]
    flat_g = [t for g in gold for t in g]
    return {"span_f1": span_f1(pred, gold), "accuracy": accuracy(flat_p, flat_g)}


def load_cvt(model_dir: str | Path) -> tuple[CVTTagger, object, dict]:
    """``(model, word tokenizer, config)`` of a saved CVT tagger folder."""
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    if ARCHITECTURE not in config.get("architectures", []):
        raise EdgecError(f"{model_dir}: not a CVT tagger (config.json architectures)")
    model = CVTTagger(CVTShape(**config["cvt_shape"]))
    model.load_state_dict(torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True))
    model.eval()
    return model, Tokenizer.from_file(str(model_dir / "tokenizer.json")), config


def is_cvt(model_dir: str | Path) -> bool:
    path = Path(model_dir) / "config.json"
    return path.is_file() and ARCHITECTURE in json.loads(path.read_text()).get("architectures", [])


def train_cvt(
    out_dir: Path,
    *,
    spec,
    data_dir,
    cfg: CVTConfig,
    data_cfg: DataConfig,
    teacher=None,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    device: str | None = None,
) -> dict:
    """Train a CVT tagger for ``spec`` into ``out_dir`` (``cvt.pt``, ``config.json``,
    ``tokenizer.json``, ``metrics.json``); its metrics (see the module docstring)."""
    from toolchain.data.clean import clean
    from toolchain.data.readers import load_split
    from toolchain.models.finetune import pick_device

    if spec.kind != "token-classification":
        raise EdgecError(f"CVT tags words: {spec.name} is a {spec.kind} task, not tagging")
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = pick_device(device)
    raw = load_split(spec, "train", data_dir)
    labelled, report = clean(raw, data_cfg)
    validation = load_split(spec, "validation", data_dir)
    if cfg.eval_samples:
        validation = validation[: cfg.eval_samples]
    unlabelled = unlabelled_sentences(spec, data_dir, cfg.unlabelled_sources, data_cfg, train=raw)
    if cfg.max_unlabelled and len(unlabelled) > cfg.max_unlabelled:
        keep = np.sort(rng.choice(len(unlabelled), cfg.max_unlabelled, replace=False))
        unlabelled = [unlabelled[i] for i in keep]
    tokenizer = build_vocab([list(ex.tokens) for ex in labelled] + unlabelled,
                            size=cfg.vocab_size, min_count=cfg.min_count)  # fmt: skip
    vocab = [w for w, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    init = teacher_embeddings(teacher, vocab) if cfg.embeddings == "teacher" else None
    shape = CVTShape(
        vocab=len(vocab), labels=len(spec.labels),
        word_dim=init.size(1) if init is not None else cfg.word_dim,
        char_filters=cfg.char_filters, hidden=cfg.hidden, hidden2=cfg.hidden2, proj=cfg.proj,
        max_word_bytes=cfg.max_word_bytes, dropout=cfg.dropout,
    )  # fmt: skip
    model = CVTTagger(shape)
    if init is not None:
        model.word.weight.data.copy_(init)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    state = {"step": 0, "best": None, "history": []}
    ckpt = checkpoint_dir / "cvt-last.pt" if checkpoint_dir else None
    if ckpt and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        rng = saved["rng"]
        log.info("CVT: resumed at step %d", state["step"])
    best_path = (checkpoint_dir or out_dir) / "cvt-best.pt"

    sup_len = [len(ex.tokens) for ex in labelled]
    unsup_len = [len(s) for s in unlabelled]
    sup_iter, unsup_iter = iter(()), iter(())
    use_unlabelled = cfg.unlabelled and bool(unlabelled)
    losses = {"sup": [], "unsup": []}

    def next_batch(it, lengths, size):
        try:
            return it, next(it)
        except StopIteration:
            it = iter(length_batches(lengths, size, rng))
            return it, next(it)

    def to_dev(batch):
        return {k: v.to(dev) for k, v in batch.items()}

    def update(loss) -> float:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    while state["step"] < cfg.steps:
        model.train()
        sup_iter, idx = next_batch(sup_iter, sup_len, cfg.batch_size)
        batch = collate([list(labelled[i].tokens) for i in idx], tokenizer,
                        max_word_bytes=shape.max_word_bytes,
                        tags=[list(labelled[i].tags) for i in idx])  # fmt: skip
        losses["sup"].append(update(supervised_loss(model, to_dev(batch))))
        if use_unlabelled and state["step"] >= cfg.unlabelled_after * cfg.steps:
            unsup_iter, idx = next_batch(unsup_iter, unsup_len, cfg.unlabelled_batch_size)
            batch = collate([unlabelled[i] for i in idx], tokenizer,
                            max_word_bytes=shape.max_word_bytes)  # fmt: skip
            losses["unsup"].append(update(unsupervised_loss(model, to_dev(batch))))
        state["step"] += 1
        step = state["step"]
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.cpu()
            scores = evaluate_tags(spec, validation, predict_words(
                model, tokenizer, [ex.tokens for ex in validation],
                max_word_bytes=shape.max_word_bytes))  # fmt: skip
            model.to(dev)
            entry = {
                "step": step,
                "sup_loss": round(float(np.mean(losses["sup"][-cfg.eval_every :])), 4),
                **(
                    {"unsup_loss": round(float(np.mean(losses["unsup"][-cfg.eval_every :])), 4)}
                    if losses["unsup"]
                    else {}
                ),  # fmt: skip
                **{k: round(v, 4) for k, v in scores.items()},
            }
            state["history"].append(entry)
            rate = step / max(time.perf_counter() - t0, 1e-9)
            print(f"edgec cvt: step {step}/{cfg.steps}: validation span F1 "
                  f"{scores['span_f1']:.4f}, sup loss {entry['sup_loss']}"
                  + (f", unsup loss {entry['unsup_loss']}" if "unsup_loss" in entry else "")
                  + f" ({rate:.1f} steps/s)", flush=True)  # fmt: skip
            if state["best"] is None or scores["span_f1"] > state["best"]["span_f1"]:
                state["best"] = {"step": step, **scores}
                best_path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), best_path)
            if ckpt:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                            "state": state, "rng": rng}, tmp)  # fmt: skip
                tmp.replace(ckpt)
    model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
    model.cpu().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / WEIGHTS)
    if best_path.parent == out_dir:
        best_path.unlink()
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "architectures": [ARCHITECTURE],
        "model_type": "edgec-cvt",
        "cvt_shape": shape.to_dict(),
        "id2label": dict(enumerate(spec.labels)),
        "label2id": {label: i for i, label in enumerate(spec.labels)},
        "embeddings": cfg.embeddings,
        "teacher": str(teacher) if cfg.embeddings == "teacher" else None,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    metrics = {
        "best_validation": state["best"],
        "history": state["history"],
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": len(vocab),
        "labelled_sentences": len(labelled),
        "unlabelled_sentences": len(unlabelled) if use_unlabelled else 0,
        "unlabelled_loss": use_unlabelled,
        "cleaning": report.as_dict(),
        "train_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / "metrics.json").write_text(json.dumps({"cvt": metrics}, indent=2) + "\n")
    return metrics


__all__ = [
    "ARCHITECTURE",
    "evaluate_tags",
    "is_cvt",
    "load_cvt",
    "predict_words",
    "supervised_loss",
    "train_cvt",
    "unsupervised_loss",
]
