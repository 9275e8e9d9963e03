"""`edgec build` for a tagging task end to end on a tiny CoNLL file and a tiny BERT, with the CVT
tagger as a candidate: the bundle it ships runs through `edgec run` and gives the spans the
PyTorch model it came from gives, word for word."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from toy import NER_VOCAB, write_toy_conll

from toolchain.bundle.tagger import tag_spans

RECIPE = """
device: host
budgets:
  - {name: easy, latency_ms: 500, memory_mb: 8192, percentile: 90}
teacher_finetune: {max_steps: 150, batch_size: 16, learning_rate: 0.005, eval_every: 75,
                   max_seq_len: 32, require_above_trivial: false}
search: {supernet_steps: 6, sandwich: 2, batch_size: 8, max_seq_len: 32, population: 6,
         generations: 2, eval_samples: 16, measure_top_k: 0}
distill: {steps: 40, batch_size: 16, max_seq_len: 32, eval_every: 20, eval_samples: 40,
          learning_rate: 0.003}
quantize: {method: none}
export: {format: fp32, parity_samples: 16}
quality: {accuracy_floor: 1.0}
cvt: {steps: 150, eval_every: 75, hidden: 24, hidden2: 16, proj: 24, char_filters: 8,
      unlabelled_sources: [train], vocab_size: 200, min_count: 1, learning_rate: 0.02,
      dropout: 0.0, batch_size: 16, unlabelled_batch_size: 16}
"""

SENTENCES = [
    "John visited Paris today .",
    "Reuters Inc said Mary visited London",
    "the Google Inc of Berlin and Anna Smith",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import run_edgec, write_fake_predictor, write_tiny_bert

    tmp = tmp_path_factory.mktemp("tagging")
    write_toy_conll(tmp / "data")
    (tmp / "recipe.yaml").write_text(RECIPE)
    write_fake_predictor(tmp / "predictors")
    write_tiny_bert(tmp / "model", positions=160, words=NER_VOCAB)
    res = run_edgec(
        "build", "--recipe", "recipe.yaml", "--model", "model", "--task", "conll2003",
        "--data-dir", "data", "--predictors", "predictors", "--train-device", "cpu",
        "--teacher-cache", "teachers", "--candidates", "cvt", "-o", "run",
        cwd=tmp, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp, json.loads((tmp / "run" / "build.json").read_text())


def _pytorch_tags(model_dir: Path, sentences: list[list[str]], labels) -> list[list[str]]:
    """The words' labels from the PyTorch model the bundle was exported from."""
    from toolchain.cvt.train import is_cvt, load_cvt, predict_words

    if is_cvt(model_dir):
        model, tok, config = load_cvt(model_dir)
        logits = predict_words(model, tok, sentences, max_word_bytes=model.shape.max_word_bytes)
        return [[labels[int(k)] for k in lg.argmax(-1)] for lg in logits]
    import torch

    from toolchain.models.loading import load_model

    adapter = load_model(model_dir, head="token-classification")
    out = []
    for words in sentences:
        enc = adapter.tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = adapter.model(**enc).logits[0].numpy()
        first = {}
        for pos, w in enumerate(enc.word_ids()):
            if w is not None and w not in first:
                first[w] = pos
        out.append([labels[int(np.argmax(logits[first[w]]))] for w in range(len(words))])
    return out


def test_tagging_build_ships_a_bundle_whose_spans_match_pytorch(built):
    from conftest import run_edgec

    tmp, summary = built
    (row,) = summary["bundles"]
    assert row["built"], row
    assert summary["metric"] == "span_f1"
    assert (
        "span_f1" in summary["trivial"]
        and "most frequent training tag" in summary["trivial"]["description"]
    )
    finalists = summary["selection"]["easy"]["finalists"]
    assert "cvt" in {f["arch"] for f in finalists}  # CVT competed for the budget
    assert (tmp / "run" / "cvt" / "stage.json").is_file()
    assert "measure-cvt" in summary["stage_s"]

    bundle = tmp / "run" / row["bundle"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    labels = manifest["labels"]
    rows = [{"text": s} for s in SENTENCES] + [{"tokens": ["Mary", "visited", "Berlin"]}]
    (tmp / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = run_edgec("run", str(bundle), "--file", "in.jsonl", cwd=tmp)
    assert res.returncode == 0, res.stderr
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(got) == len(rows)

    source = Path(json.loads((tmp / "run" / (
        "export-cvt" if row["subnet"] == "cvt" else
        next(p.name for p in (tmp / "run").glob("export-L*"))) / "export.json").read_text())[
        "source"])  # fmt: skip
    words = [g["words"] for g in got]
    expected = _pytorch_tags(source, words, labels)
    assert [g["labels"] for g in got] == expected
    for g, tags in zip(got, expected, strict=True):
        assert [(s["label"], *s["words"]) for s in g["spans"]] == tag_spans(tags)
    spans = [s for g in got for s in g["spans"]]
    assert spans, "the shipped model predicts no entity at all: the comparison would be empty"
    for g, r in zip(got, rows, strict=True):  # spans point into the text they came from
        for s in g["spans"]:
            if "text" in r:
                assert r["text"][s["start"] : s["end"]] == s["text"]


def test_tagging_build_reports_the_baseline_and_the_cvt_candidate(built):
    tmp, summary = built
    base = summary["baseline_ort_int8_teacher"]
    assert "error" not in base, base
    assert "span_f1" in base["dev"] and base["latency"]["status"] == "measured"
    report = (tmp / "run" / "report.md").read_text()
    assert "span_f1" in report and "cvt" in report


def test_single_sentence_cli_text(built):
    from conftest import run_edgec

    tmp, summary = built
    bundle = tmp / "run" / summary["bundles"][0]["bundle"]
    res = run_edgec("run", str(bundle), "--text", "Anna visited Paris .", cwd=tmp)
    assert res.returncode == 0, res.stderr
    (out,) = [json.loads(x) for x in res.stdout.splitlines()]
    assert out["words"] == ["Anna", "visited", "Paris", "."]
    assert len(out["labels"]) == 4 and len(out["scores"]) == 4
    assert all(0 < p <= 1 for p in out["scores"])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
