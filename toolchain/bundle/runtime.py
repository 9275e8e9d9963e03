"""Run a bundle with ONNX Runtime, ``tokenizers`` and numpy alone: no torch, no transformers.

Example::

    runner = BundleRunner("sst2-host.edgec")          # verifies the hashes first
    runner = BundleRunner("sst2-host.edgec", trust=TrustedKeys.load(["release.key.pub"]))
    runner.predict([{"text": "a gripping film"}])      # [{"label": "positive", "scores": {...}}]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.bundle.manifest import BundleError, read_listed, verify

# short names `edgec run --provider` takes, and the runtime names of device profiles
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
CPU = "CPUExecutionProvider"


def choose_providers(listed: list[str], requested: list[str] | None, available: list[str]):
    """The execution providers a session gets, best first, ending with the CPU as fallback.

    ``requested`` (``edgec run --provider``; short names allowed) must all be available in this
    onnxruntime build; without it, the bundle's ``runtime.providers`` that this build has.

    Raises:
        BundleError: a requested provider that this onnxruntime does not have, naming the
            package that has it.
    """
    if requested:
        wanted = [PROVIDER_NAMES.get(r.lower(), r) for r in requested]
        missing = [w for w in wanted if w not in available]
        if missing:
            raise BundleError(
                f"execution provider {', '.join(missing)} is not available in this onnxruntime "
                f"(available: {', '.join(available)}): CUDA and TensorRT need the onnxruntime-gpu "
                "package (on Jetson, NVIDIA's onnxruntime-gpu wheel for JetPack)"
            )
    else:
        wanted = [p for p in listed if p in available]
    return [*dict.fromkeys([*wanted, CPU])]


def load_listed(
    folder: Path, manifest: dict, threads: int | None = None, providers: list[str] | None = None
) -> tuple:
    """``(tokenizer, ONNX Runtime session)`` of a verified bundle, loaded from bytes read once
    and hashed again, never reopened by path: a file swapped after verify() is refused, not run
    (bundles hold self-contained ONNX, no external data).

    ``providers``: the execution providers asked for (see :func:`choose_providers`); by default
    those the bundle lists that this onnxruntime has, the CPU last as fallback."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    rt = manifest["runtime"]
    tokenizer = read_listed(folder, manifest, rt["tokenizer"])
    model = read_listed(folder, manifest, rt["model"])
    try:
        tokenizer = Tokenizer.from_str(tokenizer.decode("utf-8"))
    except Exception as e:  # tokenizers raises its own exception types
        raise BundleError(f"{folder}: cannot load the tokenizer {rt['tokenizer']}: {e}") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    chosen = choose_providers(
        list(rt.get("providers") or [CPU]), providers, ort.get_available_providers()
    )
    try:
        session = ort.InferenceSession(model, opts, providers=chosen)
    except Exception as e:
        raise BundleError(f"{folder}: ONNX Runtime cannot load {rt['model']}: {e}") from None
    return tokenizer, session


class BundleRunner:
    """A verified bundle, ready to predict.

    Args:
        bundle: the ``NAME.edgec`` folder (a ``.tar.gz`` must be unpacked first, see
            :func:`toolchain.bundle.manifest.unpack`).
        threads: ONNX Runtime intra-op threads (None: its default).
        providers: execution providers (``cpu``, ``cuda``, ``tensorrt`` or ORT's names); by
            default the bundle's ``runtime.providers`` that this onnxruntime has, CPU last.
        trust: a :class:`toolchain.bundle.sign.TrustedKeys`: run the bundle only if one of its
            keys signed it (None: its hashes are checked, its origin is not).
    """

    def __init__(
        self, bundle: str | Path, *, threads: int | None = None, trust=None, providers=None
    ):
        self.folder = Path(bundle)
        # every path the manifest names is a listed, hashed file inside the bundle
        self.manifest = verify(self.folder, trust=trust)
        if self.manifest["task"]["kind"] == "language-modeling":
            raise BundleError(
                f"{self.folder}: a language-model bundle generates text: give it --prompt "
                "(toolchain.bundle.generator.GeneratorRunner), not inputs to classify"
            )
        rt = self.manifest["runtime"]
        self.labels = list(self.manifest["labels"])
        self.max_len = int(rt["max_seq_len"])
        self.tokenizer, self.session = load_listed(self.folder, self.manifest, threads, providers)
        self.tokenizer.enable_truncation(self.max_len)
        self.tokenizer.enable_padding(pad_id=int(rt["pad_id"]), pad_token=rt["pad_token"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, rows: list[dict]) -> dict[str, np.ndarray]:
        texts = []
        for i, row in enumerate(rows):
            if "text" not in row:
                raise BundleError(f"input {i + 1} has no 'text' (keys: {sorted(row)})")
            texts.append((row["text"], row["text_pair"]) if row.get("text_pair") else row["text"])
        enc = self.tokenizer.encode_batch(texts)
        arrays = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }
        return {k: v for k, v in arrays.items() if k in self.inputs}

    def predict(self, rows: list[dict]) -> list[dict]:
        """One ``{"label", "scores"}`` per row (classification), or ``{"score"}`` (regression)."""
        if not rows:
            return []
        feed = self.encode(rows)
        try:
            logits = self.session.run(["logits"], feed)[0]
        except Exception as e:  # onnxruntime's own types: a model without 'logits', ...
            model = self.manifest["runtime"]["model"]
            raise BundleError(f"{self.folder}: ONNX Runtime cannot run {model}: {e}") from None
        self._check_width(logits, len(rows))
        if self.manifest["task"]["kind"] == "regression":
            return [{"score": round(float(v[0]), 6)} for v in logits]
        z = logits - logits.max(-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        out = []
        for p in probs:
            scores = {label: round(float(v), 6) for label, v in zip(self.labels, p, strict=True)}
            out.append({"label": self.labels[int(p.argmax())], "scores": scores})
        return out

    def _check_width(self, logits: np.ndarray, n: int) -> None:
        """logits: (n, len(labels)), or (n, 1) for regression; else BundleError saying so."""
        regression = self.manifest["task"]["kind"] == "regression"
        width = 1 if regression else len(self.labels)
        if logits.shape == (n, width):
            return
        what = "1 score (regression)" if regression else f"{width} labels"
        raise BundleError(
            f"{self.folder}: the model's logits have shape {tuple(logits.shape)} for {n} inputs, "
            f"but the manifest lists {what}: expected ({n}, {width})"
        )
