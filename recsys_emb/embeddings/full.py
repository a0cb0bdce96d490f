"""Full table: one row per id, ids validated against the vocabulary."""

from __future__ import annotations

from typing import List, Tuple

import torch

from recsys_emb.embeddings.base import EmbeddingVariant, InvalidInputError, VirtualFeature, format_bad_values
from recsys_emb.specs import FeatureSpec, Full

__all__ = ["FullEmbedding", "check_vocabulary"]


def check_vocabulary(feature: str, ids: torch.Tensor, cardinality: int) -> None:
    """Raise :class:`InvalidInputError` naming the feature and ids outside ``[0, cardinality)``."""
    if not ids.numel():
        return
    bad = (ids < 0) | (ids >= cardinality)
    if bool(bad.any()):
        raise InvalidInputError(format_bad_values(
            feature, ids, bad, f"0 <= id < cardinality={cardinality}",
            "Fix the vocabulary (raise cardinality, or map unseen ids to an out-of-vocabulary id at "
            "preprocessing), or use a 'hashed' embedding, which accepts any int64 id."))


class FullEmbedding(EmbeddingVariant):
    """``cardinality x dim`` table; remap is the identity after checking ``0 <= id < cardinality``.

    Example:
        >>> v = FullEmbedding(FeatureSpec("C1", Full(dim=8), cardinality=10))
        >>> [t.rows for t in v.tables()]
        [10]
    """

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature)
        assert isinstance(feature.embedding, Full)
        self.validate_ids = validate_ids

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(self.feature.name, self._table_name())]

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        if self.validate_ids:
            check_vocabulary(self.feature.name, ids, int(self.feature.cardinality))
        return [(ids, lengths)]
