"""`edgec distill` and `edgec eval --teacher` end to end on tiny models."""

from __future__ import annotations

import json

import pytest
from toy import write_toy_table


@pytest.fixture
def teacher(edgec, tiny_bert_dir, tmp_path):
    write_toy_table(tmp_path / "train.tsv", 400, 0)
    write_toy_table(tmp_path / "dev.tsv", 60, 1)
    out = tmp_path / "teacher"
    proc = edgec(
        "teacher",
        "--model",
        str(tiny_bert_dir),
        "--train-file",
        str(tmp_path / "train.tsv"),
        "--dev-file",
        str(tmp_path / "dev.tsv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--max-steps",
        "120",
        "--learning-rate",
        "1e-3",  # see test_teacher_eval.py
        "--batch-size",
        "16",
        "--no-clean",
        "-o",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_distill_then_eval_with_teacher(edgec, teacher, tmp_path):
    data = [
        "--train-file",
        str(tmp_path / "train.tsv"),
        "--dev-file",
        str(tmp_path / "dev.tsv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
    ]
    out = tmp_path / "student"
    proc = edgec(
        "distill",
        "--teacher",
        str(teacher),
        *data,
        "--student-shape",
        "L1:H32:A4:F64",
        "--init",
        "etd-impt",
        "--mapping",
        "rail",
        "--steps",
        "40",
        "--eval-every",
        "20",
        "--learning-rate",
        "3e-3",
        "--batch-size",
        "16",
        "--no-clean",
        "-o",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(L1:H32:A4:F64," in proc.stdout and "loyalty: label" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init"] == "etd-impt" and metrics["mapping"] == "rail"
    ev = edgec(
        "eval",
        str(out),
        "--teacher",
        str(teacher),
        "--dev-file",
        str(tmp_path / "dev.tsv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--json",
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["label_loyalty"] == pytest.approx(metrics["dev"]["label_loyalty"])
    assert result["teacher"]["accuracy"] == pytest.approx(metrics["dev"]["teacher"]["accuracy"])


def test_distill_needs_a_student_shape(edgec, teacher, tmp_path):
    proc = edgec(
        "distill",
        "--teacher",
        str(teacher),
        "--task",
        "sst2",
        "--data-dir",
        str(tmp_path),
        "-o",
        str(tmp_path / "s"),
    )
    assert proc.returncode == 1
    assert "distillation needs a student shape (--student-shape L3:H384:A12:F1536)" in proc.stderr


def test_distill_bad_shape_is_named(edgec, teacher, tmp_path):
    proc = edgec(
        "distill",
        "--teacher",
        str(teacher),
        "--task",
        "sst2",
        "--data-dir",
        str(tmp_path),
        "--student-shape",
        "L3-H384",
        "-o",
        str(tmp_path / "s"),
    )
    assert proc.returncode == 1
    assert "distill.student_shape: expected 'L<layers>:H<hidden>:A<heads>:F<ffn>'" in proc.stderr


DATA = ("--text-column", "text", "--label-column", "label")


def test_theseus_and_prune_from_the_command_line(edgec, teacher, tmp_path):
    data = ("--train-file", str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv"),
            *DATA)  # fmt: skip
    theseus = edgec("distill", "--teacher", str(teacher), *data, "--method", "theseus",
                    "--student-shape", "L1:H32:A4:F64", "--steps", "8", "--eval-every", "4",
                    "--replace-start", "0.5", "--successor-fraction", "0.5", "--json",
                    "-o", str(tmp_path / "theseus"), timeout=600)  # fmt: skip
    assert theseus.returncode == 0, theseus.stderr
    m = json.loads(theseus.stdout)
    assert m["method"] == "theseus" and m["student_shape"].startswith("L1:")
    assert m["schedule"] == {"replace_start": 0.5, "replacing_steps": 4, "successor_steps": 4,
                             "block": 2, "successor_init": "teacher layers 0..n-1"}  # fmt: skip
    assert "label_loyalty" in m["dev"]

    pruned = edgec("prune", "--teacher", str(teacher), *data, "--method", "structured",
                   "--sparsity", "0.5", "--steps", "4", "--eval-every", "2",
                   "--importance-samples", "32", "-o", str(tmp_path / "pruned"),
                   timeout=600)  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert "heads 8 -> 4, FFN 64 -> 32" in pruned.stdout
    assert "loyalty: label" in pruned.stdout
    bad = edgec("prune", "--teacher", str(teacher), *data, "--sparsity", "1.5",
                "-o", str(tmp_path / "bad"))  # fmt: skip
    assert bad.returncode == 1 and "prune.sparsity" in bad.stderr
