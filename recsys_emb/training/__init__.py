"""Training CTR models from a run config: build (data, features, model, table backend), the trainer and
its loop, checkpoints with exact resume, metrics, the sharding plan, and the local multi-process launch."""

from recsys_emb.training.build import attach_tables, build_features, build_model, embedding_layers, prepare_data
from recsys_emb.training.checkpoint import Position, latest_checkpoint
from recsys_emb.training.metrics import ctr_metrics, score_split
from recsys_emb.training.plan import plan_run
from recsys_emb.training.trainer import FAULT_HOLD_ENV, FAULT_KILL_ENV, Trainer, init_distributed, train

__all__ = [
    "train",
    "Trainer",
    "prepare_data",
    "build_features",
    "build_model",
    "attach_tables",
    "embedding_layers",
    "plan_run",
    "ctr_metrics",
    "score_split",
    "latest_checkpoint",
    "Position",
    "init_distributed",
    "FAULT_KILL_ENV",
    "FAULT_HOLD_ENV",
]
