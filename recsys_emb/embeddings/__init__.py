"""Embedding variants: each maps a FeatureSpec's ids onto TorchRec tables (remap) and back (combine).

Adding a variant: a spec dataclass (:class:`~recsys_emb.specs.EmbeddingSpec` subclass with a ``kind``)
and one module implementing :class:`EmbeddingVariant`, registered with :func:`register_variant`
(docs/architecture.md has the smallest real example).
"""

from __future__ import annotations

from typing import Callable, Dict, Type

from recsys_emb.embeddings.base import EmbeddingVariant, TableDef, VirtualFeature
from recsys_emb.embeddings.full import FullEmbedding
from recsys_emb.embeddings.hashed import HashedEmbedding
from recsys_emb.embeddings.lowrank import LowRankEmbedding
from recsys_emb.embeddings.mixed import MixedDimensionEmbedding
from recsys_emb.embeddings.qr import QuotientRemainderEmbedding
from recsys_emb.embeddings.robe import RobeEmbedding
from recsys_emb.embeddings.tt import TensorTrainEmbedding
from recsys_emb.embeddings.unified import UnifiedEmbedding
from recsys_emb.errors import SpecError
from recsys_emb.spec_io import register_embedding_spec, unregister_embedding_spec
from recsys_emb.specs import (EmbeddingSpec, FeatureSpec, Full, Hashed, LowRank, MixedDimension, QuotientRemainder, Robe,
                              TensorTrain, Unified)

__all__ = [
    "EmbeddingVariant",
    "TableDef",
    "VirtualFeature",
    "FullEmbedding",
    "HashedEmbedding",
    "QuotientRemainderEmbedding",
    "MixedDimensionEmbedding",
    "UnifiedEmbedding",
    "LowRankEmbedding",
    "TensorTrainEmbedding",
    "RobeEmbedding",
    "build_variant",
    "register_variant",
    "unregister_variant",
]

VariantBuilder = Callable[..., EmbeddingVariant]
"""``builder(feature, validate_ids=...)``: a variant class or a factory."""

_BUILDERS: Dict[Type[EmbeddingSpec], VariantBuilder] = {
    Full: FullEmbedding,
    Hashed: HashedEmbedding,
    QuotientRemainder: QuotientRemainderEmbedding,
    MixedDimension: MixedDimensionEmbedding,
    Unified: UnifiedEmbedding,
    LowRank: LowRankEmbedding,
    TensorTrain: TensorTrainEmbedding,
    Robe: RobeEmbedding,
}


def register_variant(spec_cls: Type[EmbeddingSpec], builder: VariantBuilder) -> None:
    """Register the module that implements a spec class, and the spec class under its ``kind`` so that
    YAML and dicts with ``type: <kind>`` build it.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Hashed4(Hashed):  # a variant that is the hashing trick with a fixed bucket count
        ...     kind = "hashed4"
        >>> register_variant(Hashed4, HashedEmbedding)
        >>> type(build_variant(FeatureSpec("a", Hashed4(dim=8, buckets=4)))).__name__
        'HashedEmbedding'
        >>> unregister_variant(Hashed4)
    """
    _BUILDERS[spec_cls] = builder
    if "kind" in vars(spec_cls):  # a subclass that inherits its parent's kind must not take over that kind
        register_embedding_spec(spec_cls)


def unregister_variant(spec_cls: Type[EmbeddingSpec]) -> None:
    """Undo :func:`register_variant` (tests, plugins that unload)."""
    _BUILDERS.pop(spec_cls, None)
    unregister_embedding_spec(spec_cls)


def build_variant(feature: FeatureSpec, validate_ids: bool = True) -> EmbeddingVariant:
    """The variant module for one feature."""
    try:
        builder = _BUILDERS[type(feature.embedding)]
    except KeyError:
        raise SpecError(f"feature {feature.name!r}: no variant module for {type(feature.embedding).__name__}; "
                        f"register one with recsys_emb.embeddings.register_variant") from None
    return builder(feature, validate_ids=validate_ids)
