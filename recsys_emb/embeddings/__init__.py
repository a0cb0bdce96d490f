"""Embedding variants: each maps a FeatureSpec's ids onto TorchRec tables (remap) and back (combine)."""

from __future__ import annotations

from typing import Callable, Dict, Type

from recsys_emb.embeddings.base import EmbeddingVariant, InvalidInputError, TableDef, VirtualFeature
from recsys_emb.embeddings.full import FullEmbedding
from recsys_emb.embeddings.hashed import HashedEmbedding
from recsys_emb.embeddings.mixed import MixedDimensionEmbedding
from recsys_emb.embeddings.qr import QuotientRemainderEmbedding
from recsys_emb.embeddings.unified import UnifiedEmbedding
from recsys_emb.specs import EmbeddingSpec, FeatureSpec, Full, Hashed, MixedDimension, QuotientRemainder, Unified

__all__ = [
    "EmbeddingVariant",
    "InvalidInputError",
    "TableDef",
    "VirtualFeature",
    "FullEmbedding",
    "HashedEmbedding",
    "QuotientRemainderEmbedding",
    "MixedDimensionEmbedding",
    "UnifiedEmbedding",
    "build_variant",
    "register_variant",
]

_BUILDERS: Dict[Type[EmbeddingSpec], Callable[..., EmbeddingVariant]] = {
    Full: FullEmbedding,
    Hashed: lambda f, validate_ids=True: HashedEmbedding(f),
    QuotientRemainder: QuotientRemainderEmbedding,
    MixedDimension: MixedDimensionEmbedding,
    Unified: lambda f, validate_ids=True: UnifiedEmbedding(f),
}


def register_variant(spec_cls: Type[EmbeddingSpec], builder: Callable[..., EmbeddingVariant]) -> None:
    """Register the module that implements a spec class (``builder(feature, validate_ids=...)``)."""
    _BUILDERS[spec_cls] = builder


def build_variant(feature: FeatureSpec, validate_ids: bool = True) -> EmbeddingVariant:
    """The variant module for one feature."""
    try:
        builder = _BUILDERS[type(feature.embedding)]
    except KeyError:
        raise ValueError(f"feature {feature.name!r}: no variant module for {type(feature.embedding).__name__}") from None
    return builder(feature, validate_ids=validate_ids)
