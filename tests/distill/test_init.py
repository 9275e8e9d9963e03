"""toolchain/distill/init.py and importance.py: ETD identity at full width, smaller extractions,
truncation, importance scores."""

from __future__ import annotations

import pytest
import torch
from toy import TOY_SPEC
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from toolchain.data.readers import Example
from toolchain.distill.importance import importance
from toolchain.distill.init import choose_units, init_student
from toolchain.errors import ConfigError
from toolchain.models.adapters import Shape, adapter_for
from toolchain.models.loading import load_model

IDS = torch.tensor([[2, 5, 7, 9, 3, 0], [2, 6, 8, 3, 0, 0]])
MASK = (IDS != 0).long()


def bert(layers=4, hidden=32, heads=4, ffn=64):
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=16,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=16,
        num_labels=2,
    )
    return adapter_for(BertForSequenceClassification(cfg).eval())


def test_etd_at_full_size_reproduces_the_teacher_exactly():
    teacher = bert()
    for method in ("etd-rand", "truncation"):
        student = init_student(teacher, teacher.shape, method, layers=[0, 1, 2, 3], seed=5)
        student.model.eval()
        a = teacher.forward(IDS, MASK)
        b = student.forward(IDS, MASK)
        assert torch.equal(a.logits, b.logits), method
        for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
            assert torch.equal(x, y)


def test_etd_impt_full_size_is_identity_too():
    teacher = bert()
    imp = {"heads": torch.rand(4, 4), "ffn": torch.rand(4, 64), "hidden": torch.rand(32)}
    student = init_student(teacher, teacher.shape, "etd-impt", importance=imp, layers=[0, 1, 2, 3])
    student.model.eval()
    assert torch.equal(teacher.forward(IDS, MASK).logits, student.forward(IDS, MASK).logits)


@pytest.mark.parametrize(
    "shape", ["L2:H32:A4:F64", "L2:H16:A2:F32", "L1:H24:A3:F16", "L3:H32:A8:F48"]
)
def test_smaller_extractions_load_and_run(shape, tmp_path):
    teacher = bert()
    imp = {"heads": torch.rand(4, 4), "ffn": torch.rand(4, 64), "hidden": torch.rand(32)}
    shape = Shape.parse(shape)
    if shape.heads > 4:
        with pytest.raises(ConfigError, match="must not be wider"):
            init_student(teacher, shape, "etd-rand")
        return
    for method, kw in (("etd-rand", {}), ("etd-impt", {"importance": imp})):
        student = init_student(teacher, shape, method, **kw)
        assert student.shape == shape and type(student.model) is type(teacher.model)
        out = student.forward(IDS, MASK)
        assert out.logits.shape == (2, 2) and len(out.hidden_states) == shape.layers + 1
        student.save(tmp_path / method)
        reloaded = load_model(str(tmp_path / method), head="sequence-classification")
        reloaded.model.eval()
        student.model.eval()
        assert torch.allclose(
            reloaded.forward(IDS, MASK).logits, student.forward(IDS, MASK).logits, atol=1e-6
        )


def test_extracted_weights_are_teacher_slices():
    teacher = bert()
    imp = {
        "heads": torch.tensor([[0.0, 5, 1, 4]] * 4),
        "ffn": torch.rand(4, 64),
        "hidden": torch.arange(32.0),
    }
    choice = choose_units(teacher, Shape.parse("L2:H16:A2:F32"), imp, layers=[1, 3])
    assert choice["heads"] == [[1, 3], [1, 3]] and choice["hidden"] == list(range(16, 32))
    student = init_student(
        teacher, Shape.parse("L2:H16:A2:F32"), "etd-impt", importance=imp, layers=[1, 3]
    )
    tq = teacher.model.bert.encoder.layer[3].attention.self.query.weight
    sq = student.model.bert.encoder.layer[1].attention.self.query.weight
    rows = [h * 8 + d for h in (1, 3) for d in range(8)]  # teacher head size 8
    assert torch.equal(sq, tq[rows][:, 16:32])


def test_truncation_of_a_decoder_every_other_layer():
    torch.manual_seed(0)
    gpt2 = adapter_for(
        GPT2LMHeadModel(
            GPT2Config(vocab_size=30, n_embd=32, n_layer=4, n_head=4, n_positions=16)
        ).eval()
    )
    student = init_student(gpt2, Shape.parse("L2:H32:A4:F128"), "truncation", layers=[0, 2])
    assert student.num_layers == 2
    assert torch.equal(
        student.model.transformer.h[1].mlp.c_fc.weight, gpt2.model.transformer.h[2].mlp.c_fc.weight
    )
    assert student.forward(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 30)
    narrow = init_student(gpt2, Shape.parse("L2:H16:A2:F64"), "etd-rand")  # Conv1D layout
    assert str(narrow.shape) == "L2:H16:A2:F64"
    assert narrow.model.transformer.h[0].attn.c_attn.weight.shape == (16, 48)


def test_init_errors():
    teacher = bert()
    with pytest.raises(ConfigError, match="truncation keeps the teacher's width"):
        init_student(teacher, Shape.parse("L2:H16:A2:F32"), "truncation")
    with pytest.raises(ConfigError, match="etd-impt needs importance"):
        init_student(teacher, Shape.parse("L2:H16:A2:F32"), "etd-impt")
    with pytest.raises(ConfigError, match="unknown init"):
        init_student(teacher, teacher.shape, "copy")
    with pytest.raises(ConfigError, match="cannot come from a teacher of 4"):
        init_student(teacher, Shape.parse("L5:H32:A4:F64"), "etd-rand")


def test_importance_scores_shapes_and_a_dead_head(tiny_bert_dir):
    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    dh = adapter.head_size
    with torch.no_grad():  # head 1 of layer 0 can no longer influence anything
        adapter.model.bert.encoder.layer[0].attention.output.dense.weight[:, dh : 2 * dh] = 0
    exs = [Example("the movie is good", None, 1), Example("bad movie", None, 0)] * 4
    scores = importance(adapter, TOY_SPEC, exs, batch_size=4)
    assert scores["heads"].shape == (2, 4) and scores["ffn"].shape == (2, 64)
    assert scores["hidden"].shape == (32,)
    assert scores["heads"][0, 1] == 0 and scores["heads"][0].sum() > 0
    assert (scores["ffn"] >= 0).all() and scores["hidden"].sum() > 0
    assert not adapter.model.training


def test_importance_of_a_language_model_scores_next_token_prediction(tiny_gpt2):
    # a causal-LM batch carries no labels: the loss must be next-token prediction, never None
    from toolchain.data.tasks import get_task

    lines = ["abc abd abe", "the cat sat on a mat", "a b c d e f g"] * 4
    dh = tiny_gpt2.head_size
    with torch.no_grad():  # head 0 of layer 0 can no longer influence anything
        tiny_gpt2.model.transformer.h[0].attn.c_proj.weight[:dh, :] = 0
    scores = importance(tiny_gpt2, get_task("wikitext2"), lines, batch_size=4, max_len=16)
    assert scores["heads"].shape == (tiny_gpt2.num_layers, tiny_gpt2.num_heads)
    assert scores["heads"][0, 0] == 0 and scores["heads"].sum() > 0
    assert torch.isfinite(scores["ffn"]).all() and scores["hidden"].sum() > 0


def test_importance_without_labels_says_so(tiny_bert_dir):
    from toolchain.data.readers import DataError

    adapter = load_model(str(tiny_bert_dir), head="sequence-classification", num_labels=2)
    exs = [Example("the movie is good", None, None)] * 4
    with pytest.raises(DataError, match="no labels: score on a labelled split"):
        importance(adapter, TOY_SPEC, exs, batch_size=4)
