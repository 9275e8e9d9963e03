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
