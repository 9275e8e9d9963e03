"""Property tests of recipe and device-profile loading: any bytes give a recipe/profile or a
ConfigError (an EdgecError), never another exception. 200 examples per test, 5,000 with
--run-slow (the hypothesis profiles of tests/conftest.py)."""

from __future__ import annotations

import pytest
from fuzz import YAML_TARGETS, run_case, strategy
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize("target", YAML_TARGETS)
@given(data=st.data())
def test_mutated_yaml_loads_or_raises_a_config_error(target, data):
    run_case(target, data.draw(strategy(target), label="file"))


@pytest.mark.parametrize("target", YAML_TARGETS)
@given(raw=st.binary(max_size=2000))
def test_arbitrary_bytes_load_or_raise_a_config_error(target, raw):
    run_case(target, raw)
