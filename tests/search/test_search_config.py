"""The search config: the repository's configs load; bad keys and values fail before any work, naming the
key, the value and what is allowed."""

import pytest

from recsys_emb.config import ConfigError
from recsys_emb.search import load_search_config
from search_helpers import CONFIGS


def test_repo_search_configs_load():
    cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")
    assert cfg.mode == "single" and cfg.budget_bytes > 0
    tiny = load_search_config(CONFIGS / "search_tiny.yaml")
    assert tiny.base_path() == CONFIGS / "search_tiny_train.yaml"


@pytest.mark.parametrize("override, match", [
    ("bogus=1", r"unknown key\(s\) \['bogus'\]"),
    ("space.dims=[4, 6]", r"space.dims\[\]=6 .*multiples of 4"),
    ("space.dims={low: 4, high: 62}", r"space.dims.high=62"),
    ("space.dims={low: 4, high: 64, step: 2}", r"unknown key\(s\) \['space.dims.step'\]"),
    ("mode=both", r"mode='both' .*\['single', 'multi'\]"),
    ("sampler=nsga2", r"nsga2 is for mode: multi"),
    ("pruner.kind=asha", r"pruner.kind='asha' .*\['successive_halving', 'hyperband', 'median', 'none'\]"),
    ("space.variants=[full, sparse]", r"space.variants\[\]='sparse'"),
    ("space.ungrouped=some", r"space.ungrouped='some'"),
    ("budget_bytes=null", r"budget_bytes is required in mode: single"),
    ("grace_period=1", r"grace_period=1 .*heartbeat_interval"),
    ("base_config=nowhere.yaml", r"base_config='nowhere.yaml': no such file"),
    ("train_overrides=[train.max_steps=-1]", r"train_overrides: train.max_steps=-1"),
    ("space.groups={a: [C1], b: [C1]}", r"already in group 'a'"),
])
def test_bad_search_config_fails_early(override, match):
    with pytest.raises(ConfigError, match=match):
        load_search_config(CONFIGS / "search_tiny.yaml", [override])


def test_dim_range_and_multi_mode_load():
    cfg = load_search_config(CONFIGS / "search_tiny.yaml",
                             ["space.dims={low: 8, high: 64, log: true}", "mode=multi", "budget_bytes=null"])
    assert cfg.space.dims.low == 8 and cfg.space.dims.log and cfg.mode == "multi"
