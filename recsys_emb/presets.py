"""Feature specs for a whole dataset from one variant choice: "hashed at 1/16 of the rows, dim 16".

What the training configs, the benchmarks and the search use to turn (vocabulary sizes, variant,
budget) into a list of :class:`~recsys_emb.specs.FeatureSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional

from recsys_emb.specs import (
    DIM_MULTIPLE,
    FeatureSpec,
    Full,
    Hashed,
    MixedDimension,
    QuotientRemainder,
    Unified,
    UnifiedTable,
    embedding_spec_from_dict,
    mixed_field_dims,
    validate_feature_set,
)

__all__ = ["VARIANTS", "VariantPreset", "feature_specs", "qr_buckets"]

VARIANTS = ("full", "hashed", "multi_hash", "qr", "mixed", "unified")


@dataclass(frozen=True)
class VariantPreset:
    """One variant for every large field of a dataset.

    Attributes:
        variant: one of ``VARIANTS``.
        dim: embedding dim (per field; ``dims`` overrides it field by field).
        compression: large fields keep about ``1/compression`` of their full tables' bytes: hashed
            and multi-hash buckets, the unified table's share and the QR quotient table keep
            ``1/compression`` of the rows (``concat``: ``2/compression`` of the rows at half width, see
            :func:`qr_buckets`); mixed dimension ignores it (its memory follows ``alpha``).
        min_rows: fields with fewer ids than this stay full tables in every variant.
        num_hashes: probes of ``multi_hash``.
        qr_op: ``concat`` (default), ``mult`` or ``add`` for ``qr``. At equal bytes ``concat`` learned
            as well as ``mult`` (within seed noise) and trains its embeddings about 1.7x faster on CPU,
            where ``mult``'s products cost a memory pass each (measured: docs/performance.md and the
            ``quality-qr-ops`` table of models/dlrm/README.md). ``mult`` is the paper's and DLRM's
            default.
        alpha, num_blocks: mixed-dimension power and number of frequency blocks per field.
            ``num_blocks=1`` (default) is the field-level form of the paper's Criteo experiments and
            DLRM's ``md_solver``: each large field is one table whose dim follows
            :func:`~recsys_emb.specs.mixed_field_dims` across the large fields, projected to ``dim``.
            ``num_blocks > 1`` also splits each field's ids into frequency blocks with their own dims:
            more compression at the same quality, but a projection per block and bag (on CPU the
            embedding step takes about 1.7x as long as with the field-level form).
        chunks: unified chunks per field (the shared table's chunk dim is ``dim / chunks``). Every
            field joins the unified table (feature multiplexing, as in the paper; small fields add
            their full row count to it, so the budget matches the other variants).
        dims: per-field embedding dims (e.g. from a search), overriding ``dim``.
        overrides: per-field embedding dicts (``{type: ..., ...}``) used verbatim.
    """

    variant: str = "full"
    dim: int = 16
    compression: float = 4.0
    min_rows: int = 1024
    num_hashes: int = 2
    qr_op: str = "concat"
    alpha: float = 0.3
    num_blocks: int = 1
    chunks: int = 1
    dims: Mapping[str, int] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"embeddings.variant={self.variant!r} must be one of {VARIANTS}")
        if not self.compression >= 1:
            raise ValueError(f"embeddings.compression={self.compression} must be >= 1 (1 = no compression)")
        if self.dim % DIM_MULTIPLE or self.dim < DIM_MULTIPLE:
            raise ValueError(f"embeddings.dim={self.dim} must be a positive multiple of {DIM_MULTIPLE}")
        if self.variant == "unified" and (self.dim % self.chunks or (self.dim // self.chunks) % DIM_MULTIPLE):
            raise ValueError(f"embeddings.chunks={self.chunks} must split dim={self.dim} into chunks whose size is "
                             f"a multiple of {DIM_MULTIPLE}")


def qr_buckets(cardinality: int, compression: float, op: str) -> int:
    """Quotient rows that keep about ``1/compression`` of a full table's bytes.

    ``mult`` and ``add`` tables are full width, so ``ceil(N / compression)`` rows; ``concat`` splits the
    dim into two half-width tables, so twice the rows (at most ``N``: ``concat`` never holds more than
    half the full bytes).

    Example:
        >>> qr_buckets(1000, 4, "mult"), qr_buckets(1000, 4, "concat"), qr_buckets(1000, 1, "concat")
        (250, 500, 1000)
    """
    width_share = 2 if op == "concat" else 1
    return max(1, min(cardinality, math.ceil(cardinality * width_share / compression)))


def feature_specs(cardinalities: Mapping[str, int], preset: VariantPreset,
                  poolings: Optional[Mapping[str, str]] = None,
                  shared: Optional[Mapping[str, str]] = None) -> List[FeatureSpec]:
    """Specs for every field, in the order of ``cardinalities``.

    Args:
        cardinalities: ``{field: vocabulary size}``.
        preset: the variant and its knobs.
        poolings: ``{field: "sum" | "mean" | "none"}`` (default ``sum``).
        shared: ``{field: owner field}``: fields that read another field's tables (DIN histories);
            they get the owner's spec.

    Example:
        >>> specs = feature_specs({"a": 10, "b": 100_000}, VariantPreset("hashed", dim=8, compression=10))
        >>> [(s.name, s.embedding.kind) for s in specs]
        [('a', 'full'), ('b', 'hashed')]
    """
    poolings = poolings or {}
    shared = shared or {}
    unknown = sorted((set(preset.dims) | set(preset.overrides) | set(shared)) - set(cardinalities))
    if unknown:
        raise ValueError(f"embeddings: per-field settings name unknown field(s) {unknown}; fields: {list(cardinalities)}")
    large = {f: c >= preset.min_rows for f, c in cardinalities.items() if f not in shared}
    table = None
    field_dims: dict = {}
    if preset.variant == "mixed" and preset.num_blocks == 1:
        names = [f for f, big in large.items() if big and f not in preset.overrides]
        field_dims = dict(zip(names, mixed_field_dims([cardinalities[f] for f in names], preset.dim, preset.alpha)))
    if preset.variant == "unified":
        rows = sum(math.ceil(cardinalities[f] / preset.compression) if big else cardinalities[f]
                   for f, big in large.items())
        table = UnifiedTable("unified", rows=max(1, rows), chunk_dim=preset.dim // preset.chunks)

    def spec_for(name: str, card: int):
        if name in preset.overrides:
            return embedding_spec_from_dict(preset.overrides[name], feature=name)
        dim = int(preset.dims.get(name, preset.dim))
        if preset.variant == "unified" and name not in preset.dims:
            assert table is not None
            return Unified(table, chunks=preset.chunks)
        if not large[name] or preset.variant == "full":
            return Full(dim)
        rows = max(1, math.ceil(card / preset.compression))
        if preset.variant == "hashed":
            return Hashed(dim, buckets=rows)
        if preset.variant == "multi_hash":
            return Hashed(dim, buckets=rows, num_hashes=preset.num_hashes)
        if preset.variant == "qr":
            return QuotientRemainder(dim, buckets=qr_buckets(card, preset.compression, preset.qr_op), op=preset.qr_op)
        if preset.variant == "mixed" and preset.num_blocks == 1:
            if name in preset.dims or field_dims[name] == dim:
                return Full(dim)
            return MixedDimension(dim, alpha=preset.alpha, boundaries=(), block_dims=(field_dims[name],))
        if preset.variant == "mixed":
            return MixedDimension(dim, alpha=preset.alpha, num_blocks=preset.num_blocks)
        return Hashed(dim, buckets=rows)  # unified with a per-field dim: its own hashed table

    specs: List[FeatureSpec] = []
    for name, card in cardinalities.items():
        owner = shared.get(name)
        emb = spec_for(owner, cardinalities[owner]) if owner else spec_for(name, card)
        specs.append(FeatureSpec(name, emb, cardinality=cardinalities[owner] if owner else card,
                                 pooling=poolings.get(name, "sum"), shared_with=owner))
    # a sharing feature's spec must equal its owner's, salts included
    by_name = {s.name: s for s in specs}
    specs = [s if s.shared_with is None else FeatureSpec(s.name, by_name[s.shared_with].embedding, s.cardinality,
                                                         s.pooling, s.shared_with) for s in specs]
    validate_feature_set(specs)
    return specs
