"""Mixed precision: measured sensitivities and an allocation that meets its budget."""

from __future__ import annotations

import random

import pytest
import torch

from toolchain.config import QuantizeConfig
from toolchain.errors import ConfigError
from toolchain.lowbit.reference import container_bits
from toolchain.quantize.convert import model_bytes
from toolchain.quantize.mixed import allocate, layer_sizes, sensitivity
from toolchain.quantize.modules import plan_modules
from toolchain.quantize.stage import choose_widths


def stored_bits(sizes, widths):
    return sum(sizes[n] * container_bits(b) for n, b in widths.items())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("avg", (2.0, 2.5, 3.0, 4.0, 6.5, 8.0))
def test_allocation_meets_the_budget(seed, avg):
    rng = random.Random(seed)
    sizes = {f"l{i}": rng.choice((1024, 4096, 30000)) for i in range(12)}
    sens = {}
    for n in sizes:
        base = rng.uniform(0.01, 1.0)
        sens[n] = {2: base, 4: base / rng.uniform(4, 20), 8: base / 1000}
    budget = avg * sum(sizes.values())
    widths = allocate(sizes, sens, budget_bits=budget)
    assert stored_bits(sizes, widths) <= budget
    # no single layer could still be widened within the budget (the greedy fills it)
    slack = budget - stored_bits(sizes, widths)
    for n, b in widths.items():
        wider = [c for c in (2, 4, 8) if c > b]
        if wider:
            assert sizes[n] * (wider[0] - b) > slack
    if avg >= 8:
        assert set(widths.values()) == {8}


def test_allocation_prefers_the_sensitive_layer():
    sizes = {"robust": 1000, "fragile": 1000}
    sens = {"robust": {2: 0.01, 4: 0.005, 8: 0.0}, "fragile": {2: 5.0, 4: 0.1, 8: 0.0}}
    widths = allocate(sizes, sens, budget_bits=3.0 * 2000)
    assert widths == {"robust": 2, "fragile": 4}


def test_a_budget_below_the_narrowest_packing_is_refused():
    with pytest.raises(ConfigError, match="below the smallest packing"):
        allocate({"a": 1000}, {"a": {2: 1.0, 4: 0.1}}, budget_bits=1.5 * 1000)


@pytest.fixture
def classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        initializer_range=0.3,
    )
    return BertForSequenceClassification(config).eval()


def calib():
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 40, (8, 12), generator=g)} for _ in range(2)]


def test_sensitivity_falls_with_width(classifier):
    plan = plan_modules(classifier, weight_bits=4)
    sens = sensitivity(classifier, plan, calib(), choices=(2, 4, 8))
    assert set(sens) == set(plan)
    for per_width in sens.values():
        assert per_width[2] > per_width[8] >= 0
    # the model is left untouched
    fresh = sensitivity(classifier, plan, calib(), choices=(2,))
    assert all(fresh[n][2] == sens[n][2] for n in plan)


class _Adapter:
    def __init__(self, model):
        self.model = model


@pytest.mark.parametrize("avg", (2.5, 3.0, 5.0))
def test_stage_widths_meet_an_average_budget(classifier, avg):
    cfg = QuantizeConfig(avg_bits=avg, quantize_embeddings=True, sensitivity_batches=2)
    plan, record = choose_widths(_Adapter(classifier), cfg, calib())
    sizes = layer_sizes(classifier, plan)
    assert stored_bits(sizes, plan) <= avg * sum(sizes.values())
    assert record["stored_bits_per_weight"] <= avg
    assert len(set(plan.values())) >= 2  # a real mix, not one width


def test_stage_widths_meet_a_byte_budget(classifier):
    plan_all_4 = plan_modules(classifier, weight_bits=4, quantize_embeddings=True)
    budget = model_bytes(classifier, block_size=32, plan=plan_all_4) / 2**20
    cfg = QuantizeConfig(size_budget_mb=budget, quantize_embeddings=True, sensitivity_batches=2)
    plan, _ = choose_widths(_Adapter(classifier), cfg, calib())
    assert model_bytes(classifier, block_size=32, plan=plan) <= budget * 2**20
    tiny = QuantizeConfig(size_budget_mb=budget / 20, quantize_embeddings=True)
    with pytest.raises(ConfigError, match="below the smallest packing"):
        choose_widths(_Adapter(classifier), tiny, calib())
