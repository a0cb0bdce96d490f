"""Full table: one row per id, ids validated against the vocabulary."""

from __future__ import annotations

from typing import List, Optional

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.embeddings.plans import Identity, RemapPlan
from recsys_emb.specs import FeatureSpec, Full

__all__ = ["FullEmbedding"]


class FullEmbedding(EmbeddingVariant):
    """``cardinality x dim`` table; remap is the identity after checking ``0 <= id < cardinality``.

    Example:
        >>> v = FullEmbedding(FeatureSpec("C1", Full(dim=8), cardinality=10))
        >>> [t.rows for t in v.tables()]
        [10]
    """

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)
        assert isinstance(feature.embedding, Full)

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(self.feature.name, self._table_name())]

    def remap_plan(self) -> Optional[RemapPlan]:
        return Identity(self.feature.name, int(self.feature.cardinality) if self.validate_ids else None)  # type: ignore[arg-type]
