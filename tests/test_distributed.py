"""Data-parallel training under torchrun (:mod:`toolchain.distributed`): two gloo processes on CPU
train a tiny model to the weights one process reaches with the same global batch, only rank 0
writes, and a run whose rank is killed resumes from its checkpoint.

Tolerance: the ranks' gradients are summed in another order than one process sums its batch, so
weights agree to float rounding, compounded over the steps; 1e-4 on weights of order 0.1 leaves
three orders of magnitude to the 1e-7..1e-6 observed after 12-24 steps and is far below what a
wrong shard, weight or learning-rate schedule gives (>1e-2 after one step at lr 3e-3). LSQ codes
are integers: a weight within rounding of a code boundary may land on the neighbouring code, so
they must agree on 99% of the packed bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import REPO, write_tiny_bert
from safetensors.torch import load_file
from toy import write_toy_table

from toolchain import distributed as dist
from toolchain.cli.main import _without

WEIGHT_ATOL = 1e-4
TABLE = ("--train-file", "train.tsv", "--dev-file", "dev.tsv", "--text-column", "text",
         "--label-column", "label", "--no-clean", "-q")  # fmt: skip


@pytest.fixture
def work(tmp_path) -> Path:
    """A toy table task and a tiny BERT without dropout (so one and two processes can agree to
    rounding), in ``tmp_path``."""
    folder = write_tiny_bert(tmp_path / "tiny", classifier=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    write_toy_table(tmp_path / "train.tsv", 200, 0)
    write_toy_table(tmp_path / "dev.tsv", 40, 1)
    (tmp_path / "scratch").mkdir()
    return tmp_path


def edgec(work: Path, *args: str, timeout: float = 300, env: dict | None = None):
    """`edgec ARGS` from ``work`` (relative paths), with its own TMPDIR: the ranks' scratch
    folders must be gone from it afterwards."""
    full = {**os.environ, "TMPDIR": str(work / "scratch"), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", *args], cwd=work, env=full, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def max_diff(a: Path, b: Path) -> float:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


TEACHER = ("teacher", "--model", "tiny", *TABLE, "--max-steps", "24", "--eval-every", "8",
           "--batch-size", "16", "--lr", "3e-3")  # fmt: skip


def test_two_gloo_ranks_fine_tune_to_the_weights_of_one_process(work):
    edgec(work, *TEACHER, "-o", "one")
    two = edgec(work, *TEACHER, "-o", "two", "--nproc", "2")
    assert "training on 2 processes" in two.stderr
    assert max_diff(work / "one", work / "two") < WEIGHT_ATOL
    one_m = json.loads((work / "one" / "metrics.json").read_text())
    two_m = json.loads((work / "two" / "metrics.json").read_text())
    assert (one_m["nproc"], two_m["nproc"]) == (1, 2)
    # the same evaluations, on the same validation split, at the same steps
    assert [h["step"] for h in one_m["history"]] == [h["step"] for h in two_m["history"]]
    for h1, h2 in zip(one_m["history"], two_m["history"], strict=True):
        assert h1["accuracy"] == h2["accuracy"]
    assert json.loads((work / "two" / "stage.json").read_text())["ranks"]["nproc"] == 2
    # only rank 0 wrote: the output, nothing beside it but its inputs; no scratch left behind
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["tiny", "train.tsv", "dev.tsv", "scratch", "one", "two"]
    )
    assert list((work / "scratch").glob("edgec-*")) == []  # (torchrun keeps its own logs there)


def test_two_gloo_ranks_distil_with_rail_kd_and_accumulation_like_one_process(work):
    edgec(work, *TEACHER, "-o", "teacher")
    distill = ("distill", "--teacher", "teacher", *TABLE, "--student-shape", "L1:H32:A4:F64",
               "--mapping", "rail", "--steps", "12", "--eval-every", "4", "--batch-size", "16",
               "--grad-accumulation", "2")  # fmt: skip
    edgec(work, *distill, "-o", "d1")
    edgec(work, *distill, "-o", "d2", "--nproc", "2")
    assert max_diff(work / "d1", work / "d2") < WEIGHT_ATOL
    m1, m2 = (json.loads((work / d / "metrics.json").read_text()) for d in ("d1", "d2"))
    assert [h["step"] for h in m1["history"]] == [h["step"] for h in m2["history"]]


@pytest.mark.slow
def test_two_gloo_ranks_train_kdlsq_and_the_supernet_like_one_process(work):
    # the device's budgets are measured at 128 tokens: a teacher with room for them
    write_tiny_bert(work / "tiny", classifier=True, positions=160)
    config = json.loads((work / "tiny" / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (work / "tiny" / "config.json").write_text(json.dumps(config))
    teacher = ("teacher", "--model", "tiny", *TABLE, "--max-steps", "48", "--eval-every", "8",
               "--batch-size", "16", "--lr", "3e-3")  # fmt: skip
    edgec(work, *teacher, "-o", "teacher")
    quantize = ("quantize", "teacher", "--teacher", "teacher", *TABLE, "--method", "kdlsq",
                "--w-bits", "4", "--steps", "8", "--eval-every", "4",
                "--batch-size", "16")  # fmt: skip
    edgec(work, *quantize, "-o", "q1")
    edgec(work, *quantize, "-o", "q2", "--nproc", "2")
    search = ("search", "--teacher", "teacher", *TABLE, "--device", "jetson", "--steps", "8",
              "--batch-size", "16", "--population", "6", "--generations", "2")  # fmt: skip
    edgec(work, *search, "-o", "s1")
    edgec(work, *search, "-o", "s2", "--nproc", "2")
    assert max_diff(work / "s1" / "supernet", work / "s2" / "supernet") < WEIGHT_ATOL
    x, y = (
        load_file(work / "q1" / "model.safetensors"),
        load_file(work / "q2" / "model.safetensors"),
    )
    for k in x:
        if x[k].dtype == torch.uint8:  # packed codes
            assert (x[k] == y[k]).float().mean() >= 0.99, k
        else:
            assert (x[k].float() - y[k].float()).abs().max() < WEIGHT_ATOL, k


def _workers(mark: str) -> dict[int, int]:
    """{rank: pid} of the torchrun workers whose environment holds ``EDGEC_TEST_MARK=mark``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(
                kv.split("=", 1)
                for kv in (entry / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in kv
            )
        except OSError:
            continue
        if env.get("EDGEC_TEST_MARK") == mark and "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("victim", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_a_killed_rank_restarts_and_resumes_from_the_checkpoint(work, victim):
    """Rank ``victim`` is SIGKILLed after the first checkpoint; torchrun (--max-restarts 1)
    restarts both ranks, which resume from it and end where an uninterrupted run ends."""
    long = ("teacher", "--model", "tiny", *TABLE[:-1], "--max-steps", "240", "--eval-every", "20",
            "--batch-size", "16", "--lr", "3e-3")  # fmt: skip
    edgec(work, *long, "-o", "whole", "--nproc", "2")
    mark = uuid.uuid4().hex
    env = {**os.environ, "TMPDIR": str(work / "scratch"), "EDGEC_TEST_MARK": mark}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolchain", *long, "-o", "killed", "--nproc", "2",
         "--max-restarts", "1"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # torchrun and its ranks with it: killed together on failure
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        ckpt = None
        while ckpt is None and time.monotonic() < deadline and proc.poll() is None:
            ckpt = next(iter(work.glob(".killed.checkpoints/*/finetune.pt")), None)
            time.sleep(0.05)
        assert ckpt is not None, "no checkpoint appeared"
        pids = _workers(mark)
        assert set(pids) == {0, 1}, pids
        os.kill(pids[victim], signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "resuming fine-tuning from step" in err
    assert max_diff(work / "whole", work / "killed") < WEIGHT_ATOL
    metrics = json.loads((work / "killed" / "metrics.json").read_text())
    whole = json.loads((work / "whole" / "metrics.json").read_text())
    assert metrics["steps"] == whole["steps"] and metrics["history"] == whole["history"]
    assert not list(work.glob(".killed*")), "a lock, checkpoint or temporary folder was left"


def test_outside_torchrun_the_helpers_are_a_world_of_one():
    batch = {"input_ids": torch.arange(10).view(5, 2), "labels": torch.arange(5)}
    assert not dist.launched() or "WORLD_SIZE" in os.environ
    assert (dist.world_size(), dist.rank(), dist.is_main(), dist.active()) == (1, 0, True, False)
    local, weight = dist.shard(batch)
    assert local is batch and weight == 1.0
    assert dist.on_main(lambda: 41 + 1) == 42
    assert dist.device("cpu") == "cpu"


def test_shards_cover_the_global_batch_with_weights_that_average_to_its_mean(monkeypatch):
    batch = {"input_ids": torch.arange(14).view(7, 2), "labels": torch.arange(7)}
    monkeypatch.setattr(dist, "active", lambda: True)
    monkeypatch.setattr(dist, "world_size", lambda: 3)
    rows, weights = [], []
    for r in range(3):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        local, weight = dist.shard(batch)
        rows += local["labels"].tolist()
        weights.append(weight)
        assert local["input_ids"].shape[0] == local["labels"].shape[0]
    assert rows == list(range(7))  # contiguous shares, in order, none repeated
    assert sum(weights) / 3 == pytest.approx(1.0)  # the ranks' weights average to one
    tiny = {"labels": torch.arange(2)}  # 2 rows for 3 ranks: one runs the graph at weight 0
    shares = []
    for r in range(3):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        local, weight = dist.shard(tiny)
        shares.append((local["labels"].tolist(), weight))
    assert shares == [([0], 0.0), ([0], 1.5), ([1], 1.5)]


def test_nproc_and_max_restarts_are_not_passed_on_to_the_ranks():
    argv = ["teacher", "--nproc", "2", "-o", "x", "--max-restarts=1", "--lr", "3e-3"]
    assert _without(argv, ("--nproc", "--max-restarts")) == ["teacher", "-o", "x", "--lr", "3e-3"]


def test_a_verb_that_does_not_train_is_refused_under_torchrun(tmp_path):
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "export", str(tmp_path), "-o", str(tmp_path / "o")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "does not train: run it without torchrun" in proc.stderr


def test_a_build_on_two_ranks_trains_together_and_ships_what_one_process_ships(tmp_path):
    """`edgec build --nproc 2` of the tiny build of tests/test_build.py: the same stages (names
    and configs, the golden shape), the training stages recorded as trained on 2 ranks, the
    same exit code (3: one budget cannot be met), bundles that verify, one report."""
    from conftest import write_fake_predictor
    from test_build import GOLDEN, RECIPE, build_shape

    from toolchain.bundle.manifest import verify

    write_toy_table(tmp_path / "train.tsv", 200, 0)
    write_toy_table(tmp_path / "dev.tsv", 40, 1)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    write_fake_predictor(tmp_path / "predictors")
    write_tiny_bert(tmp_path / "model", positions=160)
    (tmp_path / "scratch").mkdir()
    args = ["build", "--recipe", "recipe.yaml", "--model", "model", "--train-file", "train.tsv",
            "--dev-file", "dev.tsv", "--text-column", "text", "--label-column", "label",
            "--predictors", "predictors", "--train-device", "cpu", "--teacher-cache", "teachers",
            "-o", "run", "--nproc", "2"]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path / "scratch")}
    proc = subprocess.run([sys.executable, "-m", "toolchain", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]  # as one process: the impossible budget
    assert proc.stdout.count("report.md") == 1 and proc.stderr.count("is an alias") == 1
    assert build_shape(tmp_path) == json.loads(GOLDEN.read_text())
    ranks = {
        p.parent.name: json.loads(p.read_text()).get("ranks")
        for folder in (tmp_path / "run", tmp_path / "teachers")
        for p in folder.glob("*/stage.json")
    }
    trained = {n for n, r in ranks.items() if r}
    assert trained and all(ranks[n] == {"nproc": 2, "backend": "gloo"} for n in trained)
    assert {n.split("-")[0] for n in trained} == {"table", "search", "distill", "quantize"}
    assert all(ranks[n] is None for n in ranks if n.startswith(("export", "bundle")))
    summary = json.loads((tmp_path / "run" / "build.json").read_text())
    for b in summary["bundles"]:
        if b.get("built"):
            verify(tmp_path / "run" / b["bundle"])
    assert list((tmp_path / "scratch").glob("edgec-*")) == []
