"""`edgec teacher` and `edgec eval` end to end on a tiny model and tiny table data."""

from __future__ import annotations

import json

import pytest
from toy import write_toy_table


@pytest.fixture
def table(tmp_path):
    write_toy_table(tmp_path / "train.tsv", 400, 0)
    write_toy_table(tmp_path / "dev.tsv", 60, 1)
    return tmp_path


# lr 3e-3 for 60 steps left the tiny random model at chance in about 1 run in 3 (also on one
# thread); lr 1e-3 for 120 steps learns the toy task in every run tried.
TRAIN = [
    "--text-column",
    "text",
    "--label-column",
    "label",
    "--max-steps",
    "120",
    "--learning-rate",
    "1e-3",
    "--batch-size",
    "16",
    "--eval-every",
    "40",
    "--patience",
    "0",
    "--no-clean",  # the toy sentences repeat a lot; cleaning is tested in test_finetune
]


def test_teacher_then_eval_then_cached(edgec, tiny_bert_dir, table):
    out = table / "teacher"
    args = [
        "teacher",
        "--model",
        str(tiny_bert_dir),
        "--train-file",
        str(table / "train.tsv"),
        "--dev-file",
        str(table / "dev.tsv"),
        *TRAIN,
        "-o",
        str(out),
    ]
    first = edgec(*args, timeout=600)
    assert first.returncode == 0, first.stderr
    assert f"{out}: fine-tuned" in first.stdout
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.json",
        "stage.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] > 0.9 and metrics["steps"] == 120

    second = edgec(*args, timeout=600)
    assert second.returncode == 0 and "up to date (cached)" in second.stdout

    ev = edgec(
        "eval",
        str(out),
        "--dev-file",
        str(table / "dev.tsv"),
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--json",
        timeout=600,
    )
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["accuracy"] == pytest.approx(metrics["dev"]["accuracy"]) and result["n"] == 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["teacher", "-o", "x"], "name a task: --task sst2, or --train-file F"),
        (
            ["teacher", "--task", "sst2", "--train-file", "a.tsv", "-o", "x"],
            "give either --task or --train-file/--dev-file, not both",
        ),
        (["teacher", "--task", "sst3", "-o", "x"], "unknown task 'sst3' (did you mean 'sst2'?)"),
        (
            ["teacher", "--train-file", "a.tsv", "-o", "x"],
            "your own data needs --text-column (once or twice) and --label-column",
        ),
        (
            ["teacher", "--task", "sst2", "--model", "./no/such/dir", "-o", "x"],
            "model directory not found",
        ),
        (["eval", "./nope", "--task", "sst2"], "model directory not found"),
    ],
)
def test_bad_input_is_one_clear_message(edgec, tmp_path, args, message):
    proc = edgec(*args, env={"EDGEC_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def own_data_args(*extra: str):
    import argparse

    from toolchain.cli.teacher import add_task_arguments

    parser = argparse.ArgumentParser()
    add_task_arguments(parser)
    return parser.parse_args(["--text-column", "text", "--label-column", "label", *extra])


def test_labels_option_accepts_a_rare_class_the_typo_check_refuses(tmp_path):
    from toolchain.cli.teacher import task_from_args
    from toolchain.data.readers import DataError, read_file

    rows = ["text\tlabel"] + [f"hello {i}\tgreeting" for i in range(30)]
    rows += [f"bye {i}\tfarewell" for i in range(30)] + ["hi there\tgreet"]  # line 62
    path = tmp_path / "t.tsv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        task_from_args(own_data_args("--train-file", str(path)))
    assert "t.tsv:62: label 'greet' (1 row(s)) looks like a typo of 'greeting'" in str(info.value)
    assert "name every class: --labels farewell,greet,greeting" in str(info.value)
    args = own_data_args("--train-file", str(path), "--labels", "farewell, greet,greeting")
    spec = task_from_args(args)
    assert spec.labels == ("farewell", "greet", "greeting")
    assert read_file(spec, path, split="train")[-1].label == 1
    # a label left out of the list is refused by name
    spec = task_from_args(own_data_args("--train-file", str(path), "--labels", "farewell,greeting"))
    with pytest.raises(
        DataError, match="t.tsv:62: unknown label 'greet'; expected one of farewell"
    ):
        read_file(spec, path, split="train")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("pos", "--labels needs two or more distinct class names separated by commas, got 'pos'"),
        ("pos,,neg", "two or more distinct class names"),
        ("pos,neg,pos", "two or more distinct class names"),
    ],
)
def test_bad_labels_option_is_one_clear_message(tmp_path, labels, message):
    from toolchain.cli.teacher import task_from_args
    from toolchain.errors import ConfigError

    args = own_data_args("--train-file", str(tmp_path / "t.tsv"), "--labels", labels)
    with pytest.raises(ConfigError, match=message):
        task_from_args(args)
    args = own_data_args("--train-file", "t.tsv", "--regression", "--labels", "a,b")
    with pytest.raises(ConfigError, match="it does not go with --regression"):
        task_from_args(args)


def test_missing_data_file_names_path_and_format(edgec, tiny_bert_dir, tmp_path):
    proc = edgec(
        "teacher",
        "--task",
        "sst2",
        "--model",
        str(tiny_bert_dir),
        "--data-dir",
        str(tmp_path),
        "-o",
        str(tmp_path / "t"),
    )
    assert proc.returncode == 1
    assert f"data file not found: {tmp_path}/glue/SST-2/train.tsv" in proc.stderr
    assert "expected format: GLUE TSV" in proc.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_real_teacher_short_run_on_sst2(edgec, shared_data, tmp_path):
    out = tmp_path / "minilm-sst2"
    proc = edgec(
        "teacher",
        "--task",
        "sst2",
        "--data-dir",
        str(shared_data),
        "--max-steps",
        "30",
        "--max-train-samples",
        "960",
        "--eval-every",
        "30",
        "-o",
        str(out),
        "--json",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["steps"] == 30 and metrics["dev"]["n"] == 872
    assert metrics["dev"]["accuracy"] > 0.6  # 30 steps already beat the 50% prior
    ev = edgec(
        "eval", str(out), "--task", "sst2", "--data-dir", str(shared_data), "--json", timeout=600
    )
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(metrics["dev"]["accuracy"])
