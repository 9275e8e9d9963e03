"""`edgec build --supernet agnostic` on a tiny model: the first task trains the task-agnostic
supernet (once, in the teacher cache) and adapts it; a second task, with its own teacher, finds
it done and trains no supernet: only its short task fine-tune of the supernet (proxy_steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from toy import write_toy_table

REPO = Path(__file__).resolve().parents[1]

RECIPE = """
device: host
budgets:
  - {name: easy, latency_ms: 500, memory_mb: 8192, percentile: 90}
teacher_finetune: {max_steps: 30, batch_size: 8, learning_rate: 0.003, eval_every: 15,
                   max_seq_len: 32, require_above_trivial: false}
search: {supernet: agnostic, agnostic_steps: 5, proxy_steps: 4, agnostic_block_layers: 1,
         sandwich: 2, batch_size: 8, max_seq_len: 32, population: 4, generations: 1,
         eval_samples: 16, measure_top_k: 0, finalists: 1}
distill: {steps: 4, batch_size: 8, max_seq_len: 32, eval_every: 4, eval_samples: 16}
quantize: {method: none}
export: {parity_samples: 8}
robustness: {enabled: false}
quality: {accuracy_floor: 0.0, max_distilled: 1}
"""


def _build(tmp: Path, task: str, seed: int) -> subprocess.CompletedProcess:
    from conftest import write_fake_predictor, write_tiny_bert

    if not (tmp / "model").is_dir():
        write_tiny_bert(tmp / "model", positions=160)
        write_fake_predictor(tmp / "predictors")
        (tmp / "recipe.yaml").write_text(RECIPE)
        (tmp / "notes.txt").write_text(
            "\ufeffthe movie was good\nhello world\na great movie is a good movie\n" * 20
        )  # the user's own text, with a byte-order mark
    write_toy_table(tmp / f"{task}-train.tsv", 120, seed)
    write_toy_table(tmp / f"{task}-dev.tsv", 30, seed + 1)
    args = [
        sys.executable, "-m", "toolchain", "build", "--recipe", "recipe.yaml",
        "--model", "model", "--supernet", "agnostic", "--text", "notes.txt",
        "--train-file", f"{task}-train.tsv", "--dev-file", f"{task}-dev.tsv",
        "--text-column", "text", "--label-column", "label",
        "--predictors", "predictors", "--train-device", "cpu", "--teacher-cache", "teachers",
        "-o", f"run-{task}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


def test_a_second_task_reuses_the_agnostic_supernet(tmp_path):
    first = _build(tmp_path, "a", 0)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "edgec build: agnostic-supernet: done" in first.stdout
    second = _build(tmp_path, "b", 5)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "edgec build: agnostic-supernet: cached" in second.stdout

    stages = sorted((tmp_path / "teachers").glob("agnostic-supernet-*/stage.json"))
    assert len(stages) == 1  # one agnostic supernet for both tasks
    agnostic = json.loads(stages[0].read_text())
    # nothing of a task in its identity: the pretrained model, the text and its settings
    assert set(agnostic["config"]) == {"teacher", "agnostic", "rev"}
    assert agnostic["metrics"]["steps"] == 5 and agnostic["metrics"]["sentences"] == 60
    teachers = [
        p
        for p in (tmp_path / "teachers").glob("table-*/stage.json")
        if not p.parent.name.endswith("-ort-int8")
    ]  # the teachers, not their baselines
    assert len(teachers) == 2  # each task its own teacher

    for task in ("a", "b"):
        run = tmp_path / f"run-{task}"
        search = json.loads((run / "search" / "stage.json").read_text())
        supernet = search["metrics"]["supernet"]
        # the task's supernet: the agnostic one, fine-tuned proxy_steps; no supernet training
        assert supernet["agnostic"] == str(stages[0].parent / "supernet")
        assert supernet["steps"] == 4
        build = json.loads((run / "build.json").read_text())
        assert build["stage_status"]["agnostic-supernet"] == ("ran" if task == "a" else "cached")
        assert all(b.get("built") for b in build["bundles"]), build["bundles"]
