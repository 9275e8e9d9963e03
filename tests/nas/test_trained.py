"""toolchain/nas/trained.py: the supernet cache key comes from the config's fields."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
from toy import TOY_SPEC

from toolchain.config import DataConfig, SearchConfig
from toolchain.nas.trained import cache_folder


def _key(tmp_path, cfg: SearchConfig, seed: int = 0):
    data = tmp_path / "train.tsv"
    if not data.is_file():
        data.write_text("text\tlabel\na\t0\n")
    return cache_folder(
        tmp_path, inputs=(data,), spec=TOY_SPEC, data_cfg=DataConfig(), cfg=cfg, seed=seed
    )


@pytest.mark.parametrize(
    "change",
    [{"warmup_ratio": 0.1}, {"weight_decay": 0.0}, {"supernet_steps": 7}, {"eval_samples": 9}],
)
def test_a_training_setting_gives_another_supernet(tmp_path, change):
    # warmup_ratio and weight_decay were missing from the old hand-kept key: a changed value
    # silently reused a stale supernet
    assert _key(tmp_path, replace(SearchConfig(), **change)) != _key(tmp_path, SearchConfig())


@pytest.mark.parametrize(
    "change",
    [{"population": 5}, {"accuracy_tolerance": 0.2}, {"measure_top_k": 0}, {"precision": "int8"}],
)
def test_a_search_only_setting_reuses_the_supernet(tmp_path, change):
    assert _key(tmp_path, replace(SearchConfig(), **change)) == _key(tmp_path, SearchConfig())


def test_every_field_is_in_the_key_unless_marked_search_only():
    cfg = SearchConfig()
    marked = {f.name for f in fields(cfg) if f.metadata.get("supernet") is False}
    agnostic = {f.name for f in fields(cfg) if f.metadata.get("agnostic")}
    assert {"supernet", "agnostic_steps", "agnostic_text", "proxy_steps"} <= agnostic
    # the task route: the agnostic supernet's settings are not in its key (a changed value would
    # retrain a supernet that never used them); the agnostic route: they are
    assert set(cfg.supernet_fields()) == {f.name for f in fields(cfg)} - marked - agnostic
    assert set(replace(cfg, supernet="agnostic").supernet_fields()) == (
        {f.name for f in fields(cfg)} - marked
    )
    assert {"warmup_ratio", "weight_decay", "version"} <= set(cfg.supernet_fields())


def test_the_agnostic_settings_key_the_route_that_uses_them(tmp_path):
    task, agn = SearchConfig(), SearchConfig(supernet="agnostic")
    assert _key(tmp_path, replace(task, proxy_steps=7)) == _key(tmp_path, task)
    assert _key(tmp_path, replace(agn, proxy_steps=7)) != _key(tmp_path, agn)
    assert _key(tmp_path, agn) != _key(tmp_path, task)
    # the agnostic supernet's own key: its training settings, never the task's search settings
    assert replace(agn, agnostic_steps=5).agnostic_fields() != agn.agnostic_fields()
    assert replace(agn, proxy_steps=5, population=3).agnostic_fields() == agn.agnostic_fields()


def test_the_seed_and_no_cache(tmp_path):
    assert _key(tmp_path, SearchConfig(), seed=1) != _key(tmp_path, SearchConfig())
    assert (
        cache_folder(
            None, inputs=(), spec=TOY_SPEC, data_cfg=DataConfig(), cfg=SearchConfig(), seed=0
        )
        is None
    )
