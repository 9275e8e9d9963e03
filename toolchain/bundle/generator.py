"""Run a language-model bundle: verified, then text generation on ONNX Runtime, ``tokenizers``
and numpy alone (no torch, no transformers), with the KV cache
(:func:`toolchain.export.generate.generate`).

An LM bundle holds the decoder (``model.onnx`` with ``past_key_values.*`` inputs), the tokenizer
and ``generation_config.json`` (end-of-sequence ids and the default settings). Its manifest's
``runtime.generation`` names them. Why not onnxruntime-genai: its runtime wants the model folder
its own builder writes (its ``genai_config.json`` and graph conventions); edgec's graph comes from
optimum's export with parity checked against PyTorch, and a numpy loop over it measured 48 decode
tokens/s for SmolLM2-135M fp32 on this host against 20 for transformers on PyTorch
(benchmarks/results/generate.md); ``benchmarks/bench_decoder.py`` measures onnxruntime-genai's
int4 teacher beside the bundles.

Example::

    runner = GeneratorRunner("wikitext2-host-balanced.edgec")
    run = runner.generate("The tower is", max_new_tokens=32, stop=["\\n"])
    for piece in run:
        print(piece, end="", flush=True)
    run.stats   # {"ttft_ms", "decode_tok_s", "new_tokens", "stopped_by", "prompt_tokens"}
"""

from __future__ import annotations

import json
from pathlib import Path

from toolchain.bundle.manifest import BundleError, read_listed, verify
from toolchain.bundle.runtime import load_listed

GENERATION_CONFIG = "generation_config.json"


class GeneratorRunner:
    """A verified language-model bundle, ready to generate.

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
        if self.manifest["task"]["kind"] != "language-modeling":
            raise BundleError(
                f"{self.folder}: a {self.manifest['task']['kind']} bundle does not generate "
                "text: give it inputs with --text/--file instead of --prompt"
            )
        rt = self.manifest["runtime"]
        self.config = json.loads(read_listed(self.folder, self.manifest, rt["generation_config"]))
        self.tokenizer, self.session = load_listed(self.folder, self.manifest, threads, providers)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        names = {i.name for i in self.session.get_inputs()}
        if not any(n.startswith("past_key_values") for n in names):
            raise BundleError(f"{self.folder}: {rt['model']} has no KV-cache inputs")
        self.max_context = int(self.config.get("max_context", rt.get("max_seq_len", 2048)))

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
        if not ids:
            raise BundleError("the prompt is empty after tokenization: give some text")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: list[str] = (),
        seed: int | None = None,
    ):
        """Stream the continuation of ``prompt`` (a :class:`~toolchain.export.generate.
        Generation`); unset settings come from the bundle's generation config."""
        from toolchain.export.generate import generate

        cfg = self.config
        ids = self.encode(prompt)
        new = max_new_tokens if max_new_tokens is not None else int(cfg.get("max_new_tokens", 64))
        if len(ids) + new > self.max_context:
            raise BundleError(
                f"prompt ({len(ids)} tokens) + {new} new tokens exceed the model's context "
                f"({self.max_context}): shorten the prompt or lower --max-tokens"
            )
        run = generate(
            self.session,
            ids,
            decode=self.decode,
            max_new_tokens=new,
            temperature=cfg.get("temperature", 0.0) if temperature is None else temperature,
            top_k=cfg.get("top_k", 0) if top_k is None else top_k,
            top_p=cfg.get("top_p", 1.0) if top_p is None else top_p,
            stop=list(stop),
            eos_ids=list(cfg.get("eos_token_ids", [])),
            seed=seed,
        )
        run.stats["prompt_tokens"] = len(ids)
        return run


__all__ = ["GENERATION_CONFIG", "GeneratorRunner"]
