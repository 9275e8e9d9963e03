"""Property tests of what a bundle's receiver reads: any manifest.json, any uploaded archive,
verifies or raises a BundleError (an EdgecError), never another exception. 200 examples per
test, 5,000 with --run-slow (the hypothesis profiles of tests/conftest.py)."""

from __future__ import annotations

import json

import pytest
from fuzz import BUNDLE_TARGETS, FUZZ_TARGETS, _good_bundle, run_case, strategy
from hypothesis import given
from hypothesis import strategies as st

from toolchain.bundle.manifest import BundleError


@pytest.mark.parametrize("target", BUNDLE_TARGETS)
@given(data=st.data())
def test_structured_bundle_inputs_verify_or_raise_a_bundle_error(target, data):
    run_case(target, data.draw(strategy(target), label="bytes"))


@pytest.mark.parametrize("target", BUNDLE_TARGETS)
@given(raw=st.binary(max_size=4000))
def test_arbitrary_bytes_verify_or_raise_a_bundle_error(target, raw):
    run_case(target, raw)


def test_the_targets_accept_a_good_bundle_and_refuse_a_bad_one(tmp_path):
    manifest, archive = _good_bundle()
    run_case("manifest", json.dumps(manifest).encode(), tmp_path)  # verifies: no exception
    run_case("archive", archive, tmp_path)
    for target, data in (("manifest", b"{}"), ("archive", archive[:100])):
        file_name, read = FUZZ_TARGETS[target]
        (tmp_path / file_name).write_bytes(data)
        with pytest.raises(BundleError):
            read(tmp_path / file_name)
