"""From a variant choice to feature specs: "hashed at 1/4 of the bytes, dim 16" for one field, a group of
fields, or a whole dataset.

One way to choose a variant, used by run configs (:class:`VariantPreset`, the ``embeddings:`` section),
the search and the benchmarks: a variant name of a registered family (:mod:`recsys_emb.families`), a dim,
a compression and the family's options; :func:`group_specs` asks the family's spec class to size a group
of fields from their vocabulary sizes (``1/compression`` of the full tables' bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from recsys_emb import families
from recsys_emb.errors import ConfigError
from recsys_emb.spec_io import embedding_spec_from_dict
from recsys_emb.specs import (
    DIM_MULTIPLE,
    EmbeddingSpec,
    FeatureSpec,
    Full,
    Hashed,
    QuotientRemainder,
    Sizing,
    validate_feature_set,
)

__all__ = ["VARIANTS", "LEGACY_OPTION_KEYS", "VariantPreset", "group_specs", "feature_specs", "qr_buckets",
           "with_oov_rows"]

LEGACY_OPTION_KEYS = ("num_hashes", "qr_op", "alpha", "num_blocks", "chunks")
"""Keys of the ``embeddings:`` section before the families' knobs moved into ``embeddings.options``; a
config that still has them loads as if they were under ``options:`` (:func:`recsys_emb.config.config_from_dict`)."""


def __getattr__(name: str) -> Any:
    if name == "VARIANTS":  # read from the registry: families registered later are in it
        return families.variant_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


VARIANTS: Tuple[str, ...]
"""The variant names of :class:`VariantPreset` (:func:`recsys_emb.families.variant_names`: ``full, hashed,
multi_hash, qr, mixed, unified`` and the families registered since; ``multi_hash`` is the hashing trick
with several probes). Read when accessed."""


def qr_buckets(cardinality: int, compression: float, op: str) -> int:
    """Quotient rows that keep about ``1/compression`` of a full table's bytes
    (:meth:`~recsys_emb.specs.QuotientRemainder.buckets_for`).

    Example:
        >>> qr_buckets(1000, 4, "mult"), qr_buckets(1000, 4, "concat"), qr_buckets(1000, 1, "concat")
        (250, 500, 1000)
    """
    return QuotientRemainder.buckets_for(cardinality, compression, op)


def group_specs(variant: str, dim: int, cardinalities: Mapping[str, int], compression: float = 1.0,
                min_rows: int = 0, options: Optional[Mapping[str, Any]] = None,
                table_name: str = "unified") -> Dict[str, EmbeddingSpec]:
    """The specs of a group of fields that share one variant choice, sized by the variant's family
    (:meth:`~recsys_emb.specs.EmbeddingSpec.for_group`).

    Args:
        variant: a variant name (:func:`recsys_emb.families.variant_names`).
        dim: the embedding dim (mixed dimension: the base dim; unified: ``dim / chunks`` columns per chunk).
        cardinalities: ``{field: vocabulary size}`` of the group.
        compression: large fields keep about ``1/compression`` of their full tables' bytes (hashed rows,
            QR quotient rows, their share of the unified table); mixed dimension's memory follows
            ``alpha`` instead.
        min_rows: fields with fewer ids stay full tables (of ``dim``); in a unified group they add their
            full row count to the shared table.
        options: the family's options (``embeddings.options``; missing ones take the family's defaults,
            and the variant's fixed ones win: ``hashed`` is ``num_hashes: 1``).
        table_name: the name of a table the whole group shares (unified).

    Example:
        >>> specs = group_specs("hashed", 8, {"a": 10, "b": 100_000}, compression=10, min_rows=1024)
        >>> specs["a"], specs["b"]
        (Full(dim=8), Hashed(dim=8, buckets=10000, num_hashes=1, combiner='sum', oov_id=None))
    """
    return families.family_of_variant(variant, "variant").spec.for_group(
        _sizing(variant, dim, cardinalities, compression, min_rows, options, table_name))


def _sizing(variant: str, dim: int, cardinalities: Mapping[str, int], compression: float, min_rows: int,
            options: Optional[Mapping[str, Any]], table_name: str) -> Sizing:
    if not compression >= 1:
        raise ConfigError(f"compression={compression} must be >= 1 (1 = no compression)")
    fam = families.family_of_variant(variant, "variant")
    return Sizing(variant, int(dim), dict(cardinalities), float(compression), int(min_rows),
                  fam.variant_options(variant, options), table_name)


@dataclass
class VariantPreset:
    """One variant for every large field of a dataset: the ``embeddings:`` section of a run config.

    Attributes:
        variant: a variant name of a registered family (``VARIANTS``: ``full``, ``hashed``,
            ``multi_hash``, ``qr``, ``mixed``, ``unified``, and families registered since).
        dim: embedding dim (per field; ``dims`` overrides it field by field).
        compression: large fields keep about ``1/compression`` of their full tables' bytes: hashed
            and multi-hash buckets, the unified table's share and the QR quotient table keep
            ``1/compression`` of the rows (``concat``: ``2/compression`` of the rows at half width, see
            :func:`qr_buckets`); mixed dimension ignores it (its memory follows ``alpha``).
        min_rows: fields with fewer ids than this stay full tables in every variant.
        options: the families' knobs, ``{name: value}``; names left out take their family's default
            (:func:`recsys_emb.families.option_defaults`). The built-in ones:

            * ``num_hashes`` (2): probes of ``multi_hash``.
            * ``qr_op`` (``concat``): ``concat``, ``mult`` or ``add`` for ``qr``. At equal bytes
              ``concat`` learned as well as ``mult`` (within seed noise) and trains faster
              (docs/performance.md); ``mult`` is the paper's and DLRM's default.
            * ``alpha`` (0.3), ``num_blocks`` (1): mixed-dimension power and number of frequency blocks
              per field. ``num_blocks: 1`` is the field-level form of the paper's Criteo experiments and
              DLRM's ``md_solver``: each large field is one table whose dim follows
              :func:`~recsys_emb.mixed_dims.mixed_field_dims` across the large fields, projected to
              ``dim``. ``num_blocks > 1`` also splits each field's ids into frequency blocks with their
              own dims (more compression at the same quality, but a projection per block and bag).
            * ``chunks`` (1): unified chunks per field (the shared table's chunk dim is ``dim / chunks``).
              Every field joins the unified table (feature multiplexing, as in the paper; small fields
              add their full row count to it, so the budget matches the other variants).

            Configs written before this mapping give these five as keys of ``embeddings:`` itself; they
            load as if given here.
        dims: per-field embedding dims (e.g. from a search), overriding ``dim``.
        overrides: per-field embedding dicts (``{type: ..., ...}``) used verbatim.
        init_scale: every table starts as ``U(-init_scale, init_scale)``; ``None``: the default
            per-table bound (:func:`recsys_emb.tables.init_tables`).
        oov_row: a hashed or unified field whose dataset names an OOV id (``metadata.json``'s
            ``oov_ids``) reads that id from a row of its own instead of hashing it
            (:func:`with_oov_rows`): one more row per field. ``False``: the OOV id is hashed like any id
            (the layout of runs written before this option).

    Example:
        >>> VariantPreset("qr", dim=8, options={"qr_op": "mult"}).variant_options()
        {'qr_op': 'mult'}
    """

    variant: str = "full"
    dim: int = 16
    compression: float = 4.0
    min_rows: int = 1024
    options: Dict[str, Any] = field(default_factory=dict)
    dims: Dict[str, int] = field(default_factory=dict)
    overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    init_scale: Optional[float] = None
    oov_row: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~recsys_emb.errors.ConfigError` naming the key, the value and what is allowed."""
        families.family_of_variant(self.variant)
        if not self.compression >= 1:
            raise ConfigError(f"embeddings.compression={self.compression} must be >= 1 (1 = no compression)")
        if self.dim % DIM_MULTIPLE or self.dim < DIM_MULTIPLE:
            raise ConfigError(f"embeddings.dim={self.dim} must be a positive multiple of {DIM_MULTIPLE}")
        if self.init_scale is not None and not self.init_scale > 0:
            raise ConfigError(f"embeddings.init_scale={self.init_scale!r} must be > 0")
        if self.min_rows < 0:
            raise ConfigError(f"embeddings.min_rows={self.min_rows!r} must be >= 0")
        families.check_options(self.options, self.variant, self.dim)

    def option(self, name: str) -> Any:
        """The value of option ``name``: given in ``options``, else its family's default."""
        return self.options.get(name, families.option_defaults()[name])

    def variant_options(self) -> Dict[str, Any]:
        """The options this preset's variant sizes with (:meth:`recsys_emb.families.Family.variant_options`)."""
        return families.family_of_variant(self.variant).variant_options(self.variant, self.options)

    def sizing(self, cardinalities: Mapping[str, int], dim: Optional[int] = None,
               table_name: str = "unified") -> Sizing:
        """The group ``cardinalities`` to size with this preset's variant (at ``dim``, default ``self.dim``)."""
        return _sizing(self.variant, self.dim if dim is None else dim, cardinalities, self.compression,
                       self.min_rows, self.options, table_name)


def with_oov_rows(specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int],
                  cardinalities: Mapping[str, int]) -> Dict[str, EmbeddingSpec]:
    """``specs`` with a row of its own for each field's OOV id where the variant would hash it.

    A vocabulary maps every value it lacks (unseen in training, or rarer than ``min_count``) to the
    field's OOV id. A hashed table would send that id to a row trained for other ids, so at test time
    unseen values read another id's embedding; a full table already gives it a row of its own. Each
    family decides for its fields (:meth:`~recsys_emb.specs.EmbeddingSpec.with_oov_rows`, default: no
    change): a :class:`~recsys_emb.specs.Hashed` field gets ``oov_id`` (its table grows by one row) and each
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
    by_family: Dict[Type[EmbeddingSpec], Dict[str, EmbeddingSpec]] = {}
    for f, spec in specs.items():
        if f in oov_ids:
            oov = oov_ids[f]
            if isinstance(oov, bool) or not isinstance(oov, int) or not 0 <= oov < cardinalities.get(f, oov + 1):
                raise ConfigError(f"field {f!r}: OOV id {oov!r} must be an int in [0, {cardinalities.get(f)}) (its "
                                  f"vocabulary size); check metadata.json's oov_ids")
        by_family.setdefault(type(spec), {})[f] = spec
    out = dict(specs)
    for cls, mine in by_family.items():  # each family gives its fields' OOV ids rows (default: unchanged)
        out.update(cls.with_oov_rows(mine, {f: oov_ids[f] for f in mine if f in oov_ids}))
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
    # The preset's variant over the owner fields: a family whose fields share tables (unified) is sized
    # by every owner field, the others (e.g. the field-level mixed dims) over the fields without an override.
    spec_cls = families.family_of_variant(preset.variant).spec
    group = owners if spec_cls.shared_group else {f: c for f, c in owners.items() if f not in preset.overrides}
    chosen: Dict[str, EmbeddingSpec] = spec_cls.for_group(preset.sizing(group))
    for f in owners:
        if f in preset.overrides:
            chosen[f] = embedding_spec_from_dict(preset.overrides[f], feature=f)
        elif f in preset.dims:  # its own dim: its own tables (a unified field gets the hashing trick)
            chosen[f] = spec_cls.for_own_dim(preset.sizing({f: owners[f]}, dim=int(preset.dims[f])))[f]
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
