"""From a variant choice to feature specs: "hashed at 1/4 of the bytes, dim 16" for one field, a group of
fields, or a whole dataset.

One way to choose a variant, used by run configs (:class:`VariantPreset`, the ``embeddings:`` section),
the search and the benchmarks: a *choice* is the spec-dict form of :mod:`recsys_emb.spec_io` with the
sizing left out (``{type: qr, dim: 16, op: concat}``), and :func:`group_specs` sizes it for a group of
fields from their vocabulary sizes and a compression (``1/compression`` of the full tables' bytes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from recsys_emb.errors import ConfigError
from recsys_emb.mixed_dims import mixed_field_dims
from recsys_emb.spec_io import embedding_spec_from_dict
from recsys_emb.specs import (
    DIM_MULTIPLE,
    EmbeddingSpec,
    FeatureSpec,
    Full,
    Hashed,
    MixedDimension,
    QuotientRemainder,
    Unified,
    UnifiedTable,
    validate_feature_set,
)

__all__ = ["VARIANTS", "VariantPreset", "variant_choice", "group_specs", "feature_specs", "qr_buckets", "with_oov_rows"]

VARIANTS = ("full", "hashed", "multi_hash", "qr", "mixed", "unified")
"""The variant names of :class:`VariantPreset` (``multi_hash`` is the hashing trick with several probes)."""


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


def _sized(choice: Mapping[str, Any], cardinality: int, compression: float, name: str) -> EmbeddingSpec:
    """One field's spec from a choice of a per-field kind (not unified, not field-level mixed)."""
    kind = choice.get("type")
    c = dict(choice)
    if kind == "hashed" and "buckets" not in c:
        c["buckets"] = max(1, math.ceil(cardinality / compression))
    elif kind == "qr" and "buckets" not in c and "collisions" not in c:
        c["buckets"] = qr_buckets(cardinality, compression, c.get("op", "mult"))
    return embedding_spec_from_dict(c, feature=name)


def group_specs(choice: Mapping[str, Any], cardinalities: Mapping[str, int], compression: float = 1.0,
                min_rows: int = 0, table_name: str = "unified") -> Dict[str, EmbeddingSpec]:
    """The specs of a group of fields that share one variant choice.

    Args:
        choice: the spec-dict form without sizing: ``{type: full, dim}``, ``{type: hashed, dim,
            num_hashes?, combiner?}``, ``{type: qr, dim, op}``, ``{type: mixed, base_dim, alpha,
            num_blocks}`` (``num_blocks: 1``: field-level dims across the group's large fields, DLRM's
            ``md_solver`` rule), ``{type: unified, chunk_dim, chunks}``; sizing keys given explicitly
            (``buckets``, ``collisions``, ``group``) are kept.
        cardinalities: ``{field: vocabulary size}`` of the group.
        compression: large fields keep about ``1/compression`` of their full tables' bytes (hashed rows,
            QR quotient rows, their share of the unified table); mixed dimension's memory follows
            ``alpha`` instead.
        min_rows: fields with fewer ids stay full tables (of the choice's dim); in a unified group they
            add their full row count to the shared table.
        table_name: the name of a unified group's shared table.

    Example:
        >>> specs = group_specs({"type": "hashed", "dim": 8}, {"a": 10, "b": 100_000}, compression=10, min_rows=1024)
        >>> specs["a"], specs["b"]
        (Full(dim=8), Hashed(dim=8, buckets=10000, num_hashes=1, combiner='sum', oov_id=None))
    """
    if not isinstance(choice, Mapping) or "type" not in choice:
        raise ConfigError(f"a variant choice is a mapping with a 'type' key (e.g. {{type: hashed, dim: 16}}); got {choice!r}")
    if not compression >= 1:
        raise ConfigError(f"compression={compression} must be >= 1 (1 = no compression)")
    kind = choice["type"]
    large = {f: c >= min_rows for f, c in cardinalities.items()}
    if kind == "unified":
        chunks = int(choice.get("chunks", 1))
        rows = sum(math.ceil(c / compression) if large[f] else c for f, c in cardinalities.items())
        table = UnifiedTable(table_name, rows=max(1, rows), chunk_dim=int(choice["chunk_dim"]))
        return {f: Unified(table, chunks=chunks) for f in cardinalities}
    dim = int(choice.get("base_dim", choice.get("dim", 0))) if kind == "mixed" else int(choice.get("dim", 0))
    out: Dict[str, EmbeddingSpec] = {f: Full(dim) for f, big in large.items() if not big}
    if kind == "mixed" and int(choice.get("num_blocks") or 0) == 1:
        names = [f for f, big in large.items() if big]
        alpha = float(choice.get("alpha", MixedDimension.alpha))
        for f, d in zip(names, mixed_field_dims([cardinalities[f] for f in names], dim, alpha)):
            out[f] = Full(dim) if d == dim else MixedDimension(dim, alpha=alpha, boundaries=(), block_dims=(d,))
    else:
        for f, big in large.items():
            if big:
                out[f] = Full(dim) if kind == "full" else _sized(choice, cardinalities[f], compression, f)
    return {f: out[f] for f in cardinalities}


def variant_choice(variant: str, dim: int, num_hashes: int = 2, qr_op: str = "concat", alpha: float = 0.3,
                   num_blocks: int = 1, chunks: int = 1) -> Dict[str, Any]:
    """The choice (see :func:`group_specs`) that a :class:`VariantPreset` variant name stands for.

    Example:
        >>> variant_choice("multi_hash", 16)
        {'type': 'hashed', 'dim': 16, 'num_hashes': 2}
    """
    if variant not in VARIANTS:
        raise ConfigError(f"embeddings.variant={variant!r} is not allowed; choose one of {list(VARIANTS)}")
    return {
        "full": {"type": "full", "dim": dim},
        "hashed": {"type": "hashed", "dim": dim},
        "multi_hash": {"type": "hashed", "dim": dim, "num_hashes": num_hashes},
        "qr": {"type": "qr", "dim": dim, "op": qr_op},
        "mixed": {"type": "mixed", "base_dim": dim, "alpha": alpha, "num_blocks": num_blocks},
        "unified": {"type": "unified", "chunk_dim": dim // max(1, chunks), "chunks": chunks},
    }[variant]


@dataclass
class VariantPreset:
    """One variant for every large field of a dataset: the ``embeddings:`` section of a run config.

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
            as well as ``mult`` (within seed noise) and trains faster (docs/performance.md); ``mult`` is
            the paper's and DLRM's default.
        alpha, num_blocks: mixed-dimension power and number of frequency blocks per field.
            ``num_blocks=1`` (default) is the field-level form of the paper's Criteo experiments and
            DLRM's ``md_solver``: each large field is one table whose dim follows
            :func:`~recsys_emb.mixed_dims.mixed_field_dims` across the large fields, projected to ``dim``.
            ``num_blocks > 1`` also splits each field's ids into frequency blocks with their own dims
            (more compression at the same quality, but a projection per block and bag).
        chunks: unified chunks per field (the shared table's chunk dim is ``dim / chunks``). Every
            field joins the unified table (feature multiplexing, as in the paper; small fields add
            their full row count to it, so the budget matches the other variants).
        dims: per-field embedding dims (e.g. from a search), overriding ``dim``.
        overrides: per-field embedding dicts (``{type: ..., ...}``) used verbatim.
        init_scale: every table starts as ``U(-init_scale, init_scale)``; ``None``: the default
            per-table bound (:func:`recsys_emb.tables.init_tables`).
        oov_row: a hashed or unified field whose dataset names an OOV id (``metadata.json``'s
            ``oov_ids``) reads that id from a row of its own instead of hashing it
            (:func:`with_oov_rows`): one more row per field. ``False``: the OOV id is hashed like any id
            (the layout of runs written before this option).

    Example:
        >>> VariantPreset("qr", dim=8).choice()
        {'type': 'qr', 'dim': 8, 'op': 'concat'}
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
    dims: Dict[str, int] = field(default_factory=dict)
    overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    init_scale: Optional[float] = None
    oov_row: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~recsys_emb.errors.ConfigError` naming the key, the value and what is allowed."""
        if self.variant not in VARIANTS:
            raise ConfigError(f"embeddings.variant={self.variant!r} is not allowed; choose one of {list(VARIANTS)}")
        if not self.compression >= 1:
            raise ConfigError(f"embeddings.compression={self.compression} must be >= 1 (1 = no compression)")
        if self.dim % DIM_MULTIPLE or self.dim < DIM_MULTIPLE:
            raise ConfigError(f"embeddings.dim={self.dim} must be a positive multiple of {DIM_MULTIPLE}")
        if self.variant == "unified" and (self.dim % self.chunks or (self.dim // self.chunks) % DIM_MULTIPLE):
            raise ConfigError(f"embeddings.chunks={self.chunks} must split dim={self.dim} into chunks whose size is "
                              f"a multiple of {DIM_MULTIPLE}")
        if self.qr_op not in ("mult", "add", "concat"):
            raise ConfigError(f"embeddings.qr_op={self.qr_op!r} is not allowed; choose one of ['mult', 'add', 'concat']")
        if self.init_scale is not None and not self.init_scale > 0:
            raise ConfigError(f"embeddings.init_scale={self.init_scale!r} must be > 0")
        for key in ("min_rows", "num_hashes", "num_blocks", "chunks"):
            if getattr(self, key) < (0 if key == "min_rows" else 1):
                raise ConfigError(f"embeddings.{key}={getattr(self, key)!r} must be >= {0 if key == 'min_rows' else 1}")

    def choice(self, dim: Optional[int] = None) -> Dict[str, Any]:
        """This preset's variant as a choice for :func:`group_specs` (at ``dim``, default ``self.dim``)."""
        return variant_choice(self.variant, self.dim if dim is None else dim, self.num_hashes, self.qr_op,
                              self.alpha, self.num_blocks, self.chunks)


def with_oov_rows(specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int],
                  cardinalities: Mapping[str, int]) -> Dict[str, EmbeddingSpec]:
    """``specs`` with a row of its own for each field's OOV id where the variant would hash it.

    A vocabulary maps every value it lacks (unseen in training, or rarer than ``min_count``) to the
    field's OOV id. A hashed table would send that id to a row trained for other ids, so at test time
    unseen values read another id's embedding; a full table already gives it a row of its own. Here
    a :class:`~recsys_emb.specs.Hashed` field gets ``oov_id`` (its table grows by one row) and each
    unified table gets one reserved row per member field with an OOV id (:class:`~recsys_emb.specs.Unified`'s
    ``oov_id`` / ``oov_row``, in field order). Fields without an OOV id, other variants, specs that
    already set ``oov_id`` and unified tables that already reserve rows are returned unchanged.

    Args:
        specs: ``{field: spec}`` of table-owning fields.
        oov_ids: ``{field: OOV id}`` (``metadata.json``'s ``oov_ids``); fields it lacks are unchanged.
        cardinalities: ``{field: vocabulary size}``; each OOV id must lie below its field's.

    Example:
        >>> out = with_oov_rows({"a": Hashed(dim=8, buckets=10), "b": Full(8)}, {"a": 99, "b": 9}, {"a": 100, "b": 10})
        >>> out["a"], out["b"]
        (Hashed(dim=8, buckets=10, num_hashes=1, combiner='sum', oov_id=99), Full(dim=8))
    """
    out = dict(specs)
    members: Dict[str, List[Tuple[str, Unified]]] = {}  # unified table name -> its fields with an OOV id
    for f, spec in specs.items():
        if f not in oov_ids:
            continue
        oov = oov_ids[f]
        if isinstance(oov, bool) or not isinstance(oov, int) or not 0 <= oov < cardinalities.get(f, oov + 1):
            raise ConfigError(f"field {f!r}: OOV id {oov!r} must be an int in [0, {cardinalities.get(f)}) (its vocabulary "
                              f"size); check metadata.json's oov_ids")
        if isinstance(spec, Hashed) and spec.oov_id is None:
            out[f] = dataclasses.replace(spec, oov_id=oov)
        elif isinstance(spec, Unified) and spec.oov_id is None and spec.group.reserved == 0:
            members.setdefault(spec.group.name, []).append((f, spec))
    for fields in members.values():
        old = fields[0][1].group
        if any(spec.group != old for _, spec in fields):
            continue  # one name, two tables: validate_feature_set reports it
        group = dataclasses.replace(old, reserved=len(fields))
        for f, spec in specs.items():  # members without an OOV id read the same, larger table
            if isinstance(spec, Unified) and spec.group == old:
                out[f] = dataclasses.replace(spec, group=group)
        for j, (f, spec) in enumerate(fields):
            out[f] = dataclasses.replace(spec, group=group, oov_id=oov_ids[f], oov_row=group.rows + j)
    return out


def feature_specs(cardinalities: Mapping[str, int], preset: VariantPreset,
                  poolings: Optional[Mapping[str, str]] = None,
                  shared: Optional[Mapping[str, str]] = None,
                  oov_ids: Optional[Mapping[str, int]] = None) -> List[FeatureSpec]:
    """Specs for every field, in the order of ``cardinalities``.

    Args:
        cardinalities: ``{field: vocabulary size}``.
        preset: the variant and its knobs.
        poolings: ``{field: "sum" | "mean" | "none"}`` (default ``sum``).
        shared: ``{field: owner field}``: fields that read another field's tables (DIN histories);
            they get the owner's spec.
        oov_ids: ``{field: OOV id}`` of the dataset: with ``preset.oov_row`` (default), hashed and
            unified fields read their OOV id from a row of its own (:func:`with_oov_rows`).

    Example:
        >>> specs = feature_specs({"a": 10, "b": 100_000}, VariantPreset("hashed", dim=8, compression=10))
        >>> [(s.name, s.embedding.kind) for s in specs]
        [('a', 'full'), ('b', 'hashed')]
    """
    poolings = poolings or {}
    shared = shared or {}
    unknown = sorted((set(preset.dims) | set(preset.overrides) | set(shared)) - set(cardinalities))
    if unknown:
        raise ConfigError(f"embeddings: per-field settings name unknown field(s) {unknown}; fields: {list(cardinalities)}")
    owners = {f: c for f, c in cardinalities.items() if f not in shared}
    # The preset's variant over the owner fields: a unified table is sized by every owner field, the
    # field-level mixed dims are spread over the fields without an override.
    group = owners if preset.variant == "unified" else {f: c for f, c in owners.items() if f not in preset.overrides}
    chosen: Dict[str, EmbeddingSpec] = group_specs(preset.choice(), group, preset.compression, preset.min_rows)
    for f in owners:
        if f in preset.overrides:
            chosen[f] = embedding_spec_from_dict(preset.overrides[f], feature=f)
        elif f in preset.dims:  # its own dim: its own tables (a unified field gets the hashing trick)
            choice = preset.choice(int(preset.dims[f]))
            if choice["type"] in ("unified", "mixed") and (choice["type"] == "unified" or preset.num_blocks == 1):
                choice = {"type": "hashed" if choice["type"] == "unified" else "full", "dim": int(preset.dims[f])}
            chosen[f] = group_specs(choice, {f: owners[f]}, preset.compression, preset.min_rows)[f]
    if oov_ids and preset.oov_row:
        chosen = with_oov_rows(chosen, {f: oov_ids[f] for f in owners if f in oov_ids}, owners)
    specs = []
    for name, card in cardinalities.items():
        owner = shared.get(name)
        specs.append(FeatureSpec(name, chosen[owner or name], cardinality=cardinalities[owner] if owner else card,
                                 pooling=poolings.get(name, "sum"), shared_with=owner))
    # a sharing feature's spec must equal its owner's, salts included
    by_name = {s.name: s for s in specs}
    specs = [s if s.shared_with is None else FeatureSpec(s.name, by_name[s.shared_with].embedding, s.cardinality,
                                                         s.pooling, s.shared_with) for s in specs]
    validate_feature_set(specs)
    return specs
