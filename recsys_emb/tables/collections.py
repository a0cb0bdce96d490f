"""The default table backend: TorchRec collections built from the layer's table definitions, which
DistributedModelParallel shards and FBGEMM's fused optimizers train."""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence

import torch
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from recsys_emb.specs import TableDef

__all__ = ["bag_collection", "sequence_collections", "collection_configs"]


def bag_collection(tables: Sequence[TableDef], features: Mapping[str, Sequence[str]],
                   device: Optional[torch.device] = None) -> EmbeddingBagCollection:
    """One sum-pooled ``EmbeddingBagCollection`` holding ``tables``; ``features[table]`` are the
    KeyedJaggedTensor keys that read each table (``device="meta"`` leaves allocation to
    DistributedModelParallel).

    Example:
        >>> ebc = bag_collection([TableDef("t", 10, 4)], {"t": ["a", "b"]})
        >>> ebc.embedding_bag_configs()[0].feature_names
        ['a', 'b']
    """
    return EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=t.name, embedding_dim=t.dim, num_embeddings=t.rows,
                                   feature_names=list(features[t.name]), pooling=PoolingType.SUM,
                                   weight_init_min=-t.bound, weight_init_max=t.bound) for t in tables],
        device=device)


def sequence_collections(tables: Sequence[TableDef], features: Mapping[str, Sequence[str]],
                         device: Optional[torch.device] = None) -> "OrderedDict[str, EmbeddingCollection]":
    """Unpooled lookups: TorchRec's ``EmbeddingCollection`` needs one dimension for all its tables, so
    the tables are grouped by dimension into one collection each, keyed ``"d{dim}"``.

    Example:
        >>> list(sequence_collections([TableDef("t", 10, 4), TableDef("u", 5, 8)], {"t": ["a"], "u": ["b"]}))
        ['d4', 'd8']
    """
    by_dim: "OrderedDict[int, List[EmbeddingConfig]]" = OrderedDict()
    for t in tables:
        by_dim.setdefault(t.dim, []).append(
            EmbeddingConfig(name=t.name, embedding_dim=t.dim, num_embeddings=t.rows, feature_names=list(features[t.name]),
                            weight_init_min=-t.bound, weight_init_max=t.bound))
    return OrderedDict((f"d{d}", EmbeddingCollection(tables=cfgs, device=device)) for d, cfgs in by_dim.items())


def collection_configs(collection: nn.Module) -> list:
    """The table configs of a TorchRec collection (pooled or sequence)."""
    if isinstance(collection, EmbeddingBagCollection):
        return collection.embedding_bag_configs()
    if isinstance(collection, EmbeddingCollection):
        return collection.embedding_configs()
    raise TypeError(f"{type(collection).__name__} is not a TorchRec embedding collection")


