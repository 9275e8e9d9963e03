"""toolchain/prune: structured pruning really shrinks the model (parameters, reloaded config, ONNX
shapes), keeps outputs equal when nothing is pruned; unstructured pruning zeroes the share it is
asked for; the stage prunes, fine-tunes and scores loyalty."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from toy import TOY_SPEC, toy_examples, write_toy_table

from toolchain.config import DataConfig, PruneConfig
from toolchain.models.loading import load_model
from toolchain.pipeline import run_single
from toolchain.prune.stage import prune_stage
from toolchain.prune.structured import heads_to_prune, neurons_to_keep, prune_structured
from toolchain.prune.unstructured import encoder_linears, make_permanent, prune_unstructured


def _logits(adapter, texts=("the movie was good", "bad world")):
    enc = adapter.tokenizer(list(texts), return_tensors="pt", padding=True)
    adapter.model.eval()
    with torch.no_grad():
        return adapter.model(**enc).logits.numpy()


def _scores(adapter, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "heads": torch.rand(adapter.num_layers, adapter.num_heads, generator=g),
        "ffn": torch.rand(adapter.num_layers, adapter.ffn_size, generator=g),
    }


@pytest.fixture
def tiny(tiny_bert_dir):
    return load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)


def test_heads_to_prune_takes_the_lowest_and_keeps_one_head_per_layer():
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.7], [0.2, 0.3, 0.01, 0.6]])
    assert heads_to_prune(scores, 0.0) == {}
    one = heads_to_prune(scores, 1 / 8)
    assert one == {1: [2]}  # the lowest after per-layer normalisation
    every = heads_to_prune(scores, 0.99)
    assert all(len(v) == 3 for v in every.values())  # one head left in each layer


def test_neurons_to_keep_is_the_top_share_in_every_layer():
    scores = torch.tensor([[5.0, 1.0, 3.0, 4.0], [0.0, 9.0, 8.0, 1.0]])
    assert neurons_to_keep(scores, 0.5) == [[0, 3], [1, 2]]


def test_nothing_pruned_keeps_outputs_and_parameters(tiny):
    before, params = _logits(tiny), tiny.num_parameters()
    report = prune_structured(tiny, _scores(tiny), head_sparsity=0.0, ffn_sparsity=0.0)
    assert report["parameters_after"] == params
    np.testing.assert_array_equal(_logits(tiny), before)


def test_structured_pruning_shrinks_the_model_and_reloads_and_exports_smaller(tiny, tmp_path):
    params = tiny.num_parameters()
    tiny.save(tmp_path / "full")
    report = prune_structured(tiny, _scores(tiny), head_sparsity=0.5, ffn_sparsity=0.5)
    assert report["heads_after"] == 4 and report["ffn_after"] == 32
    assert report["parameters_after"] < params
    after = _logits(tiny)
    tiny.save(tmp_path / "pruned")
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["intermediate_size"] == 32
    assert sum(len(v) for v in config["pruned_heads"].values()) == 4
    again = load_model(str(tmp_path / "pruned"), head="sequence-classification")
    assert again.num_parameters() == report["parameters_after"]
    np.testing.assert_allclose(_logits(again), after, atol=1e-5)

    from toolchain.export.stage import export_model

    files = {"dev": str(write_toy_table(tmp_path / "dev.tsv", 20, 1))}
    spec = replace(TOY_SPEC, files=files)
    sizes = {}
    for name in ("full", "pruned"):
        folder = tmp_path / name
        report = export_model(folder, tmp_path / f"onnx-{name}", fmt="fp32", spec=spec)
        assert report["parity"]  # the export matches PyTorch on real inputs
        graph = onnx.load(str(tmp_path / f"onnx-{name}" / "model.onnx")).graph
        sizes[name] = [tuple(t.dims) for t in graph.initializer]
    numel = {k: sum(int(np.prod(s)) for s in v) for k, v in sizes.items()}
    assert numel["pruned"] < numel["full"]
    assert (32, 64) in sizes["full"] and (32, 64) not in sizes["pruned"]  # the FFN up projection


def test_structured_pruning_refuses_a_decoder(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from toolchain.errors import ConfigError
    from toolchain.models.adapters import adapter_for

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    adapter = adapter_for(model)
    with pytest.raises(ConfigError, match="BERT-family"):
        prune_structured(adapter, _scores(adapter), head_sparsity=0.5, ffn_sparsity=0.5)


def test_unstructured_pruning_zeroes_the_share_and_folds_the_masks(tiny, tmp_path):
    report = prune_unstructured(tiny, 0.6)
    assert abs(report["sparsity"] - 0.6) < 0.01
    assert "no latency" in report["note"]
    again = make_permanent(tiny)
    assert again["sparsity"] == report["sparsity"]
    names = [n for n, _ in tiny.model.named_parameters()]
    assert not any(n.endswith("weight_orig") for n in names)
    assert tiny.model.bert.embeddings.word_embeddings.weight[1:].ne(0).all()  # dense embeddings
    tiny.save(tmp_path / "sparse")
    reloaded = load_model(str(tmp_path / "sparse"), head="sequence-classification")
    zeros = sum(int((m.weight == 0).sum()) for m, _ in encoder_linears(reloaded))
    assert zeros == report["pruned_weights"]


@pytest.mark.parametrize("method", ["structured", "unstructured"])
def test_the_stage_prunes_fine_tunes_and_scores_loyalty(tiny_bert_dir, tmp_path, method):
    from toolchain.config import TeacherConfig
    from toolchain.models.finetune import finetune

    files = {
        "train": write_toy_table(tmp_path / "train.tsv", 200, 0),
        "validation": write_toy_table(tmp_path / "valid.tsv", 40, 1),
        "dev": write_toy_table(tmp_path / "dev.tsv", 40, 2),
    }
    spec = replace(TOY_SPEC, files={k: str(v) for k, v in files.items()})
    teacher = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    tcfg = TeacherConfig(learning_rate=3e-3, batch_size=16, max_seq_len=16, max_steps=40,
                         eval_every=40, early_stopping_patience=0)  # fmt: skip
    finetune(teacher, spec, toy_examples(200, 0), toy_examples(40, 1), tcfg,
             out_dir=tmp_path / "teacher")  # fmt: skip
    cfg = PruneConfig(method=method, sparsity=0.5, steps=6, eval_every=3, max_seq_len=16,
                      importance_samples=32, batch_size=8)  # fmt: skip
    stage = prune_stage(teacher_dir=str(tmp_path / "teacher"), spec=spec, data_dir=None, cfg=cfg,
                        data_cfg=DataConfig(), name="pruned")  # fmt: skip
    record = run_single(stage, tmp_path / "pruned", seed=0).record
    m = record["metrics"]
    assert 0 <= m["dev"]["label_loyalty"] <= 1 and 0 <= m["dev"]["prob_loyalty"] <= 1
    pruned = load_model(str(tmp_path / "pruned"), head="sequence-classification")
    if method == "structured":
        assert m["parameters"] < m["parameters_before"] == m["prune"]["parameters_before"]
        assert pruned.num_parameters() == m["parameters"]
    else:
        assert m["prune"]["sparsity"] >= 0.5
        zeros = sum(int((mod.weight == 0).sum()) for mod, _ in encoder_linears(pruned))
        assert zeros >= m["prune"]["pruned_weights"] * 0.99
