"""Full table: one row per id, ids validated against the vocabulary."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch

from recsys_emb.embeddings.base import EmbeddingVariant, InvalidInputError, PerValue, VirtualFeature, format_bad_values
from recsys_emb.specs import FeatureSpec, Full

__all__ = ["FullEmbedding", "check_vocabulary", "check_vocabularies"]


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


def check_vocabularies(variants: Sequence[EmbeddingVariant], ids: Sequence[torch.Tensor], x: torch.Tensor,
                       cardinality: torch.Tensor) -> None:
    """:func:`check_vocabulary` for several features in one comparison (batched remaps).

    Args:
        variants: the features' variants (their ``validate_ids`` and ``feature``).
        ids: each feature's ids; ``x`` is their concatenation.
        cardinality: ``(x.numel(),)``: the cardinality of each id's feature.
    Raises:
        InvalidInputError: for the first validating feature with an id outside its vocabulary.
    """
    if not x.numel() or not any(v.validate_ids for v in variants):  # type: ignore[attr-defined]
        return
    if bool(((x < 0) | (x >= cardinality)).any()):
        for v, i in zip(variants, ids):
            if v.validate_ids:  # type: ignore[attr-defined]
                check_vocabulary(v.feature.name, i, int(v.feature.cardinality))  # type: ignore[arg-type]


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

    @classmethod
    def remap_many(cls, variants: Sequence[EmbeddingVariant], ids: Sequence[torch.Tensor],
                   lengths: Sequence[torch.Tensor], cache: Dict[Any, Any]
                   ) -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """All features' vocabulary checks as one comparison over the concatenated ids."""
        if any(v.validate_ids for v in variants) and sum(int(i.numel()) for i in ids):  # type: ignore[attr-defined]
            key = ("full", tuple(map(id, variants)), ids[0].device)
            if key not in cache:
                cache[key] = PerValue([torch.tensor([int(v.feature.cardinality) for v in variants],  # type: ignore[arg-type]
                                                    device=ids[0].device)])
            check_vocabularies(variants, ids, torch.cat(list(ids)), cache[key](ids)[0])
        return [[(i, l)] for i, l in zip(ids, lengths)]
