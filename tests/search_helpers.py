"""Shared by the search tests (tests/search/, tests/integration/test_search_*.py, tests/reliability/
test_search_trials.py): the tiny train + search configs, their generated data, and the few functions of
the training side the tests call (imported here only, so a move of those modules is one edit)."""

from pathlib import Path

import yaml

from recsys_emb.config import config_from_dict, load_config  # noqa: F401 (re-exported for the tests)
from recsys_emb.data.parquet import TableSchema  # noqa: F401
from recsys_emb.memory import memory_from_specs  # noqa: F401
from recsys_emb.train import build_features, prepare_data, train  # noqa: F401

CONFIGS = Path(__file__).parent / "configs"


def write_configs(dst: Path, data_path: Path, **search_over) -> Path:
    """The tiny train + search configs in ``dst``, reading the (shared) generated data at ``data_path``."""
    dst.mkdir(parents=True, exist_ok=True)
    train = yaml.safe_load((CONFIGS / "search_tiny_train.yaml").read_text())
    train["data"]["path"] = str(data_path)
    (dst / "train.yaml").write_text(yaml.safe_dump(train))
    cfg = yaml.safe_load((CONFIGS / "search_tiny.yaml").read_text())
    cfg.update(base_config="train.yaml", out_root=str(dst / "runs"), **search_over)
    (dst / "search.yaml").write_text(yaml.safe_dump(cfg))
    return dst / "search.yaml"


def make_tiny_data(parent: Path) -> Path:
    """Generate the tiny search dataset under ``parent``; returns its directory."""
    path = parent / "criteo-like-tiny"
    train = yaml.safe_load((CONFIGS / "search_tiny_train.yaml").read_text())
    train["data"]["path"] = str(path)
    prepare_data(config_from_dict(train))
    return path


def trained_trials(study):
    """Trials that trained: not over budget, and not a surplus trial stopped because the study was full."""
    return [t for t in study.get_trials() if not (t.user_attrs.get("over_budget") or t.user_attrs.get("surplus"))]
