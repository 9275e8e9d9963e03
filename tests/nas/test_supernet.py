"""The NAS-BERT supernet: search space, weight sharing, extraction, training, evolution."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch
from toy import TOY_SPEC, toy_examples

from toolchain.config import SearchConfig
from toolchain.errors import ConfigError, EdgecError
from toolchain.models.adapters import Shape
from toolchain.nas.search import evolve, pareto_front, prune_space, shrink
from toolchain.nas.space import Arch, SearchSpace
from toolchain.nas.supernet import SuperNet
from toolchain.nas.train import SubnetScorer, frozen_teacher, train_supernet

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS += ["the", "movie", "is", "was", "a", "hello", "world", "good", "great", "bad", "awful"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny random BERT classifier: 4 layers, hidden 64, 4 heads of 16, FFN 128."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from toolchain.models.adapters import adapter_for

    tmp = tmp_path_factory.mktemp("nas")
    (tmp / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
    )
    model = BertForSequenceClassification(config).eval()
    return adapter_for(model, BertTokenizerFast(vocab_file=str(tmp / "vocab.txt")))


def scores_for(adapter, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = adapter.shape
    return {
        "hidden": torch.rand(s.hidden, generator=g),
        "heads": torch.rand(s.layers, s.heads, generator=g),
        "ffn": torch.rand(s.layers, s.ffn, generator=g),
    }


def batch(n=3, t=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(WORDS), (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded row
    return ids, mask


SPACE = SearchSpace.for_teacher(Shape(6, 384, 12, 1536))


def test_default_space_of_minilm():
    assert SPACE.hidden == (128, 192, 256, 320, 384)
    assert SPACE.ffn == (384, 768, 1152, 1536)
    assert SPACE.largest() == Arch((0, 1, 2, 3, 4, 5), 384, 12, 1536)
    assert SPACE.smallest() == Arch((5,), 128, 4, 384)
    assert SPACE.contains(Arch((1, 3, 5), 192, 6, 768))
    assert not SPACE.contains(Arch((1, 3, 5), 384, 6, 768))  # heads of 64 > the teacher's 32
    assert not SPACE.contains(Arch((3, 1), 192, 6, 768))  # layers out of order
    assert not SPACE.contains(Arch((1, 3, 5), 200, 8, 768))  # not a hidden choice
    assert Arch.parse("L[1,3,5]:H192:A6:F768") == Arch((1, 3, 5), 192, 6, 768)
    assert str(Arch((1, 3, 5), 192, 6, 768)) == "L[1,3,5]:H192:A6:F768"
    with pytest.raises(ConfigError, match="outside the search space"):
        SPACE.check(Arch((0,), 384, 4, 384))
    with pytest.raises(ConfigError, match="invalid subnet"):
        Arch.parse("L3:H192")


def test_macs_count_the_kept_layers_at_their_widths():
    """The device-free cost pruning compares: MiniLM-L6's own shape, by hand, and every
    one-step-smaller neighbour is cheaper."""
    arch = Arch((0, 1, 2, 3, 4, 5), 384, 12, 1536)
    per_token = 4 * 384 * 384 + 2 * 128 * 384 + 2 * 384 * 1536
    assert arch.macs(128) == 6 * 128 * per_token  # 1.37 GMAC for a 128-token sequence
    space = SearchSpace.for_teacher(Shape(6, 384, 12, 1536))
    assert all(a.macs(128) < arch.macs(128) for a in space.smaller(arch))


def test_evolution_operators_stay_inside_the_space():
    rng = random.Random(0)
    space = SearchSpace(
        6, 12, 32, (128, 192, 384), (4, 6, 12), (384, 1536), min_layers=2, max_layers=4
    )
    archs = [space.sample(rng) for _ in range(200)]
    for _ in range(2000):
        a, b = rng.choice(archs), rng.choice(archs)
        child = space.mutate(space.crossover(a, b, rng), rng, rate=0.5)
        assert space.contains(child), child
        assert 2 <= len(child.layers) <= 4
    assert all(space.contains(a) for a in archs)
    assert len(set(archs)) > 50  # the sampler reaches much of the space


def test_largest_subnet_is_the_teacher_and_extraction_equals_the_active_forward(teacher):
    supernet = SuperNet.from_teacher(teacher, scores_for(teacher)).eval()
    ids, mask = batch()
    with torch.no_grad():
        ref = teacher.model(input_ids=ids, attention_mask=mask).logits
        assert supernet.get_active() == supernet.space.largest()
        torch.testing.assert_close(supernet(ids, mask).logits, ref, atol=1e-5, rtol=0)
        rng = random.Random(0)
        for _ in range(8):
            arch = supernet.sample_active(rng)
            student = supernet.extract()
            assert student.shape == arch.shape
            assert type(student.model) is type(teacher.model)
            out = student.model.eval()(input_ids=ids, attention_mask=mask).logits
            torch.testing.assert_close(supernet(ids, mask).logits, out, atol=1e-5, rtol=0)
    # units were reordered, not just copied: the first hidden dimension is the most important
    order = scores_for(teacher)["hidden"].argsort(descending=True)
    emb = teacher.model.bert.embeddings.word_embeddings.weight
    assert torch.equal(
        supernet.model.bert.embeddings.word_embeddings.weight[:, 0], emb[:, order[0]]
    )


def test_supernet_save_and_load(teacher, tmp_path):
    supernet = SuperNet.from_teacher(teacher, scores_for(teacher))
    supernet.save(tmp_path / "sn")
    again = SuperNet.load(tmp_path / "sn").eval()
    arch = Arch((0, 2), 32, 2, 64)
    supernet.eval().set_active(arch)
    again.set_active(arch)
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask).logits, supernet(ids, mask).logits)
    with pytest.raises(ConfigError, match="not a supernet directory"):
        SuperNet.load(tmp_path)


def test_decoders_are_refused(tiny_gpt2):
    with pytest.raises(ConfigError, match="BERT-family encoder .* truncation"):
        SuperNet(tiny_gpt2)


def fake_latency(arch: Arch) -> float:
    """A made-up law: cost grows with depth and width."""
    return len(arch.layers) * (arch.hidden / 64 + arch.ffn / 256 + arch.heads / 8)


def test_search_never_returns_a_subnet_over_budget(tmp_path):
    cfg = SearchConfig(population=12, generations=6)
    fitness = lambda a: len(a.layers) * 0.1 + a.hidden / 1000 + a.ffn / 10000  # noqa: E731
    for budget in (4.0, 8.0, 15.0):
        ranked = evolve(SPACE, fitness, lambda a, b=budget: fake_latency(a) <= b, cfg, seed=1)
        assert ranked and all(fake_latency(a) <= budget for a, _ in ranked)
        assert [v for _, v in ranked] == sorted((v for _, v in ranked), reverse=True)
        assert all(SPACE.contains(a) for a, _ in ranked)
    with pytest.raises(EdgecError, match="no subnet of the search space fits this budget"):
        evolve(SPACE, fitness, lambda a: False, cfg)


def test_smaller_neighbours_are_one_step_smaller_and_in_the_space():
    a = Arch((0, 1, 3), 320, 10, 768)
    nbs = SPACE.smaller(a)
    assert all(SPACE.contains(n) for n in nbs)
    assert {n.layers for n in nbs if len(n.layers) == 2} == {(1, 3), (0, 3), (0, 1)}
    assert all(fake_latency(n) < fake_latency(a) for n in nbs)
    assert SPACE.smaller(SPACE.smallest()) == []


def test_shrink_finds_a_cheaper_subnet_within_the_tolerance():
    # accuracy saturates with width: a narrower subnet is nearly as good as the largest
    fitness = lambda a: 0.9 - 0.01 * (6 - len(a.layers)) - (0.05 if a.hidden < 256 else 0)  # noqa: E731
    big = SPACE.largest()
    scored = [(big, fitness(big))]
    near, descent = shrink(
        SPACE, scored, fitness, lambda a: True, fake_latency, tolerance=0.02, evaluations=50
    )
    cheapest, acc = near[0]
    assert acc >= fitness(big) - 0.02 and fake_latency(cheapest) < fake_latency(big)
    assert len(cheapest.layers) == 4 and cheapest.hidden == 256  # as far as the tolerance allows
    assert cheapest.ffn == 384  # free of accuracy here, so narrowed all the way
    assert descent["path"][0] == str(big) and descent["path"][-1] == str(cheapest)
    assert [fake_latency(a) for a, _ in near] == sorted(fake_latency(a) for a, _ in near)
    # no tolerance: nothing cheaper is as good; a budget on the neighbours stops the descent
    near0, _ = shrink(
        SPACE, scored, fitness, lambda a: True, fake_latency, tolerance=0.0, evaluations=50
    )
    assert [a for a, _ in near0] == [a for a, _ in near0 if fitness(a) >= fitness(big)]
    _, d = shrink(
        SPACE, scored, fitness, lambda a: True, fake_latency, tolerance=0.02, evaluations=1
    )
    assert d["evaluated"] == 1


def test_a_resumed_search_continues_from_its_checkpoint(tmp_path):
    cfg = SearchConfig(population=10, generations=6)
    calls = []

    def fitness(a):
        calls.append(a)
        return a.hidden / 1000 - len(a.layers) * 0.01

    feasible = lambda a: fake_latency(a) <= 9.0  # noqa: E731
    full = evolve(SPACE, fitness, feasible, cfg, seed=3)
    n_full = len(calls)
    # stop after 3 generations, then resume to 6 from the state file
    state = tmp_path / "evolve.json"
    calls.clear()
    evolve(
        SPACE,
        fitness,
        feasible,
        SearchConfig(population=10, generations=3),
        seed=3,
        state_path=state,
    )
    assert json.loads(state.read_text())["generation"] == 3
    first_part = len(calls)
    calls.clear()
    resumed = evolve(SPACE, fitness, feasible, cfg, seed=3, state_path=state)
    assert json.loads(state.read_text())["generation"] == 6
    assert first_part + len(calls) == n_full  # nothing scored twice, nothing skipped
    assert resumed == full


def test_pruning_drops_dominated_choices_only():
    space = SearchSpace(4, 4, 16, (32, 64), (2, 4), (64, 96, 128))
    # FFN 96 is as costly as 128 in this law but less accurate: dominated. Others trade off.
    fitness = lambda a: a.hidden / 100 + {64: 0.1, 96: 0.05, 128: 0.2}[a.ffn]  # noqa: E731
    cost = lambda a: a.hidden + {64: 1.0, 96: 2.0, 128: 2.0}[a.ffn]  # noqa: E731
    pruned, report = prune_space(space, fitness, cost, samples=6, margin=0.01)
    assert pruned.ffn == (64, 128) and report["ffn"]["96"]["dropped"]
    assert pruned.hidden == (32, 64)  # wider is costlier and better: both stay
    # within the margin nothing is dropped: a 0.15 lead is noise to a margin of 0.2
    kept, _ = prune_space(space, fitness, cost, samples=6, margin=0.2)
    assert kept.ffn == (64, 96, 128)


def test_pareto_front():
    pts = [
        {"latency_ms": 1.0, "accuracy": 0.80},
        {"latency_ms": 2.0, "accuracy": 0.85},
        {"latency_ms": 2.5, "accuracy": 0.84},  # dominated by the 2.0 ms point
        {"latency_ms": 3.0, "accuracy": 0.90},
    ]
    assert [p["latency_ms"] for p in pareto_front(pts)] == [1.0, 2.0, 3.0]


def test_training_lowers_the_distillation_loss_and_resumes(teacher, tmp_path):
    supernet = SuperNet.from_teacher(teacher, scores_for(teacher))
    supernet.space = SearchSpace(4, 4, 16, (32, 64), (2, 4), (64, 128))
    train = toy_examples(96, seed=0)
    cfg = SearchConfig(batch_size=16, learning_rate=1e-3, sandwich=3, checkpoint_every=5)
    frozen = frozen_teacher(supernet)
    ckpt = tmp_path / "supernet.pt"
    events = []

    def hook(net):
        events.append(net.space)
        return {"pruned": True}

    first = train_supernet(
        supernet, frozen, TOY_SPEC, train, cfg, steps=10, checkpoint=ckpt, after_step={5: hook}
    )
    assert first["steps"] == 10 and first["events"] == {"5": {"pruned": True}}
    # a fresh supernet on the same checkpoint continues at step 10, hook not run again
    again = SuperNet.from_teacher(teacher, scores_for(teacher))
    more = train_supernet(
        again, frozen, TOY_SPEC, train, cfg, steps=60, checkpoint=ckpt, after_step={5: hook}
    )
    assert more["steps"] == 60 and len(events) == 1 and more["events"] == first["events"]
    assert again.space == supernet.space
    losses = [v for _, v in more["loss_history"]]
    assert losses[-1] < losses[0]
    scorer = SubnetScorer(again, TOY_SPEC, toy_examples(40, seed=1), max_len=16)
    acc = scorer(again.space.smallest())
    assert 0.0 <= acc <= 1.0 and again.space.smallest() in scorer.cache


def test_candidates_are_measured_through_the_agent(tmp_path):
    """The top candidates of a search for another device are bundled, uploaded to its agent and
    measured there; without an agent they are left as predictions, said so."""
    from conftest import start_agent, write_tiny_bert

    from toolchain.config import BudgetSpec
    from toolchain.models.loading import load_model
    from toolchain.target import Agent, AgentPool, DeviceTarget

    teacher = load_model(
        str(write_tiny_bert(tmp_path / "t", classifier=True, positions=160)),
        head="sequence-classification",
    )
    supernet = SuperNet.from_teacher(teacher, scores_for(teacher)).eval()
    student = supernet.extract(supernet.space.smallest())
    student.tokenizer = supernet.adapter.tokenizer
    budget = BudgetSpec(name="b", latency_ms=50.0, memory_mb=4096, batch=1, seq_len=16)
    jetson = DeviceTarget.resolve("jetson")
    assert jetson.measure_candidate(student, TOY_SPEC, budget, "fp32") is None
    assert jetson.candidate_note(1, "fp32").startswith("not measured")
    with start_agent(tmp_path / "agent", "secret-token") as (url, _):
        host = DeviceTarget.resolve("host")
        through_agent = replace(host, pool=AgentPool([Agent(url, "secret-token", "")]))
        m = through_agent.measure_candidate(student, TOY_SPEC, budget, "fp32")
        note = through_agent.candidate_note(1, "fp32")
    assert note.startswith(f"top 1 measured through the agent at {url}")
    assert m["label"] == f"measured on x86-64-host by the agent at {url}" and m["agent"] == url
    assert 0 < m["p50_ms"] <= m["p90_ms"] and m["verdict"] == "met" and m["format"] == "fp32"


def test_the_fastest_candidate_near_the_best_accuracy_wins():
    from toolchain.nas.budget import choose

    def cand(acc, predicted, measured=None, verdict="met"):
        c = {"arch": "x", "accuracy": acc, "predicted": {"latency_ms": predicted}}
        if measured is not None:
            c["measured"] = {"p50_ms": measured, "p90_ms": measured * 1.1, "verdict": verdict}
        return c

    a, b, c = cand(0.90, 5.0), cand(0.897, 3.0), cand(0.85, 1.0)
    assert choose([a, b, c], 0.005) is b  # within 0.5 point of the best, and faster
    assert choose([a, b, c], 0.0) is a
    # measured figures decide over predictions; a candidate that missed is not chosen
    m1, m2 = cand(0.90, 5.0, 6.0, "missed"), cand(0.899, 5.0, 4.0)
    assert choose([m1, m2], 0.005) is m2
    # every measured one missed: the fastest, which says it missed
    x, y = cand(0.9, 1.0, 9.0, "missed"), cand(0.8, 1.0, 7.0, "missed")
    assert choose([x, y], 0.005) is y
