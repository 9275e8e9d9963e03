"""What the attacks of :mod:`toolchain.evaluate.attack` run against, and the word attack's
resources.

A victim maps examples to class probabilities. It can be built from any of three things:

- a bundle (``NAME.edgec``): verified, then run by its own ONNX Runtime session and tokenizer,
  exactly as `edgec run` runs it;
- an export folder (``model.onnx`` and tokenizer files): ONNX Runtime;
- a Hugging Face model directory: PyTorch.

The word resources are all-MiniLM-L6-v2, installed with edgec: its whole-word input-embedding
rows as the substitution space and its mean-pooled sentence embedding as the similarity
constraint.

Example::

    victim = victim_for("sst2-host.edgec", spec)
    summarize(run_attack(victim, dev[:100], attack="word", resources=word_resources()))
"""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path

import numpy as np

from toolchain.data.tasks import TaskSpec
from toolchain.errors import EdgecError
from toolchain.evaluate.attack import Victim, WordResources
from toolchain.evaluate.loyalty import softmax

log = logging.getLogger(__name__)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def victim_for(
    path: str | Path,
    spec: TaskSpec,
    *,
    max_len: int = 128,
    batch_size: int = 64,
    threads: int | None = None,
    device: str | None = None,
) -> tuple[Victim, str]:
    """``(victim, what it runs)`` for a bundle, an export folder or a model directory."""
    path = Path(path)
    if spec.kind != "classification":
        raise EdgecError(
            f"attacks need a classification task; {spec.name} is {spec.kind} (the attacks flip "
            "a predicted class)"
        )
    if (path / "manifest.json").is_file():
        return _bundle_victim(path, batch_size, threads), f"bundle {path.name} (ONNX Runtime)"
    if (path / "model.onnx").is_file():
        return _onnx_victim(path, spec, max_len, batch_size, threads), f"{path.name}/model.onnx"
    if (path / "config.json").is_file():
        return _torch_victim(path, spec, max_len, batch_size, device), f"{path.name} (PyTorch)"
    raise EdgecError(
        f"{path}: not a bundle (manifest.json), an export (model.onnx) or a Hugging Face model "
        "directory (config.json)"
    )


def _bundle_victim(path: Path, batch_size: int, threads) -> Victim:
    from toolchain.bundle.runtime import BundleRunner

    runner = BundleRunner(path, threads=threads)

    def victim(examples: list) -> np.ndarray:
        out = []
        for chunk in _chunks(examples, batch_size):
            rows = [{"text": ex.text, "text_pair": ex.text_pair} for ex in chunk]
            out.append(softmax(runner.session.run(["logits"], runner.encode(rows))[0]))
        return np.concatenate(out)

    return victim


def _onnx_victim(path: Path, spec, max_len: int, batch_size: int, threads) -> Victim:
    from transformers import AutoTokenizer

    from toolchain.data.encode import batches, encode
    from toolchain.evaluate.evaluate import pad_id_of
    from toolchain.export.onnx import onnx_logits, session

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    sess = session(path / "model.onnx", threads=threads)
    pad = pad_id_of(tokenizer)

    def victim(examples: list) -> np.ndarray:
        encoded = encode(spec, examples, tokenizer, max_len)
        out = [None] * len(examples)
        for idx, batch in batches(encoded, batch_size, pad_id=pad):
            for i, row in zip(idx, onnx_logits(sess, batch), strict=True):
                out[i] = row
        return softmax(np.stack(out))

    return victim


def _torch_victim(path: Path, spec, max_len: int, batch_size: int, device) -> Victim:
    import torch

    from toolchain.data.encode import batches, encode
    from toolchain.evaluate.evaluate import pad_id_of
    from toolchain.models.finetune import head_for, pick_device
    from toolchain.quantize.convert import load_any  # a packed checkpoint: its fake-quant model

    dev = pick_device(device)
    adapter = load_any(path, head=head_for(spec), device=dev)
    adapter.model.eval()
    pad = pad_id_of(adapter.tokenizer)

    @torch.no_grad()
    def victim(examples: list) -> np.ndarray:  # no progress bar: called once per word tried
        encoded = encode(spec, examples, adapter.tokenizer, max_len)
        out = [None] * len(examples)
        for idx, batch in batches(encoded, batch_size, pad_id=pad):
            batch = {k: v.to(dev) for k, v in batch.items() if k != "labels"}
            logits = adapter.model(**batch).logits.float().cpu().numpy()
            for i, row in zip(idx, logits, strict=True):
                out[i] = row
        return softmax(np.stack(out))

    return victim


@functools.lru_cache(maxsize=2)
def word_resources(model: str = "default") -> WordResources:
    """The word attack's resources from ``model`` (default: the installed all-MiniLM-L6-v2):
    whole-word input-embedding rows (alphabetic, two letters or more) and a mean-pooled,
    normalised sentence encoder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from toolchain.models.loading import resolve_model_path

    source = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    encoder = AutoModel.from_pretrained(str(source)).eval()
    table = encoder.get_input_embeddings().weight.detach().numpy()
    vocab = tokenizer.get_vocab()
    words, rows = [], []
    for token, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token.isalpha() and token.isascii() and len(token) >= 2 and token.islower():
            words.append(token)
            rows.append(i)
    vectors = table[rows].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for chunk in _chunks(texts, 64):
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=128,
                            return_tensors="pt")  # fmt: skip
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out)

    log.info("word attack: %d whole words from %s", len(words), source)
    return WordResources(words, vectors, encode, source=f"all-MiniLM-L6-v2 ({source})")


def attack_sample(examples: list, n: int, seed: int) -> list:
    """The fixed sample attacked: ``n`` examples drawn by ``Random(seed)`` (all when fewer), in
    their split order, so every model of a comparison meets the same examples."""
    if len(examples) <= n:
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def robustness(
    path: str | Path,
    spec: TaskSpec,
    examples: list,
    *,
    attacks: tuple[str, ...] = ("char", "word"),
    n: int = 100,
    seed: int = 0,
    max_len: int = 128,
    threads: int | None = None,
    victim: Victim | None = None,
) -> dict:
    """Run each attack on the same seeded sample of ``examples`` against ``path`` (a bundle, an
    export or a model directory).

    Returns:
        ``{"protocol": ..., "<attack>": summary, ...}`` with each summary from
        :func:`toolchain.evaluate.attack.summarize` plus up to three successful examples.
    """
    from toolchain.evaluate.attack import ALIASES, run_attack, summarize

    if victim is None:
        victim, what = victim_for(path, spec, max_len=max_len, threads=threads)
    else:
        what = str(path)
    sample = attack_sample(examples, n, seed)
    out: dict = {
        "protocol": (
            f"{len(sample)} examples drawn with seed {seed} from {len(examples)}; greedy search "
            "by word importance (deletion), untargeted; run against " + what
        ),
        "n": len(sample),
        "seed": seed,
    }
    statuses = []
    for name in attacks:
        name = ALIASES.get(name, name)
        try:
            resources = word_resources() if name == "word" else None
        except (EdgecError, OSError) as e:  # all-MiniLM-L6-v2 not installed: say so, go on
            log.warning("word attack not run: %s", e)
            out[name] = f"not measured: the word attack needs all-MiniLM-L6-v2 ({e})"
            continue
        results = run_attack(victim, sample, attack=name, seed=seed, resources=resources,
                             desc=f"attack {name}")  # fmt: skip
        statuses.append([r.status for r in results])
        summary = summarize(results)
        summary["attack"] = ATTACK_DESCRIPTIONS[name]
        summary["examples"] = [
            {"original": _show(r.original), "perturbed": _show(r.perturbed), "changes": r.changes}
            for r in results
            if r.status == "success"
        ][:3]
        out[name] = summary
    if len(statuses) > 1:
        out["suite"] = suite(statuses)
    return out


def suite(statuses: list[list[str]]) -> dict:
    """The attacks as one suite: an example survives only if no attack succeeded on it.

    Args:
        statuses: per attack, each example's status (``skipped``, ``success``, ``failure``).
    """
    n = len(statuses[0])
    attacked = [i for i in range(n) if statuses[0][i] != "skipped"]
    broken = [i for i in attacked if any(s[i] == "success" for s in statuses)]
    return {
        "n": n,
        "accuracy": round(len(attacked) / n, 4) if n else None,
        "accuracy_under_attack": round((len(attacked) - len(broken)) / n, 4) if n else None,
        "attack_success": round(len(broken) / len(attacked), 4) if attacked else None,
        "rule": "an example counts as robust only if every attack failed on it",
    }


ATTACK_DESCRIPTIONS = {
    "char": "DeepWordBug-style character edits (swap, substitute, delete, insert), "
    "Levenshtein <= 30, no stopwords",
    "word": "TextFooler-style word substitution: 30 nearest all-MiniLM-L6-v2 input-embedding "
    "neighbours (cos >= 0.5), sentence cos >= 0.85 (all-MiniLM-L6-v2), no stopwords, "
    "no POS constraint",
}


def _show(ex) -> str:
    return ex.text if ex.text_pair is None else f"{ex.text} ||| {ex.text_pair}"
