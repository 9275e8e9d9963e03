"""toolchain/data/text.py: unlabelled text from named sources and the user's own files."""

from __future__ import annotations

import pytest

from toolchain.data.readers import DataError
from toolchain.data.text import text_batches, unlabelled_text
from toolchain.errors import ConfigError


def test_a_users_file_with_a_byte_order_mark_and_blank_lines(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_bytes("\ufeffFirst sentence here\n\n  second one  \nx\n".encode())
    assert unlabelled_text([str(f)], None) == ["First sentence here", "second one"]  # 1 word: out


def test_wikitext_is_cut_into_sentences_without_headings(tmp_path):
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "valid.txt").write_text(
        " = Title = \n The cat sat . It was happy . \n = = Sub = = \n"
    )
    assert unlabelled_text(["wikitext"], tmp_path) == ["The cat sat .", "It was happy ."]


def test_named_sources_read_only_the_text_column(tmp_path):
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    (tmp_path / "glue" / "SST-2" / "train.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "train.txt").write_text(
        "-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\n"
        "Peter NNP B-PER\nBlackburn NNP I-PER\n"
    )
    assert unlabelled_text(["sst2", "conll"], tmp_path) == [
        "a fine film", "EU rejects", "Peter Blackburn"
    ]  # fmt: skip


def test_unknown_sources_and_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="neither one of wikitext, text, sst2, conll"):
        unlabelled_text(["nosuch.txt"], tmp_path)
    with pytest.raises(DataError, match="wikitext-2/valid.txt not found"):
        unlabelled_text(["wikitext"], tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="no sentence"):
        unlabelled_text([str(empty)], None)


def test_batches_cover_every_sentence_each_pass_and_resume_where_they_stopped():
    texts = [f"hello world {'good ' * (i % 3)}" for i in range(10)]

    class Tok:  # a stand-in tokenizer: one id per word
        def __call__(self, rows, **_):
            import torch

            width = max(len(r.split()) for r in rows)
            ids = [[len(r.split())] * width for r in rows]
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(len(rows), width)}

    it = text_batches(texts, Tok(), max_len=8, batch_size=4, seed=0)
    first = [next(it) for _ in range(6)]  # 3 batches a pass (4 + 4 + 2), two passes
    assert [len(b["input_ids"]) for b in first] == [4, 4, 2, 4, 4, 2]
    again = text_batches(texts, Tok(), max_len=8, batch_size=4, seed=0, skip=4)
    assert all(
        (next(again)["input_ids"] == b["input_ids"]).all() for b in first[4:]
    )  # resumed at batch 4: the same batches as the run that was not stopped
