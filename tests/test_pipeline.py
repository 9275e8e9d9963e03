"""toolchain/pipeline.py: atomic stage outputs, stage records, resume, force, kill safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from toolchain.config import DistillConfig
from toolchain.errors import EdgecError, StageError
from toolchain.pipeline import RECORD_NAME, RunDir, Stage, StageContext, hash_path


class Calls:
    """Stage functions that count their calls."""

    def __init__(self):
        self.n: dict[str, int] = {}

    def writer(self, name: str, text: str = "out"):
        def fn(ctx: StageContext):
            self.n[name] = self.n.get(name, 0) + 1
            for dep, path in ctx.inputs.items():
                assert (path / RECORD_NAME).is_file(), f"{dep} must be complete before {name}"
            config = "" if ctx.config is None else repr(ctx.config)
            (ctx.out_dir / f"{name}.txt").write_text(text + config)
            return {"calls": self.n[name]}

        return fn


def three_stages(calls: Calls, *, fail_in: str | None = None, cfg=None):
    def failing(ctx: StageContext):
        calls.n["b"] = calls.n.get("b", 0) + 1
        (ctx.out_dir / "half.txt").write_text("half-written")
        raise RuntimeError("boom midway")

    return [
        Stage("a", calls.writer("a"), config=cfg or {"lr": 1}),
        Stage("b", failing if fail_in == "b" else calls.writer("b"), depends=("a",)),
        Stage("c", calls.writer("c"), depends=("b",)),
    ]


def test_first_run_writes_every_stage_with_record(tmp_path):
    calls = Calls()
    with RunDir(tmp_path / "run") as run:
        results = run.run(three_stages(calls), seed=5)
    assert [r.status for r in results] == ["ran", "ran", "ran"]
    rec = json.loads((tmp_path / "run" / "b" / RECORD_NAME).read_text())
    assert rec["status"] == "complete" and rec["seed"] == 5
    assert rec["outputs"]["b.txt"]["size"] == 3
    assert (tmp_path / "run" / "a" / "a.txt").read_text() == "out{'lr': 1}"
    assert rec["metrics"] == {"calls": 1}
    assert rec["versions"]["edgec"] and rec["wall_s"] >= 0 and rec["input_hash"]
    assert rec["depends"] == ["a"]


def test_rerun_skips_matching_stages(tmp_path):
    calls = Calls()
    with RunDir(tmp_path) as run:
        run.run(three_stages(calls))
        results = run.run(three_stages(calls))
    assert [r.status for r in results] == ["skipped"] * 3
    assert calls.n == {"a": 1, "b": 1, "c": 1}


def test_failure_midway_leaves_no_output_and_next_run_resumes_there(tmp_path):
    calls = Calls()
    with RunDir(tmp_path) as run:
        with pytest.raises(StageError, match="stage 'b' failed with RuntimeError: boom midway"):
            run.run(three_stages(calls, fail_in="b"))
        assert (tmp_path / "a" / RECORD_NAME).is_file()
        assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
        assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "temp folder removed"
        results = run.run(three_stages(calls))
    assert [r.status for r in results] == ["skipped", "ran", "ran"]
    assert calls.n == {"a": 1, "b": 2, "c": 1}


def test_config_change_reruns_that_stage_and_downstream(tmp_path):
    # a's output depends on its config, so b sees a changed input and re-runs; b's own output is
    # the same as before, so c's inputs are unchanged and c is kept (records are content-based).
    calls = Calls()
    with RunDir(tmp_path) as run:
        run.run(three_stages(calls, cfg=DistillConfig()))
        results = run.run(three_stages(calls, cfg=DistillConfig(temperature=4.0)))
    assert [r.status for r in results] == ["ran", "ran", "skipped"]
    rec = json.loads((tmp_path / "a" / RECORD_NAME).read_text())
    assert rec["config"]["temperature"] == 4.0 and rec["config"]["__type__"] == "DistillConfig"


def test_seed_change_reruns(tmp_path):
    calls = Calls()
    with RunDir(tmp_path) as run:
        run.run(three_stages(calls), seed=0)
        assert [r.status for r in run.run(three_stages(calls), seed=1)] == ["ran"] * 3


def test_force_stage_reruns_it_and_unchanged_downstream_is_kept(tmp_path):
    calls = Calls()
    with RunDir(tmp_path) as run:
        run.run(three_stages(calls))
        results = run.run(three_stages(calls), force=["b"])
    # b re-ran and produced identical output, so c's inputs are unchanged and c is kept.
    assert [r.status for r in results] == ["skipped", "ran", "skipped"]
    with RunDir(tmp_path) as run, pytest.raises(StageError, match="--force-stage nope: no such"):
        run.run(three_stages(calls), force=["nope"])


def test_changed_upstream_output_reruns_downstream(tmp_path):
    calls = Calls()
    stages = three_stages(calls)
    with RunDir(tmp_path) as run:
        run.run(stages)
        stages[1] = Stage("b", calls.writer("b", text="different"), depends=("a",))
        results = run.run(stages, force=["b"])
    assert [r.status for r in results] == ["skipped", "ran", "ran"]


def test_external_input_change_reruns(tmp_path):
    data = tmp_path / "data.tsv"
    data.write_text("x\t1\n")
    calls = Calls()
    stages = [Stage("a", calls.writer("a"), inputs=(data,))]
    with RunDir(tmp_path / "run") as run:
        run.run(stages)
        assert run.run(stages)[0].status == "skipped"
        data.write_text("x\t0\n")
        assert run.run(stages)[0].status == "ran"


def test_tampered_output_reruns(tmp_path):
    calls = Calls()
    with RunDir(tmp_path) as run:
        run.run(three_stages(calls))
        (tmp_path / "c" / "c.txt").write_text("truncated?")
        assert [r.status for r in run.run(three_stages(calls))] == ["skipped", "skipped", "ran"]


def test_same_size_change_to_an_output_reruns_it_and_every_stage_after_it(tmp_path):
    calls = Calls()
    with RunDir(tmp_path) as run:
        run.run(three_stages(calls))
        path = tmp_path / "a" / "a.txt"
        data = bytearray(path.read_bytes())
        data[0] ^= 1  # one flipped bit: same size, other content
        path.write_bytes(bytes(data))
        results = run.run(three_stages(calls))
    # a's re-run writes the same bytes as before, so only the content check can make b, c re-run
    assert [r.status for r in results] == ["ran", "ran", "ran"]
    assert calls.n == {"a": 2, "b": 2, "c": 2}
    with RunDir(tmp_path) as run:
        assert [r.status for r in run.run(three_stages(calls))] == ["skipped"] * 3


def test_lock_file_removed_on_close_and_directory_reusable(tmp_path):
    run = RunDir(tmp_path)
    assert (tmp_path / ".lock").is_file()
    run.close()
    assert not (tmp_path / ".lock").exists()
    with RunDir(tmp_path):  # reopening takes a fresh lock
        code = f"from toolchain.pipeline import RunDir; RunDir({str(tmp_path)!r})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "is in use by another edgec process" in proc.stderr


def test_failed_stage_keeps_its_checkpoints_after_close(tmp_path):
    def fail(ctx: StageContext):
        (ctx.checkpoint_dir / "step.txt").write_text("50")
        raise RuntimeError("killed")

    with RunDir(tmp_path) as run, pytest.raises(StageError):
        run.run([Stage("train", fail)])
    assert [p.name for p in (tmp_path / ".checkpoints").iterdir()][0].startswith("train-")


def test_graph_errors(tmp_path):
    calls = Calls()
    with RunDir(tmp_path) as run:
        with pytest.raises(StageError, match="depends on 'z', which does not run before it"):
            run.run([Stage("a", calls.writer("a"), depends=("z",))])
        with pytest.raises(StageError, match="appears twice"):
            run.run([Stage("a", calls.writer("a")), Stage("a", calls.writer("a"))])
        with pytest.raises(StageError, match="use a-z"):
            run.run([Stage("../x", calls.writer("a"))])
    assert calls.n == {}


def test_edgec_error_in_stage_is_wrapped_with_its_message(tmp_path):
    def bad(ctx):
        raise EdgecError("data file missing: /x/train.tsv")

    with RunDir(tmp_path) as run, pytest.raises(StageError, match="stage 'a' failed: data file"):
        run.run([Stage("a", bad)])


def test_checkpoint_dir_survives_failure_and_is_dropped_on_success(tmp_path):
    attempts = []

    def train(ctx: StageContext):
        ckpt = ctx.checkpoint_dir / "step.txt"
        start = int(ckpt.read_text()) if ckpt.exists() else 0
        attempts.append(start)
        ckpt.write_text(str(start + 50))
        if start == 0:
            raise RuntimeError("killed at step 50")
        (ctx.out_dir / "model.txt").write_text("done")

    with RunDir(tmp_path) as run:
        with pytest.raises(StageError):
            run.run([Stage("train", train)])
        run.run([Stage("train", train)])
    assert attempts == [0, 50]  # the second attempt resumed from the checkpoint
    assert not (tmp_path / ".checkpoints").exists()  # dropped on success, its folder on close
    assert not (tmp_path / ".lock").exists()


def test_second_process_on_same_run_dir_is_refused(tmp_path):
    with RunDir(tmp_path):
        code = f"from toolchain.pipeline import RunDir; RunDir({str(tmp_path)!r})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "is in use by another edgec process" in proc.stderr


def test_hash_path_covers_names_and_contents(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    h1 = hash_path(tmp_path / "d")
    (tmp_path / "d" / "x").write_text("2")
    h2 = hash_path(tmp_path / "d")
    (tmp_path / "d" / "x").rename(tmp_path / "d" / "y")
    assert len({h1, h2, hash_path(tmp_path / "d")}) == 3
    with pytest.raises(EdgecError, match="stage input not found"):
        hash_path(tmp_path / "missing")


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from toolchain.pipeline import RunDir, Stage

    run_dir, log, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def prepare(ctx):
        with log.open("a") as f:
            f.write("prepare\\n")
        (ctx.out_dir / "data.txt").write_text("prepared")

    def train(ctx):
        with log.open("a") as f:
            f.write("train\\n")
        (ctx.out_dir / "partial.bin").write_bytes(b"x" * 1000)
        if mode == "hang":
            (run_dir.parent / "train-started").touch()
            time.sleep(120)
        (ctx.out_dir / "model.bin").write_bytes(b"w" * 10)

    def export(ctx):
        with log.open("a") as f:
            f.write("export\\n")
        (ctx.out_dir / "model.onnx").write_text("graph")

    with RunDir(run_dir) as run:
        stages = [Stage("prepare", prepare), Stage("train", train, depends=("prepare",)),
                  Stage("export", export, depends=("train",))]
        for r in run.run(stages):
            print(r.name, r.status)
    """
)


def test_killed_build_resumes_at_the_killed_stage(tmp_path):
    script = tmp_path / "build.py"
    script.write_text(KILL_SCRIPT)
    run_dir, log = tmp_path / "run", tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(log), "hang"])
    deadline = time.time() + 60
    while not (tmp_path / "train-started").exists():
        assert proc.poll() is None and time.time() < deadline, "train never started"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    assert (run_dir / "prepare" / RECORD_NAME).is_file()
    assert not (run_dir / "train").exists(), "a killed stage must not look complete"
    assert [p for p in run_dir.iterdir() if p.name.startswith(".train.tmp-")]

    done = subprocess.run(
        [sys.executable, str(script), str(run_dir), str(log), "finish"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["prepare skipped", "train ran", "export ran"]
    assert log.read_text().split() == ["prepare", "train", "train", "export"]
    rec = json.loads((run_dir / "train" / RECORD_NAME).read_text())
    assert set(rec["outputs"]) == {"partial.bin", "model.bin"}
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name], "leftover cleaned up"


def test_stage_on_real_data_file(tmp_path, shared_data: Path):
    """A stage reading a real data set: its content hash is part of the record's identity."""
    dev = shared_data / "glue" / "SST-2" / "dev.tsv"

    def count(ctx: StageContext):
        rows = dev.read_text(encoding="utf-8").splitlines()[1:]
        labels = [line.rsplit("\t", 1)[1] for line in rows]
        (ctx.out_dir / "counts.json").write_text(json.dumps({"rows": len(rows)}))
        return {"rows": len(rows), "positive": labels.count("1")}

    with RunDir(tmp_path) as run:
        (res,) = run.run([Stage("count", count, inputs=(dev,))])
        assert res.record["metrics"]["rows"] == 872  # the official GLUE SST-2 dev set
        assert 0 < res.record["metrics"]["positive"] < 872
        assert run.run([Stage("count", count, inputs=(dev,))])[0].status == "skipped"


def test_a_stage_may_depend_on_one_completed_in_an_earlier_call(tmp_path):
    """A build runs its stages one call at a time: a dependency completed earlier in the same run
    directory counts, and its output hash is part of the dependent stage's identity."""
    calls = Calls()
    with RunDir(tmp_path) as run:
        run.run([Stage("a", calls.writer("a"))])
        (res,) = run.run([Stage("b", calls.writer("b"), depends=("a",))])
        assert res.status == "ran" and res.record["depends"] == ["a"]
        run.run([Stage("a", calls.writer("a", "changed"))], force=["a"])  # new output of a
        (again,) = run.run([Stage("b", calls.writer("b"), depends=("a",))])
        assert again.status == "ran" and calls.n["b"] == 2
        with pytest.raises(StageError, match="depends on 'z', which does not run before it"):
            run.run([Stage("c", calls.writer("c"), depends=("z",))])
