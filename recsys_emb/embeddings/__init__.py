"""Embedding variants: each maps a FeatureSpec's ids onto TorchRec tables (remap) and back (combine).

Adding a family: a spec dataclass (:class:`~recsys_emb.specs.EmbeddingSpec` subclass with a ``kind``)
and one module implementing :class:`EmbeddingVariant`, registered once with
:func:`recsys_emb.families.register_family` (docs/embeddings.md, "Adding a family").
:func:`register_variant` is that registration without preset variants or options.
"""

from __future__ import annotations

from typing import Callable, Type

from recsys_emb.embeddings.base import EmbeddingVariant, TableDef, VirtualFeature
from recsys_emb.embeddings.full import FullEmbedding
from recsys_emb.embeddings.hashed import HashedEmbedding
from recsys_emb.embeddings.lowrank import LowRankEmbedding
from recsys_emb.embeddings.managed_collision import ManagedCollisionEmbedding
from recsys_emb.embeddings.mixed import MixedDimensionEmbedding
from recsys_emb.embeddings.qr import QuotientRemainderEmbedding
from recsys_emb.embeddings.robe import RobeEmbedding
from recsys_emb.embeddings.tt import TensorTrainEmbedding
from recsys_emb.embeddings.unified import UnifiedEmbedding
from recsys_emb import families
from recsys_emb.errors import SpecError
from recsys_emb.specs import EmbeddingSpec, FeatureSpec

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
    "ManagedCollisionEmbedding",
    "build_variant",
    "register_variant",
    "unregister_variant",
]

VariantBuilder = Callable[..., EmbeddingVariant]
"""``builder(feature, validate_ids=...)``: a variant class or a factory."""

def register_variant(spec_cls: Type[EmbeddingSpec], builder: VariantBuilder) -> None:
    """Register the module that implements a spec class, and the spec class under its ``kind`` so that
    YAML and dicts with ``type: <kind>`` build it: :func:`recsys_emb.families.register_family` with no
    preset variants (a registered family keeps its variants and options, with this builder).

    Example:
        >>> from dataclasses import dataclass
        >>> from recsys_emb.specs import Hashed
        >>> @dataclass(frozen=True)
        ... class Hashed4(Hashed):  # a variant that is the hashing trick with a fixed bucket count
        ...     kind = "hashed4"
        >>> register_variant(Hashed4, HashedEmbedding)
        >>> type(build_variant(FeatureSpec("a", Hashed4(dim=8, buckets=4)))).__name__
        'HashedEmbedding'
        >>> unregister_variant(Hashed4)
    """
    try:
        old = families.family_of_spec(spec_cls)
        families.register_family(spec_cls, builder=builder, variants=old.variants, options=old.options)
    except SpecError:
        families.register_family(spec_cls, builder=builder, variants={})


def unregister_variant(spec_cls: Type[EmbeddingSpec]) -> None:
    """Undo :func:`register_variant` (tests, plugins that unload)."""
    families.unregister_family(spec_cls)


def build_variant(feature: FeatureSpec, validate_ids: bool = True) -> EmbeddingVariant:
    """The variant module for one feature (its spec class's registered family builds it)."""
    try:
        family = families.family_of_spec(type(feature.embedding))
    except SpecError:
        raise SpecError(f"feature {feature.name!r}: no variant module for {type(feature.embedding).__name__}; "
                                 f"register one with recsys_emb.families.register_family") from None
    return family.build(feature, validate_ids=validate_ids)
