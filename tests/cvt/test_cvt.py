"""Cross-View Training: what each auxiliary view may see, what the unlabelled loss may update,
and the ONNX export against PyTorch."""

from __future__ import annotations

import pytest
import torch

from toolchain.cvt.data import build_vocab, collate
from toolchain.cvt.model import VIEWS, CVTShape, CVTTagger, reverse
from toolchain.cvt.train import supervised_loss, unsupervised_loss

SENTENCES = [
    ["John", "Smith", "visited", "Paris", "on", "Monday", "."],
    ["Reuters", "reported", "it", "."],
    ["A", "b", "c", "d", "e", "f", "g", "h"],
]


def _model(seed: int = 0) -> tuple[CVTTagger, object]:
    torch.manual_seed(seed)
    tok = build_vocab(SENTENCES, size=100, min_count=1)
    shape = CVTShape(vocab=tok.get_vocab_size(), labels=5, word_dim=12, char_dim=6,
                     char_filters=5, hidden=8, hidden2=6, proj=7, dropout=0.0)  # fmt: skip
    return CVTTagger(shape).eval(), tok


def _batch(tok, sentences, **kw):
    return collate(sentences, tok, max_word_bytes=8, **kw)


def test_reverse_stays_within_each_length():
    x = torch.arange(2 * 4, dtype=torch.float).reshape(2, 4, 1)
    out = reverse(x, torch.tensor([4, 2]))
    assert out[0, :, 0].tolist() == [3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [5, 4, 6, 7]  # padding (positions 2, 3) stays put
    assert torch.equal(reverse(out, torch.tensor([4, 2])), x)


def test_each_view_sees_only_its_side():
    """Changing the words after t leaves the forward and future views of t unchanged (and the
    words before t the backward and past views), and the future view does not see word t
    itself, nor the past view; the primary module sees everything."""
    model, tok = _model()
    t = 3
    base = SENTENCES[0]
    later = base[: t + 1] + ["Berlin", "yesterday", "!"]
    earlier = ["Mary", "Jones", "left"] + base[t:]
    here = base[:t] + ["London"] + base[t + 1 :]
    with torch.no_grad():
        views = {name: model.views(**_args(tok, [s]))
                 for name, s in (("base", base), ("later", later), ("earlier", earlier),
                                 ("here", here))}  # fmt: skip
        primary = {name: model(**_args(tok, [s])) for name, s in (("base", base),
                                                                  ("later", later))}  # fmt: skip

    def same(view, a, b, pos=t):
        return torch.allclose(views[a][view][0, pos], views[b][view][0, pos], atol=1e-6)

    assert same("forward", "base", "later") and same("future", "base", "later")
    assert not same("backward", "base", "later") and not same("past", "base", "later")
    assert same("backward", "base", "earlier") and same("past", "base", "earlier")
    assert not same("forward", "base", "earlier") and not same("future", "base", "earlier")
    assert same("future", "base", "here") and same("past", "base", "here")  # word t unseen
    assert not same("forward", "base", "here") and not same("backward", "base", "here")
    assert not torch.allclose(primary["base"][0, t], primary["later"][0, t])


def test_padding_changes_no_prediction():
    model, tok = _model()
    with torch.no_grad():
        alone = model(**_args(tok, [SENTENCES[1]]))[0]
        batched = model(**_args(tok, SENTENCES))[1, : len(SENTENCES[1])]
        views = model.views(**_args(tok, SENTENCES))
    assert torch.allclose(alone, batched, atol=1e-5)
    n = len(SENTENCES[1])
    assert (
        torch.count_nonzero(
            views["past"][1, n - 1] - model.aux["view_past"](torch.zeros(model.shape.hidden))
        )
        == 0
    )  # the last word's past view sees nothing


def _args(tok, sentences) -> dict:
    b = _batch(tok, sentences)
    return {"word_ids": b["word_ids"], "char_ids": b["char_ids"], "mask": b["mask"]}


def test_unsupervised_loss_never_updates_the_primary_module():
    model, tok = _model()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    primary = {k: v.clone() for k, v in model.primary.state_dict().items()}
    encoder = model.l1f.weight_ih_l0.clone()
    second = model.l2f.weight_ih_l0.clone()
    loss = unsupervised_loss(model, _batch(tok, SENTENCES))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in model.primary.parameters())
    assert all(p.grad is None for p in list(model.l2f.parameters()) + list(model.l2b.parameters()))
    assert loss.item() > 0
    opt.step()
    assert all(torch.equal(v, model.primary.state_dict()[k]) for k, v in primary.items())
    assert torch.equal(second, model.l2f.weight_ih_l0)  # only the views' layer learns
    assert not torch.equal(encoder, model.l1f.weight_ih_l0)  # the shared encoder does
    assert all(p.grad is not None for v in VIEWS for p in model.aux[f"view_{v}"].parameters())


def test_supervised_loss_trains_the_primary_module():
    model, tok = _model()
    model.train()
    tags = [[1, 2, 0, 3, 0, 0, 0], [4, 0, 0, 0], [0] * 8]
    loss = supervised_loss(model, _batch(tok, SENTENCES, tags=tags))
    loss.backward()
    assert all(p.grad is not None for p in model.primary.parameters())
    assert all(p.grad is None for v in VIEWS for p in model.aux[f"view_{v}"].parameters())


def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from toolchain.cvt.export import export_cvt
    from toolchain.cvt.train import ARCHITECTURE, WEIGHTS, load_cvt

    model, tok = _model()
    folder = tmp_path / "cvt"
    folder.mkdir()
    torch.save(model.state_dict(), folder / WEIGHTS)
    tok.save(str(folder / "tokenizer.json"))
    import json

    labels = ["O", "B-PER", "I-PER", "B-LOC", "B-ORG"]
    (folder / "config.json").write_text(json.dumps({
        "architectures": [ARCHITECTURE], "cvt_shape": model.shape.to_dict(),
        "id2label": dict(enumerate(labels))}))  # fmt: skip
    loaded, _, _ = load_cvt(folder)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    for fmt in ("fp32", "int8-dynamic"):
        record = export_cvt(folder, tmp_path / fmt, fmt=fmt, sentences=SENTENCES * 3)
        assert record["inputs"] == "words"
        assert record["parity"]["n"] == 3 * sum(map(len, SENTENCES))
        if fmt == "fp32":
            assert record["parity"]["max_abs_diff"] < 1e-4
    assert (tmp_path / "int8-dynamic" / "model.onnx").stat().st_size < (
        tmp_path / "fp32" / "model.onnx"
    ).stat().st_size


def test_trained_cvt_bundle_runs_as_pytorch_predicts(tmp_path):
    """A CVT tagger trained on a toy CoNLL file (with its unlabelled loss), exported, bundled
    and run by the bundle runtime labels every word as the PyTorch model does."""
    from toy import write_toy_conll

    from toolchain.bundle.build import build_bundle
    from toolchain.bundle.tagger import TaggerRunner
    from toolchain.config import CVTConfig, DataConfig
    from toolchain.cvt.export import export_cvt
    from toolchain.cvt.train import load_cvt, predict_words, train_cvt
    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.target import DeviceTarget

    spec = get_task("conll2003")
    data = write_toy_conll(tmp_path / "data", train=120, valid=30)
    cfg = CVTConfig(steps=60, eval_every=30, hidden=16, hidden2=8, proj=16, char_filters=8,
                    embeddings="scratch", word_dim=16, unlabelled_sources=("train",),
                    vocab_size=100, min_count=1, learning_rate=0.02, dropout=0.0,
                    batch_size=16, unlabelled_batch_size=16)  # fmt: skip
    metrics = train_cvt(tmp_path / "cvt", spec=spec, data_dir=data, cfg=cfg,
                        data_cfg=DataConfig(labelled_fraction=0.5))  # fmt: skip
    assert metrics["unlabelled_loss"] and metrics["labelled_sentences"] < 120
    assert [h["step"] for h in metrics["history"]] == [30, 60]
    assert all("unsup_loss" in h for h in metrics["history"])
    dev = load_split(spec, "dev", data)
    export_cvt(tmp_path / "cvt", tmp_path / "export", fmt="fp32",
               sentences=[ex.tokens for ex in dev])  # fmt: skip
    bundle = tmp_path / "conll2003-cvt.edgec"
    manifest = build_bundle(tmp_path / "export", bundle, target=DeviceTarget.resolve("host"),
                            spec=spec, tarball=False)  # fmt: skip
    assert manifest["runtime"]["inputs"] == "words" and manifest["labels"] == list(spec.labels)
    runner = TaggerRunner(bundle)
    got = runner.predict([{"tokens": list(ex.tokens)} for ex in dev])
    model, tok, _ = load_cvt(tmp_path / "cvt")
    ref = predict_words(model, tok, [ex.tokens for ex in dev], max_word_bytes=16)
    assert [g["labels"] for g in got] == [[spec.labels[int(k)] for k in r.argmax(-1)]
                                          for r in ref]  # fmt: skip
    assert sum(len(g["spans"]) for g in got) > 0  # it learned to find entities
    from toolchain import api

    direct = api.bundle(tmp_path / "cvt", tmp_path / "direct.edgec", task=spec, device="host",
                        data_dir=data, tarball=False)  # fmt: skip
    assert direct["model"]["format"] == "int8-dynamic" and direct["runtime"]["inputs"] == "words"
    assert direct["latency"]["status"] == "measured"
    again = TaggerRunner(tmp_path / "direct.edgec").predict([{"tokens": list(dev[0].tokens)}])
    assert len(again[0]["labels"]) == len(dev[0].tokens)
