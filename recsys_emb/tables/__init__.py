"""The table backends an embedding layer's tables live in, and their initialisation.

* TorchRec collections (:mod:`recsys_emb.tables.collections`): the default; DistributedModelParallel
  shards them (:func:`recsys_emb.sharding.shard_model`) and FBGEMM's fused optimizers train them.
* The table-batched single-device kernel (:mod:`recsys_emb.tables.table_batched`): plain PyTorch, every
  table of a dimension in one weight; attached from outside by :class:`TableBatched`.

Both take one optimizer type, :class:`EmbeddingOptimizer`, and start from :func:`init_tables`. The
table-batched kernel, the optimizer and the initialisation need PyTorch alone; the collections are
imported on first use (they need TorchRec: :func:`recsys_emb.torch_stack.require_torch_stack`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from recsys_emb.tables.init import init_tables
from recsys_emb.tables.optimizer import (
    CPU_FUSED_OPTIMIZERS,
    EMBEDDING_OPTIMIZERS,
    TABLE_BATCHED_OPTIMIZERS,
    EmbeddingOptimizer,
)
from recsys_emb.tables.table_batched import (
    FusedOptimizerState,
    TableBatched,
    TableBatchedEmbeddingBags,
    UnallocatedTables,
)

if TYPE_CHECKING:
    from recsys_emb.tables.collections import bag_collection, collection_configs, sequence_collections

_COLLECTIONS = ("bag_collection", "sequence_collections", "collection_configs")


def __getattr__(name: str) -> Any:
    """PEP 562: the TorchRec collections' builders, imported on first use."""
    if name in _COLLECTIONS:
        return getattr(importlib.import_module("recsys_emb.tables.collections"), name)
    raise AttributeError(f"module 'recsys_emb.tables' has no attribute {name!r}")


__all__ = [
    "bag_collection",
    "sequence_collections",
    "collection_configs",
    "init_tables",
    "EmbeddingOptimizer",
    "EMBEDDING_OPTIMIZERS",
    "CPU_FUSED_OPTIMIZERS",
    "TABLE_BATCHED_OPTIMIZERS",
    "TableBatchedEmbeddingBags",
    "TableBatched",
    "FusedOptimizerState",
    "UnallocatedTables",
]
