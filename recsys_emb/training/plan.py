"""The sharding plan a run of a config gets, without training (``recsys-emb plan``)."""

from __future__ import annotations

from typing import Any, Dict

import torch

from recsys_emb.config import RunConfig
from recsys_emb.data.parquet import TableSchema, read_metadata
from recsys_emb.errors import ConfigError
from recsys_emb.sharding import format_plan, plan_model, plan_report, rank_bytes, table_shapes
from recsys_emb.tables import EmbeddingOptimizer
from recsys_emb.training.build import build_model, prepare_data

__all__ = ["plan_run"]


def plan_run(cfg: RunConfig, world_size: int, device_type: str = "cpu") -> Dict[str, Any]:
    """The sharding plan a run of the config gets on ``world_size`` ranks, without training.

    Prepares the data like :func:`~recsys_emb.training.train` (the vocabularies size the tables), builds
    the model on ``meta`` and asks TorchRec's planner (:func:`recsys_emb.sharding.plan_model`).

    Returns:
        ``{"world_size", "tables": plan_report rows, "rank_bytes": [bytes per rank], "text": table}``;
        bytes count float32 weights plus the fused optimizer's state.
    """
    if cfg.train.embedding_backend == "table_batched":
        raise ConfigError("train.embedding_backend='table_batched' keeps every table on one device: there is no "
                          "sharding plan; plan with train.embedding_backend: torchrec")
    schema = TableSchema.from_dict(read_metadata(prepare_data(cfg))["schema"])
    model = build_model(cfg, schema, embedding_device=torch.device("meta"))
    opt = EmbeddingOptimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr)
    plan = plan_model(model, world_size, device_type, opt, sharding_types=cfg.train.sharding_types)
    report = plan_report(plan, table_shapes(model), optimizer=cfg.optim.embedding)
    return {"world_size": world_size, "device": device_type, "tables": report,
            "rank_bytes": rank_bytes(report, world_size), "text": format_plan(report, world_size)}
