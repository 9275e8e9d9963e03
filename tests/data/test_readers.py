"""toolchain/data/readers.py and tasks.py: real files (row counts of the data README), GLUE layouts,
tables, CoNLL, and errors naming the path, format and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.data.hub import examples_from_records
from toolchain.data.readers import (
    DataError,
    Example,
    TokenExample,
    infer_labels,
    load_split,
    read_file,
    resolve_data_dir,
)
from toolchain.data.tasks import TASKS, get_task, table_task
from toolchain.errors import ConfigError


# -- real data (counts from shared/data/README.md) --------------------------------------------
@pytest.mark.parametrize(
    ("task", "split", "rows"),
    [
        ("sst2", "dev", 872),
        ("sst2", "validation", 6735),
        ("sst2", "train", 60614),
        ("rte", "dev", 277),
        ("rte", "test", 3000),
        ("cola", "dev", 516),
        ("conll2003", "train", 14041),
        ("conll2003", "validation", 3250),
        ("conll2003", "test", 3453),
        ("conll2000", "test", 2012),
    ],
)
def test_real_files_row_counts(shared_data, task, split, rows):
    assert len(load_split(get_task(task), split, shared_data)) == rows


def test_held_out_validation_partitions_train(shared_data):
    spec = get_task("rte")  # no valid.tsv: validation is a seeded 10% of train
    train = load_split(spec, "train", shared_data)
    val = load_split(spec, "validation", shared_data)
    assert len(train) + len(val) == 2490 and len(val) == 249
    from collections import Counter

    from toolchain.data.readers import split_path

    whole = read_file(spec, split_path(spec, "train", shared_data))
    assert Counter(train) + Counter(val) == Counter(whole)  # a partition of the file
    assert val == load_split(spec, "validation", shared_data)  # deterministic


def test_real_examples_parse(shared_data):
    dev = load_split(get_task("sst2"), "dev", shared_data)
    assert dev[0] == Example("it 's a charming and often affecting journey .", None, 1)
    assert {ex.label for ex in dev} == {0, 1}
    rte = load_split(get_task("rte"), "dev", shared_data)
    assert rte[0].text_pair and rte[0].label in (0, 1)
    assert all(ex.label is None for ex in load_split(get_task("rte"), "test", shared_data))
    cola = load_split(get_task("cola"), "dev", shared_data)
    assert {ex.label for ex in cola} == {0, 1}
    ner = load_split(get_task("conll2003"), "train", shared_data)[0]
    tags = [get_task("conll2003").labels[t] for t in ner.tags]
    assert ner.tokens[:3] == ("EU", "rejects", "German") and tags[:3] == ["B-ORG", "O", "B-MISC"]
    text = load_split(get_task("wikitext2"), "test", shared_data)
    assert text[0] == "= Robert Boulter =" and all(line == line.strip() for line in text)


# -- synthetic layouts ------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_standard_glue_layouts(tmp_path):
    write(
        tmp_path / "glue/MRPC/dev.tsv",
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA cat.\tThe cat.\n"
        "0\t3\t4\tRain.\tSun.\n",
    )
    write(
        tmp_path / "glue/STS-B/dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain\tf\t2012\t1\tnone\tnone\tA man runs.\tA man is running.\t4.8\n",
    )
    write(
        tmp_path / "glue/QNLI/dev.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tnot_entailment\n",
    )
    write(
        tmp_path / "glue/MNLI/dev_matched.tsv",
        "index\tsentence1\tsentence2\tgold_label\n0\tA\tB\tneutral\n",
    )
    write(tmp_path / "glue/CoLA/dev.tsv", "gj04\t1\t\tThe book was read .\n")  # GLUE original
    assert load_split(get_task("mrpc"), "dev", tmp_path) == [
        Example("A cat.", "The cat.", 1),
        Example("Rain.", "Sun.", 0),
    ]
    assert load_split(get_task("stsb"), "dev", tmp_path)[0].label == pytest.approx(4.8)
    assert load_split(get_task("qnli"), "dev", tmp_path)[0].label == 1
    assert load_split(get_task("mnli"), "dev", tmp_path)[0].label == 2  # neutral
    assert load_split(get_task("cola"), "dev", tmp_path) == [
        Example("The book was read .", None, 1)
    ]


def test_missing_file_names_path_and_format(tmp_path):
    with pytest.raises(DataError) as info:
        load_split(get_task("sst2"), "dev", tmp_path)
    msg = str(info.value)
    assert f"data file not found: {tmp_path}/glue/SST-2/dev.tsv" in msg
    assert "GLUE TSV: tab-separated, a header naming the columns" in msg


def test_malformed_rows_name_the_line(tmp_path):
    write(tmp_path / "glue/SST-2/dev.tsv", "sentence\tlabel\ngood\t1\nbad\tmaybe\n")
    with pytest.raises(
        DataError,
        match=r"dev.tsv:3: unknown label 'maybe'; expected one of "
        r"negative, positive or an index 0..1",
    ):
        load_split(get_task("sst2"), "dev", tmp_path)
    write(tmp_path / "glue/SST-2/dev.tsv", "text\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match=r"dev.tsv:1: no column sentence in the header \(text, "):
        load_split(get_task("sst2"), "dev", tmp_path)
    write(tmp_path / "glue/SST-2/dev.tsv", "sentence\tlabel\nno label here\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: expected at least 2 tab-separated columns"):
        load_split(get_task("sst2"), "dev", tmp_path)
    write(tmp_path / "conll2003/test.txt", "EU B-ORG\nrejects O\nGerman B-XYZ\n")
    with pytest.raises(DataError, match=r"test.txt:3: unknown tag 'B-XYZ'; conll2003 tags: O, "):
        load_split(get_task("conll2003"), "test", tmp_path)


def test_conll_sentences_and_docstart(tmp_path):
    write(
        tmp_path / "conll2003/test.txt",
        "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n",
    )
    spec = get_task("conll2003")
    out = load_split(spec, "test", tmp_path)
    assert out == [TokenExample(("EU", "rejects"), (3, 0)), TokenExample(("Peter",), (1,))]


def test_docstart_between_documents_ends_a_sentence_and_is_never_a_word(tmp_path):
    write(
        tmp_path / "conll2003/test.txt",
        "EU NNP B-NP B-ORG\n-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\n\n-DOCSTART- -X- O O\n",
    )
    out = load_split(get_task("conll2003"), "test", tmp_path)
    assert out == [TokenExample(("EU",), (3,)), TokenExample(("Peter",), (1,))]


@pytest.mark.parametrize("task", ["conll2003", "conll2000"])
def test_real_conll_has_no_docstart_example(shared_data, task):
    spec = get_task(task)
    for split in ("train", "dev"):
        examples = load_split(spec, split, shared_data)
        assert examples and all(ex.tokens for ex in examples)
        assert not any("-DOCSTART-" in ex.tokens for ex in examples)


def test_table_tasks_tsv_csv_jsonl(tmp_path):
    write(tmp_path / "t.csv", 'text,stars\n"good, really",5\nbad,1\nok,3\n')
    spec = infer_labels(
        table_task(
            {"train": tmp_path / "t.csv", "dev": tmp_path / "t.csv"},
            text_columns=("text",),
            label_column="stars",
        )
    )
    assert spec.labels == ("1", "3", "5") and spec.format == "csv"
    # no validation file: a seeded hold-out of train (10%, at least one example)
    assert len(load_split(spec, "train", None)) == 2
    assert len(load_split(spec, "validation", None)) == 1
    assert load_split(spec, "dev", None) == [
        Example("good, really", None, 2),
        Example("bad", None, 0),
        Example("ok", None, 1),
    ]
    write(tmp_path / "p.jsonl", json.dumps({"a": "x", "b": "y", "y": 0.5}) + "\n\n")
    spec = table_task(
        {"dev": tmp_path / "p.jsonl"}, text_columns=("a", "b"), label_column="y", kind="regression"
    )
    assert load_split(spec, "dev", None) == [Example("x", "y", 0.5)]
    write(tmp_path / "bad.jsonl", '{"a": "x"}\n{oops\n')
    spec = table_task({"dev": tmp_path / "bad.jsonl"}, text_columns=("a",), label_column="y")
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing column\(s\) y; this row has: a"):
        load_split(replace_labels(spec, ("0", "1")), "dev", None)
    write(tmp_path / "bad.jsonl", '{"a": "x", "y": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        load_split(replace_labels(spec, ("0", "1")), "dev", None)


def replace_labels(spec, labels):
    from dataclasses import replace

    return replace(spec, labels=labels)


def test_table_task_validation():
    with pytest.raises(ConfigError, match="must all be .tsv, .csv or .jsonl"):
        table_task({"train": "a.txt"}, text_columns=("t",), label_column="l")
    with pytest.raises(ConfigError, match="one or two text columns"):
        table_task({"train": "a.csv"}, text_columns=(), label_column="l")


def test_unknown_task_lists_known(tmp_path):
    with pytest.raises(ConfigError) as info:
        get_task("sst")
    msg = str(info.value)
    assert "unknown task 'sst' (did you mean 'sst2'?)" in msg and "conll2003" in msg


def test_registry_covers_glue_conll_wikitext():
    assert {
        "sst2",
        "cola",
        "rte",
        "mrpc",
        "stsb",
        "qnli",
        "qqp",
        "mnli",
        "wnli",
        "conll2003",
        "conll2000",
        "wikitext2",
    } <= set(TASKS)
    assert get_task("cola").metrics[0] == "mcc" and get_task("stsb").kind == "regression"
    assert get_task("conll2003").metrics[0] == "span_f1"


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEC_DATA_DIR", raising=False)
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("EDGEC_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(DataError, match=r"data folder not found: .*nope \(from --data-dir\)"):
        resolve_data_dir(tmp_path / "nope")


def test_no_data_dir_and_no_datasets_says_how_to_fix(monkeypatch):
    import sys

    monkeypatch.delenv("EDGEC_DATA_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(DataError, match=r"pass --data-dir D .* or `pip install datasets`"):
        load_split(get_task("sst2"), "dev", None)


def test_hub_records_convert_with_label_names():
    mnli = get_task("mnli")
    recs = [{"premise": "A", "hypothesis": "B", "label": 0}]  # datasets' MNLI: 0 = entailment
    names = ["entailment", "neutral", "contradiction"]
    assert examples_from_records(mnli, recs, tag_names=names) == [Example("A", "B", 1)]
    ner = get_task("conll2003")
    assert examples_from_records(ner, [{"tokens": ["EU"], "ner_tags": [3]}]) == [
        TokenExample(("EU",), (3,))
    ]
    assert examples_from_records(get_task("wikitext2"), [{"text": " a "}, {"text": ""}]) == ["a"]


def test_hub_language_modelling_reports_on_the_test_articles(monkeypatch):
    import sys
    import types

    from toolchain.data.hub import load_split_from_hub

    asked = []

    def load_dataset(path, config, split):
        asked.append(split)
        return [{"text": f" {split} line "}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    spec = get_task("wikitext2")
    got = [load_split_from_hub(spec, s) for s in ("train", "validation", "dev", "test")]
    assert asked == ["train", "validation", "test", "test"]
    assert got[2] == ["test line"]


# -- bad input: each one message naming the file and line -------------------------------------
def sst2_lines(shared_data, n: int) -> bytes:
    with open(shared_data / "glue/SST-2/train.tsv", "rb") as f:
        return b"".join(next(f) for _ in range(n))


def test_glue_file_with_a_byte_order_mark_keeps_its_labels(tmp_path, shared_data):
    lines = sst2_lines(shared_data, 21)  # the header and 20 examples
    assert lines.startswith(b"sentence\tlabel\n")
    path = tmp_path / "glue/SST-2/dev.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + lines)
    with_bom = load_split(get_task("sst2"), "dev", tmp_path)
    path.write_bytes(lines)
    assert with_bom == load_split(get_task("sst2"), "dev", tmp_path)
    assert len(with_bom) == 20 and {ex.label for ex in with_bom} == {0, 1}


def error_of(spec, split, data_dir) -> str:
    with pytest.raises(DataError) as info:
        load_split(spec, split, data_dir)
    return str(info.value).replace(str(data_dir), "D")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sentence\nfine\n", "D/glue/SST-2/dev.tsv:1: no label column label in the header "
         "(sentence); every split but test must be labelled"),
        ("\ufeffsentence\nfine\n", "D/glue/SST-2/dev.tsv:1: no label column label"),
        ("sentence\tlabel\ngood\t1\nbad\t\n", "D/glue/SST-2/dev.tsv:3: no label (''); every split "
         "but test must be labelled"),
        ("sentence\tlabel\ngood\t1\nbad\t-1\n", "D/glue/SST-2/dev.tsv:3: no label ('-1')"),
        ("", "D/glue/SST-2/dev.tsv: no examples (an empty file, or only a header line)"),
        ("sentence\tlabel\n", "D/glue/SST-2/dev.tsv: no examples"),
        ("sentence\tlabel\n\n  \n", "D/glue/SST-2/dev.tsv: no examples"),
        ("sentence\tlabel\ngood\t1\ngreat\t11\n", "D/glue/SST-2/dev.tsv:3: unknown label '11'; "
         "expected one of negative, positive or an index 0..1"),
    ],
)  # fmt: skip
def test_bad_glue_files_name_file_and_line(tmp_path, text, expected):
    write(tmp_path / "glue/SST-2/dev.tsv", text)
    assert error_of(get_task("sst2"), "dev", tmp_path).startswith(expected)


def test_a_label_typo_in_registered_train_is_refused(tmp_path, shared_data):
    lines = sst2_lines(shared_data, 30).decode().splitlines()
    lines[17] = lines[17].rsplit("\t", 1)[0] + "\t1l"
    write(tmp_path / "glue/SST-2/train.tsv", "\n".join(lines) + "\n")
    msg = error_of(get_task("sst2"), "train", tmp_path)
    assert msg.startswith("D/glue/SST-2/train.tsv:18: unknown label '1l'")


def test_a_test_split_may_be_unlabelled(tmp_path):
    write(tmp_path / "glue/RTE/test.tsv", "index\tsentence1\tsentence2\n0\tA\tB\n")
    assert load_split(get_task("rte"), "test", tmp_path) == [Example("A", "B", None)]


def test_non_utf8_data_names_file_line_and_byte(tmp_path):
    path = tmp_path / "glue/SST-2/dev.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n")
    assert error_of(get_task("sst2"), "dev", tmp_path) == (
        "D/glue/SST-2/dev.tsv:3: not UTF-8: byte 25 (0xe9) cannot be decoded; save the file as "
        "UTF-8"
    )
    path = tmp_path / "conll2003/test.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbfEU B-ORG\n\nx\xff O\n")  # the offset counts the BOM
    assert error_of(get_task("conll2003"), "test", tmp_path).startswith(
        "D/conll2003/test.txt:3: not UTF-8: byte 14 (0xff)"
    )


def test_non_utf8_deep_in_a_large_file_names_its_line_and_byte(tmp_path):
    # past the reader's buffers, with a two-byte character across the 1 MiB boundary before it
    head = b"sentence\tlabel\n" + b"ok\t1\n" * 200_000
    head += b"x" * ((1 << 20) - 4 - len(head) - 3) + b"\t1\n"  # 'caf' then ends at 1 MiB - 1
    data = head + "caf\u00e9\t0\n".encode() + b"bad \xff\t1\n"
    assert data[(1 << 20) - 1 : (1 << 20) + 1] == "\u00e9".encode()
    path = tmp_path / "glue/SST-2/dev.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    bad = data.index(b"\xff")
    line = data.count(b"\n", 0, bad) + 1
    assert line == 200_004
    assert error_of(get_task("sst2"), "dev", tmp_path) == (
        f"D/glue/SST-2/dev.tsv:{line}: not UTF-8: byte {bad} (0xff) cannot be decoded; save the "
        "file as UTF-8"
    )


def test_held_out_validation_needs_two_examples(tmp_path):
    write(tmp_path / "t.csv", "text,label\ngood,1\n")
    spec = table_task({"train": tmp_path / "t.csv"}, text_columns=("text",), label_column="label")
    spec = replace_labels(spec, ("0", "1"))
    with pytest.raises(DataError, match=r"t.csv: 1 example: too few to hold out a validation"):
        load_split(spec, "validation")


def own_table(tmp_path, text: str, columns=("text",), label="label", name="t.tsv"):
    path = write(tmp_path / name, text)
    return table_task({"train": path, "dev": path}, text_columns=columns, label_column=label)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("t.tsv", "label\ttext\n1\tgood\n0\n", "t.tsv:3: no text in column 'text'"),
        ("t.csv", "a,b,label\nx,y,1\nx\n", "t.csv:3: no text in column 'b'"),
        ("t.jsonl", '{"text": "x", "label": 1}\n{"text": null, "label": 0}\n',
         "t.jsonl:2: no text in column 'text'"),
        ("t.jsonl", '{"text": {"a": 1}, "label": 0}\n', "t.jsonl:1: column 'text' holds dict"),
        ("t.tsv", "text\tlabel\ngood\t1\nbad\t\n", "t.tsv:3: no label"),
    ],
)  # fmt: skip
def test_missing_text_or_label_cell_names_the_line(tmp_path, name, text, expected):
    columns = ("a", "b") if "a,b" in text else ("text",)
    spec = replace_labels(own_table(tmp_path, text, columns, name=name), ("0", "1"))
    with pytest.raises(DataError) as info:
        load_split(spec, "dev")
    assert expected in str(info.value) and "'None'" not in str(info.value)


def test_headerless_own_data_reads_with_column_numbers(tmp_path, shared_data):
    rows = (shared_data / "text/mr_train.tsv").read_text().splitlines()[:40]  # label, sentence
    spec = infer_labels(own_table(tmp_path, "\n".join(rows) + "\n", ("1",), "0"))
    assert spec.labels == ("0", "1")
    dev = load_split(spec, "dev")
    label, text = rows[0].split("\t")
    assert len(dev) == 40 and dev[0] == Example(text, None, int(label))


def test_header_read_as_data_is_refused(tmp_path):
    rows = ["sentence\tlabel"] + [f"w{i}\t{i % 2}" for i in range(10)]
    with pytest.raises(DataError) as info:
        infer_labels(own_table(tmp_path, "\n".join(rows), ("0",), "1"))
    msg = str(info.value)
    assert "t.tsv:1: the label 'label' occurs only on this line" in msg
    assert "name the columns instead (--text-column sentence --label-column label)" in msg
    spec = replace_labels(own_table(tmp_path, "\n".join(rows), ("0",), "1"), ("0", "1"))
    with pytest.raises(DataError, match=r"t.tsv:1: unknown label 'label'.*is read as data"):
        load_split(spec, "dev")  # labels known (from the model): the same hint


def test_column_names_absent_from_the_header_say_what_to_do(tmp_path):
    with pytest.raises(DataError) as info:
        infer_labels(own_table(tmp_path, "great film\t1\nawful\t0\n"))
    assert str(info.value).startswith(
        f"{tmp_path}/t.tsv:1: no column text, label in the header line (great film, 1); if the "
        "file has no header line, give column numbers counted from 0 (--text-column 0 "
        "--label-column 1)"
    )


def test_a_rare_label_like_a_common_one_is_refused(tmp_path):
    rows = ["text\tlabel"] + [f"w{i}\t{'positive' if i % 2 else 'negative'}" for i in range(40)]
    rows.insert(8, "oops\tpositve")
    with pytest.raises(DataError) as info:
        infer_labels(own_table(tmp_path, "\n".join(rows)))
    assert str(info.value).endswith(
        "t.tsv:9: label 'positve' (1 row(s)) looks like a typo of 'positive' (20 rows); fix the "
        "row, or, if it is a class, name every class: --labels negative,positive,positve (in "
        "Python: table_task(..., labels=...))"
    )
    spec = replace_labels(own_table(tmp_path, "\n".join(rows)), ("negative", "positive", "positve"))
    assert infer_labels(spec) == spec  # classes named: a rare one is kept
    assert load_split(spec, "dev")[7] == Example("oops", None, 2)
    rows[8] = "fine\tneutral"  # a rare class unlike the others is a class
    spec = infer_labels(own_table(tmp_path, "\n".join(rows)))
    assert spec.labels == ("negative", "neutral", "positive")


@pytest.mark.parametrize("label", ["nan", "inf", "-inf", "1e400"])
def test_regression_labels_must_be_finite(tmp_path, label):
    write(tmp_path / "t.tsv", f"text\tscore\nfine\t0.5\nodd\t{label}\n")
    spec = table_task(
        {"dev": tmp_path / "t.tsv"}, text_columns=("text",), label_column="score",
        kind="regression",
    )  # fmt: skip
    with pytest.raises(DataError, match=rf"t.tsv:3: expected a finite number as the label, got "
                                        rf"'{label}'"):  # fmt: skip
        load_split(spec, "dev")


def test_a_large_table_is_streamed_not_held_whole(tmp_path):
    # infer_labels keeps only label counts: reading must not hold the file (the decoded text of a
    # ~20 MB file alone would be 20-80 MB; MNLI, QQP and WikiText-103 are hundreds of MB)
    import tracemalloc

    row = "a fairly ordinary sentence about a film that is neither good nor bad\t{}\n"
    path = write(tmp_path / "big.tsv", "text\tlabel\n" + "".join(
        row.format(i % 2) for i in range(20_000_000 // len(row))
    ))  # fmt: skip
    size = path.stat().st_size
    spec = table_task({"train": path}, text_columns=("text",), label_column="label")
    tracemalloc.start()
    try:
        spec = infer_labels(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert spec.labels == ("0", "1")
    assert peak < size / 20, f"peak {peak / 2**20:.1f} MiB reading a {size / 2**20:.1f} MiB file"
    # a reader that returns every line holds them, and nothing more at its peak
    tracemalloc.start()
    try:
        lines = read_file(get_task("wikitext2"), path)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(lines) == 1 + 20_000_000 // len(row)
    assert peak - held < size / 20, f"{(peak - held) / 2**20:.1f} MiB beyond the lines read"


# -- wikitext2: selection never sees the evaluation text -------------------------------------
def _normalized(line: str) -> str:
    """WikiText tokenized (valid.txt: ' @-@ ', '<unk>') and raw lines made comparable."""
    for mark, plain in (("@-@", "-"), ("@,@", ","), ("@.@", "."), ("<unk>", "")):
        line = line.replace(mark, plain)
    return "".join(c for c in line.lower() if c.isalnum())


def test_wikitext2_validation_shares_no_article_or_paragraph_with_the_test_text(shared_data):
    spec = get_task("wikitext2")
    validation = load_split(spec, "validation", shared_data)
    train = load_split(spec, "train", shared_data)
    test = load_split(spec, "test", shared_data)
    assert validation[0].startswith("= ") and not validation[0].startswith("= =")  # an article
    whole = read_file(spec, shared_data / "wikitext-2/valid.txt")
    assert train + validation == whole

    def titles(lines):
        return {_normalized(x) for x in lines if x.startswith("= ") and not x.startswith("= =")}

    def paragraphs(lines):  # headings such as '= = Reception = =' recur across articles
        return {_normalized(x) for x in lines if not x.startswith("=") and len(x) > 40}

    assert not titles(validation) & titles(test)
    assert not paragraphs(validation) & paragraphs(test)
    # the check can fail: the tokenized test.txt (the old validation file) is the test articles
    old = read_file(spec, shared_data / "wikitext-2/test.txt")
    assert len(titles(old) & titles(test)) >= 20  # of 64 articles; <unk> hides the rest


def test_running_text_holds_out_whole_articles_at_its_end(tmp_path):
    from toolchain.data.tasks import TaskSpec

    lines = []
    for a in range(10):
        lines += [f"= Article {a} =", f"first paragraph of {a}", "= = Part = =", f"more of {a}"]
    write(tmp_path / "t/train.txt", "\n".join(lines) + "\n")
    spec = TaskSpec(name="t", kind="language-modeling", folder="t", format="text",
                    files={"train": "train.txt"}, metrics=("perplexity",), header=False,
                    validation_fraction=0.15)  # fmt: skip
    validation = load_split(spec, "validation", tmp_path)
    train = load_split(spec, "train", tmp_path)
    assert validation[0] == "= Article 9 =" and train[-1] == "more of 8"  # 4 of 40 lines: 1 article
    assert train + validation == lines
