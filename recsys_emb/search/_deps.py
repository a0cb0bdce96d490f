"""The search's calls into lower layers (run config, presets, data, training, memory), all in this module:
when those modules move, this file is the one to re-point.

Training, data preparation and byte counting import TorchRec; they are imported when called, so that
``import recsys_emb.search`` and loading a search config stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from recsys_emb.config import RunConfig, apply_overrides, config_from_dict, config_to_dict, dataclass_from_dict
from recsys_emb.presets import qr_buckets
from recsys_emb.specs import DIM_MULTIPLE

__all__ = ["RunConfig", "apply_overrides", "config_from_dict", "config_to_dict", "dataclass_from_dict", "qr_buckets",
           "DIM_MULTIPLE", "prepare_data", "read_schema", "build_features", "embedding_bytes", "train"]


def prepare_data(cfg: RunConfig) -> Path:
    """Generate or check the run's dataset (``recsys_emb.train.prepare_data``); returns its directory."""
    from recsys_emb.train import prepare_data as _prepare

    return _prepare(cfg)


def read_schema(path: Path) -> Any:
    """The ``TableSchema`` of a prepared dataset directory."""
    from recsys_emb.data.parquet import TableSchema, read_metadata

    return TableSchema.from_dict(read_metadata(path)["schema"])


def build_features(cfg: RunConfig, schema: Any) -> Tuple[List[Any], List[Tuple[str, str]]]:
    """The feature specs a run config builds on a schema (``recsys_emb.train.build_features``)."""
    from recsys_emb.train import build_features as _build

    return _build(cfg, schema)


def embedding_bytes(specs: List[Any]) -> int:
    """Embedding parameter bytes of feature specs (``memory_from_specs(specs).bytes``), nothing built."""
    from recsys_emb.memory import memory_from_specs

    return int(memory_from_specs(specs).bytes)


def train(cfg: RunConfig, on_eval: Optional[Callable[[int, Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Train a run config (``recsys_emb.train.train``); returns its summary."""
    from recsys_emb.train import train as _train

    return _train(cfg, on_eval=on_eval)
