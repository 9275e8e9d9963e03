"""ModelAdapter over tiny random BERT, MPNet, GPT-2 and Llama models built from configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    LlamaConfig,
    LlamaForCausalLM,
    MPNetConfig,
    MPNetForMaskedLM,
    MPNetModel,
)

from toolchain.errors import ConfigError, EdgecError
from toolchain.models.adapters import (
    AdapterOutput,
    BertAdapter,
    GPT2Adapter,
    LlamaAdapter,
    MPNetAdapter,
    Shape,
    adapter_for,
)

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 100, 32, 2, 4, 64
B, T = 2, 7
ATOL = 1e-5  # fp32, eager vs fused attention


def _bert_config(**kw):
    kw = {"max_position_embeddings": 64, **kw}
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        **kw,
    )


def _mpnet_config():
    return MPNetConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=64,
    )


def _gpt2_config(**kw):
    return GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64, **kw
    )


def _llama_config():
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        intermediate_size=FFN,
        max_position_embeddings=64,
    )


# name -> (builder, adapter class, expected logits shape)
CASES = {
    "bert": (lambda: BertModel(_bert_config()), BertAdapter, (B, T, HIDDEN)),
    "bert-cls": (
        lambda: BertForSequenceClassification(
            _bert_config(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
        ),
        BertAdapter,
        (B, 3),
    ),
    "mpnet": (lambda: MPNetModel(_mpnet_config()), MPNetAdapter, (B, T, HIDDEN)),
    "mpnet-mlm": (lambda: MPNetForMaskedLM(_mpnet_config()), MPNetAdapter, (B, T, VOCAB)),
    "gpt2": (lambda: GPT2LMHeadModel(_gpt2_config()), GPT2Adapter, (B, T, VOCAB)),
    "gpt2-base": (lambda: GPT2Model(_gpt2_config()), GPT2Adapter, (B, T, HIDDEN)),
    "llama": (lambda: LlamaForCausalLM(_llama_config()), LlamaAdapter, (B, T, VOCAB)),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    build, adapter_cls, logits_shape = CASES[request.param]
    torch.manual_seed(0)
    model = build().eval()
    return adapter_for(model), adapter_cls, logits_shape


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    return ids, mask


def test_adapter_for_picks_the_family(case):
    adapter, adapter_cls, _ = case
    assert type(adapter) is adapter_cls
    assert adapter.family == adapter.model.config.model_type
    assert adapter.is_decoder == (adapter.family in ("gpt2", "llama"))


def test_properties_match_the_config(case):
    adapter, _, _ = case
    assert adapter.num_layers == LAYERS
    assert adapter.hidden_size == HIDDEN
    assert adapter.num_heads == HEADS
    assert adapter.head_size == HIDDEN // HEADS
    assert adapter.vocab_size == VOCAB
    gpt2_default_ffn = 4 * HIDDEN  # tiny GPT-2 leaves n_inner None
    assert adapter.ffn_size == (gpt2_default_ffn if adapter.family == "gpt2" else FFN)
    kv = ":K2" if adapter.family == "llama" else ""
    assert str(adapter.shape) == f"L{LAYERS}:H{HIDDEN}:A{HEADS}:F{adapter.ffn_size}{kv}"


def test_layers_embeddings_backbone(case):
    adapter, _, _ = case
    layers = adapter.layers()
    assert isinstance(layers, nn.ModuleList) and len(layers) == LAYERS
    backbone = adapter.backbone()
    assert type(backbone).__name__ in ("BertModel", "MPNetModel", "GPT2Model", "LlamaModel")
    assert all(any(layer is m for m in backbone.modules()) for layer in layers)
    emb = adapter.embeddings()
    if adapter.is_decoder:
        assert emb is adapter.model.get_input_embeddings()
    else:
        assert emb is backbone.embeddings
        assert emb.word_embeddings is adapter.model.get_input_embeddings()


def test_forward_hidden_states_and_logits(case):
    adapter, _, logits_shape = case
    ids, mask = _inputs()
    out = adapter.forward(ids, mask)
    assert isinstance(out, AdapterOutput)
    assert out.attentions is None
    assert tuple(out.logits.shape) == logits_shape
    assert len(out.hidden_states) == LAYERS + 1
    assert all(tuple(h.shape) == (B, T, HIDDEN) for h in out.hidden_states)


def test_attentions_are_probabilities(case):
    adapter, _, _ = case
    ids, mask = _inputs()
    before = adapter.model.config._attn_implementation
    plain = adapter.forward(ids, mask)
    out = adapter.forward(ids, mask, output_attentions=True)
    assert adapter.model.config._attn_implementation == before  # restored
    assert len(out.attentions) == LAYERS
    for att in out.attentions:
        assert tuple(att.shape) == (B, HEADS, T, T)
        torch.testing.assert_close(att.sum(-1), torch.ones(B, HEADS, T), atol=ATOL, rtol=0)
        if adapter.is_decoder:
            upper = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
            assert att[..., upper].abs().max() == 0
    # eager attention computes the same function as the fused one
    for h_eager, h_fused in zip(out.hidden_states, plain.hidden_states, strict=True):
        torch.testing.assert_close(h_eager, h_fused, atol=ATOL, rtol=0)


def test_attentions_ignore_padding():
    adapter = adapter_for(BertModel(_bert_config()).eval())
    ids, mask = _inputs()
    mask[1, 4:] = 0
    att = adapter.forward(ids, mask, output_attentions=True).attentions[0]
    assert att[1, :, :, 4:].abs().max() < 1e-6
    torch.testing.assert_close(att.sum(-1), torch.ones(B, HEADS, T), atol=ATOL, rtol=0)


def test_gpt2_ffn_size_follows_n_inner():
    assert adapter_for(GPT2Model(_gpt2_config())).ffn_size == 4 * HIDDEN
    assert adapter_for(GPT2Model(_gpt2_config(n_inner=48))).ffn_size == 48


NEW = Shape(layers=1, hidden=48, heads=6, ffn=96)


def test_config_for_shape_replaces_only_the_shape(case):
    adapter, _, _ = case
    old = adapter.model.config
    old_dict = old.to_dict()
    config = adapter.config_for_shape(NEW)
    assert type(config) is type(old) and config is not old
    assert old.to_dict() == old_dict  # the model's own config is untouched
    new_adapter = type(adapter)(type(adapter.model)(config))
    assert new_adapter.shape.layers == 1 and new_adapter.hidden_size == 48
    assert new_adapter.num_heads == 6 and new_adapter.ffn_size == 96
    for key in ("vocab_size", "num_labels", "id2label", "label2id", "problem_type", "model_type"):
        assert getattr(config, key) == getattr(old, key), key


def test_config_for_shape_keeps_labels_and_positions():
    config = _bert_config(num_labels=1, problem_type="regression", max_position_embeddings=40)
    adapter = adapter_for(BertForSequenceClassification(config))
    new = adapter.config_for_shape(NEW)
    assert (new.num_labels, new.problem_type, new.max_position_embeddings) == (1, "regression", 40)
    assert (new.num_hidden_layers, new.hidden_size, new.num_attention_heads) == (1, 48, 6)
    assert new.intermediate_size == 96


def test_build_for_shape_same_class_new_shape(case):
    adapter, _, logits_shape = case
    adapter.tokenizer = object()  # stands in for a tokenizer: the vocabulary is shared
    student = adapter.build_for_shape(NEW, seed=0)
    assert type(student.model) is type(adapter.model)
    assert type(student) is type(adapter)
    assert student.tokenizer is adapter.tokenizer
    kv = 2 if adapter.family == "llama" else None
    assert student.shape == Shape(1, 48, 6, 96, kv)
    ids, mask = _inputs()
    student.model.eval()
    out = student.forward(ids, mask, output_attentions=True)
    assert len(out.hidden_states) == 2 and out.hidden_states[0].shape == (B, T, 48)
    assert out.attentions[0].shape == (B, 6, T, T)
    assert out.logits.shape[-1] == (48 if logits_shape[-1] == HIDDEN else logits_shape[-1])


def test_build_for_shape_seed_is_reproducible_and_local():
    adapter = adapter_for(BertModel(_bert_config()))
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = adapter.build_for_shape(NEW, seed=1).model.state_dict()
    b = adapter.build_for_shape(NEW, seed=1).model.state_dict()
    c = adapter.build_for_shape(NEW, seed=2).model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    key = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_llama_shape_sets_kv_heads_and_head_dim():
    adapter = adapter_for(LlamaForCausalLM(_llama_config()))
    config = adapter.config_for_shape(Shape(1, 48, 6, 96))
    assert config.num_key_value_heads == 2  # kept: 6 heads group over 2
    assert config.head_dim == 8
    config = adapter.config_for_shape(Shape.parse("L1:H48:A6:F96:K3"))
    assert (config.num_key_value_heads, config.head_dim) == (3, 8)
    student = adapter.build_for_shape(Shape.parse("L1:H64:A4:F96:K1"))
    assert student.head_size == 16 and student.shape.kv_heads == 1
    assert student.model.model.layers[0].self_attn.k_proj.out_features == 16


def test_llama_incompatible_kv_grouping_is_refused():
    adapter = adapter_for(LlamaForCausalLM(_llama_config()))
    with pytest.raises(ConfigError, match=r"3 heads cannot be grouped over the model's 2"):
        adapter.config_for_shape(Shape(1, 48, 3, 96))


def test_kv_heads_only_for_llama():
    adapter = adapter_for(BertModel(_bert_config()))
    with pytest.raises(ConfigError, match="applies to llama models only, not to bert"):
        adapter.config_for_shape(Shape.parse("L1:H48:A6:F96:K2"))


@pytest.mark.parametrize("text", ["L3:H384:A12:F1536", "L1:H48:A6:F96:K3", "L24:H1024:A16:F4096"])
def test_shape_round_trip(text):
    shape = Shape.parse(text)
    assert str(shape) == text
    assert Shape.parse(str(shape)) == shape


def test_shape_fields():
    assert Shape.parse(" L3:H384:A12:F1536 ") == Shape(layers=3, hidden=384, heads=12, ffn=1536)


@pytest.mark.parametrize("text", ["", "L3:H384:A12", "3:384:12:1536", "L3:H384:A12:F1536:X2", 3])
def test_shape_parse_rejects_bad_format(text):
    with pytest.raises(ConfigError, match=r"expected L<layers>:H<hidden>:A<heads>:F<ffn>"):
        Shape.parse(text)


def test_shape_rejects_indivisible_heads():
    with pytest.raises(ConfigError, match="hidden size 384 is not divisible by .* heads 5"):
        Shape.parse("L3:H384:A5:F1536")
    with pytest.raises(ConfigError, match="heads 12 is not divisible by kv_heads 5"):
        Shape.parse("L3:H384:A12:F1536:K5")
    with pytest.raises(ConfigError, match="layers must be a positive integer, got 0"):
        Shape.parse("L0:H384:A12:F1536")


def test_adapter_for_unsupported_family_lists_the_supported_ones():
    model = DistilBertModel(
        DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=1, n_heads=HEADS, hidden_dim=FFN)
    )
    with pytest.raises(EdgecError, match="'distilbert'.*supported families: bert, mpnet, gpt2"):
        adapter_for(model)
    with pytest.raises(EdgecError, match="supported families: bert, mpnet, gpt2, llama"):
        adapter_for(nn.Linear(2, 2))


def test_num_parameters_counts_tied_weights_once():
    model = GPT2LMHeadModel(_gpt2_config())
    assert model.lm_head.weight is model.transformer.wte.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert adapter_for(model).num_parameters() == sum(unique.values())
    assert adapter_for(model).num_parameters() == model.num_parameters()
