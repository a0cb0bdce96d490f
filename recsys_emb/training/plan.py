"""The sharding plan a run of a config gets, without training (``recsys-emb plan``): from the prepared
data, or from published cardinalities (``kaggle``, ``1tb``) to size a run before the data or the GPUs
exist."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from recsys_emb.config import RunConfig
from recsys_emb.data.criteo.schema import CARDINALITY_PRESETS, CAT_COLUMNS, criteo_schema
from recsys_emb.data.parquet import read_metadata, schema_from_metadata
from recsys_emb.errors import ConfigError
from recsys_emb.sharding import format_plan, plan_model, plan_report, rank_bytes, table_shapes
from recsys_emb.tables import EmbeddingOptimizer
from recsys_emb.training.build import build_model, prepare_data

__all__ = ["plan_run"]


def plan_run(cfg: RunConfig, world_size: int, device_type: str = "cpu", cardinalities: Optional[str] = None,
             hbm_gb: Optional[float] = None) -> Dict[str, Any]:
    """The sharding plan a run of the config gets on ``world_size`` ranks, without training.

    Prepares the data like :func:`~recsys_emb.training.train` (the vocabularies size the tables), or with
    ``cardinalities`` (a key of :data:`~recsys_emb.data.criteo.schema.CARDINALITY_PRESETS`: ``kaggle``,
    33.8M ids; ``1tb``, 882.8M ids) takes the Criteo schema with those vocabulary sizes instead and reads
    no data. Builds the model on ``meta`` and asks TorchRec's planner
    (:func:`recsys_emb.sharding.plan_model`); ``device_type="cuda"`` plans for GPUs of ``hbm_gb`` GB
    each (TorchRec's default when None) on any machine, with or without a GPU.

    Returns:
        ``{"world_size", "device", "hbm_bytes", "fits", "error", "tables": plan_report rows,
        "rank_bytes": [bytes per rank], "text": table}``; bytes count float32 weights plus the fused
        optimizer's state. When the tables do not fit, ``fits`` is False, ``error`` holds the planner's
        reason and ``tables`` / ``rank_bytes`` are empty.

    Example (no data, no GPU):
        >>> from recsys_emb.config import load_config
        >>> cfg = load_config("configs/dlrm_criteo_kaggle.yaml", ["train.sharding_types=[row_wise]"])
        >>> out = plan_run(cfg, 2, "cuda", cardinalities="kaggle", hbm_gb=80)
        >>> out["fits"], max(out["rank_bytes"]) < 2 * 10**9
        (True, True)
    """
    if cfg.train.embedding_backend == "table_batched":
        raise ConfigError("train.embedding_backend='table_batched' keeps every table on one device: there is no "
                          "sharding plan; plan with train.embedding_backend: torchrec")
    if cardinalities is not None:
        if cardinalities not in CARDINALITY_PRESETS:
            raise ConfigError(f"cardinalities={cardinalities!r} is not a preset; choose one of "
                              f"{sorted(CARDINALITY_PRESETS)}, or prepare the data and plan from it")
        if cfg.model.kind != "dlrm":
            raise ConfigError(f"cardinalities={cardinalities!r} are Criteo's 26 fields, for a dlrm config; "
                              f"model.kind is {cfg.model.kind!r}")
        schema = criteo_schema(dict(zip(CAT_COLUMNS, CARDINALITY_PRESETS[cardinalities])))
        counts: Optional[Dict[str, Any]] = {}  # the data's counts are not there: mixed dims follow Zipf's law
    else:
        schema = schema_from_metadata(read_metadata(prepare_data(cfg)))
        counts = None
    if hbm_gb is not None and hbm_gb <= 0:
        raise ConfigError(f"hbm_gb={hbm_gb} must be > 0")
    hbm_bytes = int(hbm_gb * 1e9) if hbm_gb is not None and device_type == "cuda" else None
    model = build_model(cfg, schema, embedding_device=torch.device("meta"), counts=counts)
    opt = EmbeddingOptimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr)
    out: Dict[str, Any] = {"world_size": world_size, "device": device_type, "hbm_bytes": hbm_bytes,
                           "cardinalities": cardinalities, "fits": True, "error": None}
    try:
        plan = plan_model(model, world_size, device_type, opt, sharding_types=cfg.train.sharding_types,
                          hbm_bytes=hbm_bytes)
    except Exception as e:  # TorchRec's PlannerError: no placement within the devices' memory
        if type(e).__name__ != "PlannerError":
            raise
        reason = " ".join(str(e).split())
        return {**out, "fits": False, "error": reason, "tables": [], "rank_bytes": [],
                "text": f"does not fit: {reason[:600]}"}
    report = plan_report(plan, table_shapes(model), optimizer=cfg.optim.embedding)
    return {**out, "tables": report, "rank_bytes": rank_bytes(report, world_size),
            "text": format_plan(report, world_size)}
