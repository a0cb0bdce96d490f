"""Low-rank tables: a ``rows x rank`` TorchRec table times a learned ``rank x dim`` projection."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.embeddings.plans import ColumnOp, Identity, RemapPlan
from recsys_emb.specs import FeatureSpec, LowRank

__all__ = ["LowRankEmbedding"]


class LowRankEmbedding(EmbeddingVariant):
    """Id ``x`` reads row ``x`` of a ``cardinality x rank`` table ``A``; the feature's embedding is
    ``A[x] P^T`` with ``P`` the learned ``dim x rank`` weight of ``self.projection``. Sum pooling is
    linear, so a bag is pooled in rank space and projected once (one ``(B, rank) x (rank, dim)``
    matmul per batch, not one per id).

    A feature below the spec's ``min_rows`` is a plain ``cardinality x dim`` table (no projection).

    Initialisation: the table as TorchRec's default ``U(-1/sqrt(N), 1/sqrt(N))`` and ``P`` as
    ``U(-sqrt(3/rank), sqrt(3/rank))``, so the product's entries start with the variance of the full
    table they replace (``1/(3N)``).

    Example:
        >>> v = LowRankEmbedding(FeatureSpec("C1", LowRank(dim=16, rank=4), cardinality=100))
        >>> [(t.rows, t.dim) for t in v.tables()], tuple(v.projection.weight.shape)
        ([(100, 4)], (16, 4))
    """

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)
        spec = feature.embedding
        assert isinstance(spec, LowRank)
        self.spec = spec
        self.factorised = spec.factorised(feature.cardinality)
        if self.factorised:
            self.projection = nn.Linear(spec.rank, spec.dim, bias=False)
            bound = math.sqrt(3.0 / spec.rank)
            nn.init.uniform_(self.projection.weight, -bound, bound)

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(self.feature.name, self._table_name())]

    def remap_plan(self) -> Optional[RemapPlan]:
        return Identity(self.feature.name, int(self.feature.cardinality) if self.validate_ids else None)  # type: ignore[arg-type]

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.projection(pooled[0]) if self.factorised else pooled[0]

    def combine_plan(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        start, width = sources[0]
        if not self.factorised:
            return [ColumnOp("copy", (start,), dst, width)]
        return [ColumnOp("proj", (start, width), dst, self.spec.dim, ("projection.weight",))]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self.combine(rows)

    def materialise(self, table: torch.Tensor) -> torch.Tensor:
        """The ``cardinality x dim`` table this feature stands for, from its ``(cardinality, rank)`` table."""
        return self.combine([table])
