"""Placement-independent table initialisation: every element of every table is a function of the
seed, the table's name and the element's position alone, so any world size and sharding type (and
the table-batched kernel) start from the same weights."""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import torch
from torch import nn

from recsys_emb.hashing import hash64, seed_from_name
from recsys_emb.specs import TableDef

__all__ = ["init_tables", "TABLE_STATE_KEY"]

TABLE_STATE_KEY = re.compile(r"(?:embedding_bags|embeddings)\.([^.]+)\.weight$")
"""A state-dict key of a table weight (TorchRec's names); group 1 is the table name."""


def _uniform_block(key: int, row0: int, rows: int, col0: int, cols: int, total_cols: int, bound: float) -> torch.Tensor:
    r = torch.arange(row0, row0 + rows, dtype=torch.int64)[:, None]
    c = torch.arange(col0, col0 + cols, dtype=torch.int64)[None, :]
    bits = (hash64(r * total_cols + c, key) >> 11) & ((1 << 53) - 1)  # top 53 bits, as a non-negative int
    return ((bits.double() * 2.0 ** -53) * 2.0 - 1.0).mul_(bound).float()


def init_tables(module: nn.Module, seed: int, chunk_elements: int = 1 << 24,
                scale: Optional[float] = None) -> List[str]:
    """Fill every embedding table of ``module`` (sharded or not) with placement-independent values.

    Element ``(r, c)`` of table ``t`` is ``U(-b, b)`` drawn from
    ``hash64(r * cols + c, seed_from_name("init", seed, t))``: a function of the
    seed, the table and the element alone. Each rank fills only its local shards, in row chunks of
    about ``chunk_elements`` values, so memory stays bounded, and a model trained at world size 1 and at
    world size N with the same seed starts from the same tables whatever the sharding types.

    Args:
        module: an EmbeddingLayer / model, or its DistributedModelParallel wrapper.
        seed: the run's seed.
        scale: the uniform bound ``b`` for every table. ``None``: each table's default bound, the
            ``TableDef.bound`` of the layers in ``module`` (``1/sqrt(R)`` for a table of ``R`` rows read
            by one feature; a shared unified table as the per-field tables it replaces,
            :func:`~recsys_emb.specs.init_bounds`), and ``1/sqrt(R)`` for a table no layer describes.
    Returns:
        The table names filled.

    Example:
        >>> from recsys_emb.layer import EmbeddingLayer
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(8), cardinality=100)])
        >>> init_tables(layer, seed=0)
        ['a']
    """
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    bounds: Dict[str, float] = {}
    for sub in module.modules():
        for t in getattr(sub, "table_defs", None) or ():
            if isinstance(t, TableDef):
                bounds.setdefault(t.name, t.bound)
    done: List[str] = []
    with torch.no_grad():
        for key, value in module.state_dict().items():
            m = TABLE_STATE_KEY.search(key)
            if m is None:
                continue
            table = m.group(1)
            if isinstance(value, ShardedTensor):
                size = tuple(value.metadata().size)
                parts = [(s.metadata.shard_offsets[0], s.metadata.shard_offsets[1], s.tensor) for s in value.local_shards()]
            elif type(value) in (torch.Tensor, nn.Parameter):
                size = tuple(value.shape)
                parts = [(0, 0, value)]
            else:
                raise TypeError(f"table {table!r}: cannot initialise a state-dict value of type {type(value).__name__}")
            if len(size) != 2:
                continue
            rows, cols = size
            hkey = seed_from_name("init", seed, table)
            for row0, col0, t in parts:
                step = max(1, chunk_elements // max(1, t.shape[1]))
                for i in range(0, t.shape[0], step):
                    n = min(step, t.shape[0] - i)
                    t[i:i + n].copy_(_uniform_block(hkey, row0 + i, n, col0, t.shape[1], cols,
                                                    bounds.get(table, rows ** -0.5) if scale is None else scale))
            done.append(table)
    return done
