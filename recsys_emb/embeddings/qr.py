"""Quotient-remainder compositional embedding (Shi et al., "Compositional Embeddings Using
Complementary Partitions for Memory-Efficient Recommendation Systems", KDD 2020)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from recsys_emb.embeddings.base import ColumnOp, EmbeddingVariant, PerValue, VirtualFeature
from recsys_emb.embeddings.full import check_vocabularies, check_vocabulary
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
        super().__init__(feature)
        spec = feature.embedding
        assert isinstance(spec, QuotientRemainder)
        self.spec = spec
        self.modulus = spec.modulus(int(feature.cardinality))
        self.validate_ids = validate_ids

    def virtual_features(self) -> List[VirtualFeature]:
        n = self.feature.name
        return [VirtualFeature(f"{n}@q", self._table_name("@q")), VirtualFeature(f"{n}@r", self._table_name("@r"))]

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        if self.validate_ids:
            check_vocabulary(self.feature.name, ids, int(self.feature.cardinality))
        return [(torch.div(ids, self.modulus, rounding_mode="floor"), lengths), (torch.remainder(ids, self.modulus), lengths)]

    @classmethod
    def remap_many(cls, variants: Sequence[EmbeddingVariant], ids: Sequence[torch.Tensor],
                   lengths: Sequence[torch.Tensor], cache: Dict[Any, Any]
                   ) -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """All features in one pass: one bounds check, one division and one remainder over the
        concatenated ids, each id with its feature's modulus."""
        qrs: List[QuotientRemainderEmbedding] = list(variants)  # type: ignore[arg-type]
        x = torch.cat(list(ids))
        key = ("qr", tuple(map(id, qrs)), x.device)
        if key not in cache:
            cache[key] = PerValue([torch.tensor([int(v.feature.cardinality) for v in qrs], device=x.device),
                                   torch.tensor([v.modulus for v in qrs], device=x.device)])
        card, modulus = cache[key](ids)
        check_vocabularies(qrs, ids, x, card)
        counts = [int(t.numel()) for t in ids]
        q = torch.div(x, modulus, rounding_mode="floor")
        r = x - q * modulus
        return [[(a, l), (b, l)] for a, b, l in zip(q.split(counts), r.split(counts), lengths)]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self.combine(rows)  # per id, every op composes exactly

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        q, r = pooled
        if self.spec.op == "mult":
            return q * r
        if self.spec.op == "add":
            return q + r
        return torch.cat([q, r], dim=1)

    def column_ops(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        (q, w), (r, _) = sources
        if self.spec.op == "concat":
            return [("copy", (q,), dst, w), ("copy", (r,), dst + w, w)]
        return [("mul" if self.spec.op == "mult" else "add", (q, r), dst, w)]
