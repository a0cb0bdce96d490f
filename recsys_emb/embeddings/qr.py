"""Quotient-remainder compositional embedding (Shi et al., "Compositional Embeddings Using
Complementary Partitions for Memory-Efficient Recommendation Systems", KDD 2020)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.embeddings.plans import ColumnOp, DivMod, RemapPlan
from recsys_emb.specs import FeatureSpec, QuotientRemainder

__all__ = ["QuotientRemainderEmbedding"]


class QuotientRemainderEmbedding(EmbeddingVariant):
    """Two tables, ``ceil(N/m) x d`` (quotient) and ``m x d`` (remainder); id ``x`` reads rows
    ``x // m`` and ``x % m``, combined by ``op`` (mult, add, concat).

    Pooled output for a bag is ``op(sum_q, sum_r)`` where ``sum_q``/``sum_r`` are the bag's pooled
    quotient and remainder rows (DLRM's ``QREmbeddingBag`` semantics; exact per-id composition for
    bags of one id, and for any bag with ``add``/``concat``).

    Example:
        >>> v = QuotientRemainderEmbedding(FeatureSpec("C1", QuotientRemainder(dim=8, collisions=4), cardinality=10))
        >>> [(t.rows, t.dim) for t in v.tables()]
        [(3, 8), (4, 8)]
    """

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)
        spec = feature.embedding
        assert isinstance(spec, QuotientRemainder)
        self.spec = spec
        self.modulus = spec.modulus(int(feature.cardinality))  # type: ignore[arg-type]

    def virtual_features(self) -> List[VirtualFeature]:
        n = self.feature.name
        return [VirtualFeature(f"{n}@q", self._table_name("@q")), VirtualFeature(f"{n}@r", self._table_name("@r"))]

    def remap_plan(self) -> Optional[RemapPlan]:
        return DivMod(self.feature.name, self.modulus, int(self.feature.cardinality) if self.validate_ids else None)  # type: ignore[arg-type]

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        q, r = pooled
        if self.spec.op == "mult":
            return q * r
        if self.spec.op == "add":
            return q + r
        return torch.cat([q, r], dim=1)

    def combine_plan(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        (q, w), (r, _) = sources
        if self.spec.op == "concat":
            return [ColumnOp("copy", (q,), dst, w), ColumnOp("copy", (r,), dst + w, w)]
        return [ColumnOp("mul" if self.spec.op == "mult" else "add", (q, r), dst, w)]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self.combine(rows)  # per id, every op composes exactly
