"""Property tests of the data readers (GLUE TSV, TSV/CSV/JSONL tables, CoNLL, text): any bytes
give examples or a DataError/ConfigError, never another exception. 200 examples per test, 5,000
with --run-slow (the hypothesis profiles of tests/conftest.py)."""

from __future__ import annotations

import pytest
from fuzz import DATA_TARGETS, FUZZ_TARGETS, run_case, strategy
from hypothesis import given
from hypothesis import strategies as st

from toolchain.data.readers import DataError, read_file
from toolchain.data.tasks import get_task


@pytest.mark.parametrize("target", DATA_TARGETS)
@given(data=st.data())
def test_structured_files_read_or_raise_a_typed_error(target, data):
    run_case(target, data.draw(strategy(target), label="file"))


@pytest.mark.parametrize("target", DATA_TARGETS)
@given(raw=st.binary(max_size=2000))
def test_arbitrary_bytes_read_or_raise_a_typed_error(target, raw):
    run_case(target, raw)


def test_run_case_raises_only_on_a_crash(tmp_path, monkeypatch):
    run_case("glue-sst2", b"sentence\tlabel\nfine\t1\n", tmp_path)  # read
    run_case("glue-sst2", b"\xff", tmp_path)  # refused with a DataError: not a crash
    with pytest.raises(DataError):
        read_file(get_task("sst2"), tmp_path / "train.tsv", split="train")

    def crash(path):
        raise IndexError("a bug")

    monkeypatch.setitem(FUZZ_TARGETS, "glue-sst2", ("train.tsv", crash))
    with pytest.raises(IndexError):
        run_case("glue-sst2", b"", tmp_path)
