"""toolchain/nas/agnostic.py: block-wise training of the task-agnostic supernet on unlabelled
text, its subnets as plain models, and a task's view of it."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from conftest import TINY_WORDS, write_tiny_bert

from toolchain.config import SearchConfig
from toolchain.models.loading import load_model
from toolchain.nas.agnostic import (
    EMBEDDINGS,
    adapt_to_task,
    agnostic_supernet,
    block_loss,
    blocks_of,
    read_meta,
    teacher_pass,
    train_agnostic,
)
from toolchain.nas.space import Arch
from toolchain.nas.supernet import SuperNet

CFG = SearchConfig(batch_size=4, max_seq_len=16, sandwich=2, learning_rate=1e-2,
                   agnostic_block_layers=1, checkpoint_every=1000)  # fmt: skip


def _texts(n: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(TINY_WORDS, k=rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture
def base(tmp_path):
    return load_model(str(write_tiny_bert(tmp_path / "base")), head="base")


def _params(net: SuperNet) -> dict:
    return {k: v.detach().clone() for k, v in net.model.named_parameters()}


def _changed(before: dict, net: SuperNet) -> set[str]:
    now = dict(net.model.named_parameters())
    return {k for k, v in before.items() if not torch.equal(v, now[k].detach())}


def test_the_blocks():
    assert blocks_of(6, 2) == [EMBEDDINGS, (0, 1), (2, 3), (4, 5)]
    assert blocks_of(5, 2) == [EMBEDDINGS, (0, 1), (2, 3), (4,)]


@pytest.mark.parametrize(
    "block, prefix",
    [((1,), "encoder.layer.1."), ((0,), "encoder.layer.0."), (EMBEDDINGS, "embeddings.")],
)
def test_block_wise_training_changes_only_the_block_being_trained(base, block, prefix):
    net, _ = agnostic_supernet(base, _texts(8), CFG)
    before = _params(net)
    result = train_agnostic(net, _texts(), CFG, steps=3, blocks=[block])
    changed = _changed(before, net)
    assert changed, "the trained block did not change"
    assert all(k.startswith(prefix) for k in changed), sorted(changed)
    assert result["steps"] == 3 and result["loss_history"]


def test_a_blocks_loss_reaches_its_own_weights_only(base):
    """Training every block at once is training each alone: a block's input is the teacher's."""
    net, _ = agnostic_supernet(base, _texts(8), CFG)
    teacher = SuperNet(load_model_like(net), net.space).eval()
    enc = base.tokenizer(_texts(4), padding=True, return_tensors="pt")
    batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        states, probs = teacher_pass(teacher, batch)
    net.train()
    loss = block_loss(net, net.space.largest(), (1,), batch, states, probs, 1.0)
    loss.backward()
    with_grad = {k for k, p in net.model.named_parameters() if p.grad is not None
                 and p.grad.abs().sum() > 0}  # fmt: skip
    assert with_grad and all(k.startswith("encoder.layer.1.") for k in with_grad)


def load_model_like(net: SuperNet):
    from toolchain.nas.agnostic import _frozen_adapter

    return _frozen_adapter(net)


def test_the_largest_subnet_starts_as_the_teacher_and_a_skipped_block_trains_nothing(base):
    net, _ = agnostic_supernet(base, _texts(8), CFG)
    teacher = SuperNet(load_model_like(net), net.space).eval()
    net.eval()
    enc = base.tokenizer(_texts(4), padding=True, return_tensors="pt")
    batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        states, probs = teacher_pass(teacher, batch)
        largest = net.space.largest()
        for b in blocks_of(2, 1):
            assert block_loss(net, largest, b, batch, states, probs, 1.0).item() < 1e-8
        # reordering units by importance keeps the function: the supernet is the teacher
        hf = base.model.eval()(**batch).last_hidden_state
        net.set_active(largest)
        own = net(**batch).logits  # headless: the last hidden state
        order = read_order(net, base)
        assert torch.allclose(own, hf[..., order], atol=1e-5)
        skipping = Arch((0,), largest.hidden, largest.heads, largest.ffn)
        assert block_loss(net, skipping, (1,), batch, states, probs, 1.0) is None


def read_order(net: SuperNet, base) -> list[int]:
    """The hidden permutation: which of the base model's dimensions each supernet one is."""
    emb_net = net.model.embeddings.word_embeddings.weight
    emb_base = base.model.embeddings.word_embeddings.weight
    return [
        int((emb_base - emb_net[:, [j]]).abs().sum(0).argmin()) for j in range(emb_net.shape[1])
    ]


def test_a_subnet_of_the_trained_supernet_loads_as_a_plain_hf_model(base, tmp_path):
    from transformers import AutoModel

    net, order = agnostic_supernet(base, _texts(8), CFG)
    train_agnostic(net, _texts(), CFG, steps=2)
    folder = net.save(tmp_path / "agnostic", extra={"order": order, "teacher": "tiny"})
    again = SuperNet.load(folder)
    assert again.headless and read_meta(folder)["order"] == order
    arch = Arch((1,), 16, 2, 32)
    sub = again.extract(arch)
    sub.tokenizer = base.tokenizer
    sub.save(tmp_path / "sub")
    plain = AutoModel.from_pretrained(tmp_path / "sub").eval()
    assert type(plain).__name__ == "BertModel" and plain.config.num_hidden_layers == 1
    assert plain.config.hidden_size == 16 and plain.config.intermediate_size == 32
    enc = base.tokenizer(_texts(3), padding=True, return_tensors="pt")
    again.eval().set_active(arch)
    with torch.no_grad():
        assert torch.allclose(plain(**enc).last_hidden_state, again(**enc).logits, atol=1e-5)


def test_a_task_gets_the_supernet_with_the_task_teachers_head_in_its_order(base, tmp_path):
    """With an untrained agnostic supernet and a task teacher that is the pretrained encoder with
    a head, the task's largest subnet is exactly the task teacher: units and head aligned."""
    from transformers import BertForSequenceClassification

    from toolchain.data.tasks import get_task

    net, order = agnostic_supernet(base, _texts(8), CFG)
    folder = net.save(tmp_path / "agnostic", extra={"order": order})
    spec = get_task("sst2")
    torch.manual_seed(1)
    config = copy.deepcopy(base.model.config)
    config.num_labels = 2
    head = BertForSequenceClassification(config)
    head.bert.load_state_dict(base.model.state_dict())
    task_teacher = type(base)(head.eval(), base.tokenizer)
    supernet, teacher = adapt_to_task(folder, task_teacher, spec)
    enc = base.tokenizer(_texts(4), padding=True, return_tensors="pt")
    supernet.eval().set_active(supernet.space.largest())
    with torch.no_grad():
        want = task_teacher.model(**enc).logits
        assert torch.allclose(supernet(**enc).logits, want, atol=1e-5)
        assert torch.allclose(teacher(**enc).logits, want, atol=1e-5)


def test_a_folder_that_is_not_an_agnostic_supernet_is_refused(tmp_path):
    from toolchain.errors import ConfigError

    with pytest.raises(ConfigError, match="not a task-agnostic supernet"):
        read_meta(tmp_path)


def test_edgec_supernet_from_another_directory_with_relative_paths(tmp_path, edgec):
    write_tiny_bert(tmp_path / "base")
    (tmp_path / "notes.txt").write_text("\n".join(_texts(30)) + "\n")
    args = ["supernet", "--model", "base", "--text", "notes.txt", "--steps", "2",
            "--batch-size", "4", "--max-seq-len", "16", "--block-layers", "1",
            "--train-device", "cpu", "-o", "out/agnostic"]  # fmt: skip
    done = edgec(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 steps on 30 sentences" in done.stdout
    net = SuperNet.load(tmp_path / "out" / "agnostic" / "supernet")
    assert net.headless and read_meta(tmp_path / "out" / "agnostic" / "supernet")["sentences"] == 30
    again = edgec(*args, cwd=tmp_path)  # the same command again: nothing to do
    assert again.returncode == 0 and "up to date (cached)" in again.stdout
    bad = edgec(*[a if a != "notes.txt" else "missing.txt" for a in args], cwd=tmp_path)
    assert bad.returncode == 1 and "neither one of wikitext" in bad.stderr
    assert "Traceback" not in bad.stderr
