"""Feature and embedding-variant specs: frozen, validated dataclasses.

A :class:`FeatureSpec` says what a categorical feature is (name, vocabulary size, pooling); its
``embedding`` field says how it is embedded (one spec dataclass per variant). Dicts and YAML:
:mod:`recsys_emb.spec_io`; mixed-dimension solving across fields and from data: :mod:`recsys_emb.mixed_dims`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from dataclasses import field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from recsys_emb.errors import ConfigError, SpecError

__all__ = [
    "DIM_MULTIPLE",
    "POOLINGS",
    "TableDef",
    "Sizing",
    "EmbeddingSpec",
    "Full",
    "Hashed",
    "QuotientRemainder",
    "MixedDimension",
    "UnifiedTable",
    "Unified",
    "LowRank",
    "TensorTrain",
    "RobeArray",
    "Robe",
    "MC_EVICTIONS",
    "ManagedCollision",
    "FeatureSpec",
    "validate_feature_set",
    "init_bounds",
    "mixed_field_dims",
]

DIM_MULTIPLE = 4
"""FBGEMM's fused kernels (what TorchRec runs once a table is sharded) need dims divisible by 4."""

POOLINGS = ("sum", "mean", "none")
"""``none`` = unpooled (sequence) lookups, served by :class:`~recsys_emb.layer.SequenceEmbeddingLayer`."""


def _option_at_least(key: str, options: Mapping[str, Any], name: str, low: int) -> None:
    value = options.get(name, low)
    if value < low:
        raise ConfigError(f"{key}.{name}={value!r} must be >= {low}")


def _check_int(cls: str, name: str, value: Any, low: int = 1, multiple: int = 1, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{cls}.{name}={value!r} must be an int{hint}")
    if value < low:
        raise SpecError(f"{cls}.{name}={value} must be >= {low}{hint}")
    if value % multiple:
        lower = max(multiple, value - value % multiple)
        raise SpecError(
            f"{cls}.{name}={value} must be a multiple of {multiple} (FBGEMM's fused kernels, used once "
            f"TorchRec shards a table, require it); use {lower} or {lower + multiple}{hint}"
        )


@dataclass(frozen=True)
class TableDef:
    """One physical table: ``rows x dim`` trainable parameters, named after its owning feature.

    ``init_bound``: new tables start as ``U(-init_bound, init_bound)``; ``None`` (a variant's own tables):
    TorchRec's default ``1/sqrt(rows)``. A layer sets it for a table that several features share
    (:func:`init_bounds`).
    """

    name: str
    rows: int
    dim: int
    init_bound: Optional[float] = None

    @property
    def params(self) -> int:
        return self.rows * self.dim

    @property
    def bound(self) -> float:
        """The uniform bound new weights are drawn from (``init_bound``, else ``1/sqrt(rows)``)."""
        return self.rows ** -0.5 if self.init_bound is None else self.init_bound


@dataclass(frozen=True)
class Sizing:
    """A group of fields that share one variant choice, to be sized by its family
    (:meth:`EmbeddingSpec.for_group`).

    Attributes:
        variant: the variant name chosen (``multi_hash``, ``qr``, ...; :func:`recsys_emb.families.variant_names`).
        dim: the embedding dim asked for (a family may widen it, e.g. QR ``concat`` to a multiple of 8).
        cardinalities: ``{field: vocabulary size}`` of the group, in order.
        compression: large fields keep about ``1/compression`` of their full tables' bytes.
        min_rows: fields with fewer ids are small: they stay full tables (a family that shares one table
            across the group may add their full row count to it instead).
        options: the family's options (its defaults, the preset's ``options:``, what the variant fixes).
        table_name: the name of a table the whole group shares (unified).

    Example:
        >>> Sizing("hashed", dim=8, cardinalities={"a": 10, "b": 5000}, min_rows=100).large_fields
        ['b']
    """

    variant: str
    dim: int
    cardinalities: Mapping[str, int]
    compression: float = 1.0
    min_rows: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    table_name: str = "unified"

    def is_large(self, name: str) -> bool:
        """Whether field ``name`` has at least ``min_rows`` ids (it is compressed)."""
        return self.cardinalities[name] >= self.min_rows

    @property
    def large_fields(self) -> List[str]:
        return [f for f in self.cardinalities if self.is_large(f)]


class EmbeddingSpec:
    """Base of the per-variant specs. Subclasses are frozen dataclasses with a ``kind`` tag.

    A spec alone determines its tables (:meth:`tables`) and its small dense parameters
    (:meth:`dense_params`), so memory is known before anything is built. A family offered to presets
    and the search also sizes itself for a group of fields (:meth:`for_group`, by default
    :meth:`for_field` per large field) and may check its options (:meth:`check_options`) and choose
    them in a search trial (:meth:`suggest`); registration: :func:`recsys_emb.families.register_family`.
    """

    kind: ClassVar[str] = ""
    needs_cardinality: ClassVar[bool] = False
    compresses: ClassVar[bool] = True
    """Whether its sizing follows ``compression`` (the search then chooses one per group)."""
    shared_group: ClassVar[bool] = False
    """Whether a group's fields share its tables: the group is sized over every field (those with
    per-field overrides too), and a search trial gives its fields no per-field dims."""

    @classmethod
    def for_group(cls, sizing: Sizing) -> Dict[str, "EmbeddingSpec"]:
        """The specs of a group of fields, ``{field: spec}`` in the order of ``sizing.cardinalities``:
        small fields full tables of ``sizing.dim``, large ones :meth:`for_field`."""
        return {f: cls.for_field(sizing, f, c) if sizing.is_large(f) else Full(sizing.dim)
                for f, c in sizing.cardinalities.items()}

    @classmethod
    def for_field(cls, sizing: Sizing, name: str, cardinality: int) -> "EmbeddingSpec":
        """One large field's spec at about ``1/sizing.compression`` of its full table's bytes."""
        raise SpecError(f"{cls.__name__} does not size itself for a group; give it a for_field or for_group "
                        f"classmethod to offer it to presets and the search")

    @classmethod
    def for_own_dim(cls, sizing: Sizing) -> Dict[str, "EmbeddingSpec"]:
        """The spec of one field that has a dim of its own (``embeddings.dims``), out of the group."""
        return cls.for_group(sizing)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        """Raise :class:`~recsys_emb.errors.ConfigError` naming ``key.<option>`` for a bad value of this
        family's ``options``; ``dim`` is the preset's dim when the preset chose this family, else None."""

    @classmethod
    def with_oov_rows(cls, specs: Mapping[str, "EmbeddingSpec"], oov_ids: Mapping[str, int]
                      ) -> Dict[str, "EmbeddingSpec"]:
        """``specs`` (this class's fields of a dataset, in order) with a row of its own for each field's
        OOV id in ``oov_ids`` (checked to lie in the field's vocabulary), where the family would otherwise
        share that id's row with other ids (:func:`recsys_emb.presets.with_oov_rows`). Default: unchanged."""
        return dict(specs)

    @classmethod
    def suggest(cls, trial: Any, space: Any, group: str, variant: str, dim: int,
                options: Mapping[str, Any]) -> Tuple[int, Dict[str, Any], float]:
        """A search trial's ``(dim, options, compression)`` for group ``group`` that chose ``variant`` at
        ``dim`` (``options``: the base config's). By default ``compression:<group>`` from
        ``space.compression`` when the family :attr:`compresses`, else 1."""
        compression = 1.0
        if cls.compresses:
            compression = float(trial.suggest_categorical(f"compression:{group}", list(space.compression)))
        return dim, dict(options), compression

    @property
    def output_dim(self) -> int:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:  # pragma: no cover
        """The physical tables of a feature named ``owner`` with this spec."""
        raise NotImplementedError

    def dense_params(self, cardinality: Optional[int]) -> int:
        """Trainable parameters outside the tables (projections, probe weights), per feature."""
        return 0

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict with a ``type`` key, the inverse of :func:`recsys_emb.spec_io.embedding_spec_from_dict`."""
        out: Dict[str, Any] = {"type": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class Full(EmbeddingSpec):
    """One row per id: a ``cardinality x dim`` table. Ids must lie in ``[0, cardinality)``.

    Example:
        >>> Full(dim=16).output_dim
        16
    """

    dim: int
    kind: ClassVar[str] = "full"
    needs_cardinality: ClassVar[bool] = True
    compresses: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_int("Full", "dim", self.dim, multiple=DIM_MULTIPLE)

    @classmethod
    def for_group(cls, sizing: Sizing) -> Dict[str, EmbeddingSpec]:
        """Every field a full table of ``sizing.dim`` (``compression`` does not apply)."""
        return {f: cls(sizing.dim) for f in sizing.cardinalities}

    @property
    def output_dim(self) -> int:
        return self.dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        return [TableDef(owner, int(cardinality), self.dim)]  # type: ignore[arg-type]


HASH_COMBINERS = ("sum", "weighted")


@dataclass(frozen=True)
class Hashed(EmbeddingSpec):
    """The hashing trick, optionally with several hash probes into one ``buckets x dim`` table.

    Each id is hashed ``num_hashes`` times with different seeds; ``combiner="sum"`` adds the rows,
    ``combiner="weighted"`` learns one weight per probe (initialised to 1). Any int64 id is accepted,
    negative ids included, and ``cardinality`` may be ``None`` (open vocabulary).

    ``oov_id``: the id that stands for "a value not in the vocabulary" (the dataset's OOV id,
    ``metadata.json``'s ``oov_ids``). It is not hashed: every probe of it reads one extra row,
    ``buckets``, so the table has ``buckets + 1`` rows and unseen values do not share a row that was
    trained for another id. ``None``: no such row (every id is hashed).

    Example:
        >>> Hashed(dim=16, buckets=1000, num_hashes=2).output_dim
        16
        >>> Hashed(dim=16, buckets=1000, oov_id=99_999).tables("C1", 100_000)[0].rows
        1001
    """

    dim: int
    buckets: int
    num_hashes: int = 1
    combiner: str = "sum"
    oov_id: Optional[int] = None
    kind: ClassVar[str] = "hashed"

    def __post_init__(self) -> None:
        _check_int("Hashed", "dim", self.dim, multiple=DIM_MULTIPLE)
        _check_int("Hashed", "buckets", self.buckets)
        _check_int("Hashed", "num_hashes", self.num_hashes)
        if self.num_hashes > 16:
            raise SpecError(f"Hashed.num_hashes={self.num_hashes} must be <= 16")
        if self.combiner not in HASH_COMBINERS:
            raise SpecError(f"Hashed.combiner={self.combiner!r} must be one of {HASH_COMBINERS}")
        if self.oov_id is not None:
            _check_int("Hashed", "oov_id", self.oov_id, low=0)

    @classmethod
    def for_field(cls, sizing: Sizing, name: str, cardinality: int) -> EmbeddingSpec:
        """``ceil(cardinality / compression)`` buckets, ``options["num_hashes"]`` probes."""
        return cls(dim=sizing.dim, buckets=max(1, math.ceil(cardinality / sizing.compression)),
                   num_hashes=int(sizing.options.get("num_hashes", 1)))

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        _option_at_least(key, options, "num_hashes", 1)

    @classmethod
    def with_oov_rows(cls, specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int]) -> Dict[str, EmbeddingSpec]:
        """Each field with an OOV id and no ``oov_id`` yet gets it: one more row, read by every probe of it."""
        return _give_oov_ids(specs, oov_ids)

    @property
    def output_dim(self) -> int:
        return self.dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        return [TableDef(owner, self.buckets + (self.oov_id is not None), self.dim)]

    def dense_params(self, cardinality: Optional[int]) -> int:
        return self.num_hashes if self.combiner == "weighted" and self.num_hashes > 1 else 0


QR_OPS = ("mult", "add", "concat")


@dataclass(frozen=True)
class QuotientRemainder(EmbeddingSpec):
    """Compositional embedding with the quotient-remainder trick (Shi et al., KDD 2020).

    With modulus ``m``, id ``x`` looks up row ``x // m`` of a ``ceil(N / m) x d`` quotient table and
    row ``x % m`` of an ``m x d`` remainder table, and the two rows are combined by ``op``:
    ``mult`` (elementwise product), ``add`` or ``concat`` (each table then has ``dim / 2`` columns).
    Give the modulus as ``collisions`` (ids sharing one quotient row, DLRM's ``--qr-collisions``) or
    as ``buckets`` (rows of the quotient table; ``m = ceil(N / buckets)``); with neither,
    ``m = ceil(sqrt(N))``, the choice with the fewest rows.

    Pooling: a bag is pooled per table first and then combined, as DLRM's ``QREmbeddingBag`` does.
    For ``add`` and ``concat`` that equals pooling the per-id vectors; for ``mult`` it does so for
    bags of one id (every Criteo field). For multi-valued fields choose ``add``/``concat``.

    Example:
        >>> QuotientRemainder(dim=16, collisions=4).modulus(100)
        4
    """

    dim: int
    collisions: Optional[int] = None
    buckets: Optional[int] = None
    op: str = "mult"
    kind: ClassVar[str] = "qr"
    needs_cardinality: ClassVar[bool] = True

    def __post_init__(self) -> None:
        mult = 2 * DIM_MULTIPLE if self.op == "concat" else DIM_MULTIPLE
        hint = " (op='concat' splits dim into two tables of dim/2)" if self.op == "concat" else ""
        _check_int("QuotientRemainder", "dim", self.dim, multiple=mult, hint=hint)
        if self.op not in QR_OPS:
            raise SpecError(f"QuotientRemainder.op={self.op!r} must be one of {QR_OPS}")
        if self.collisions is not None and self.buckets is not None:
            raise SpecError(
                f"QuotientRemainder: give collisions ({self.collisions}) or buckets ({self.buckets}), not both"
            )
        if self.collisions is not None:
            _check_int("QuotientRemainder", "collisions", self.collisions, low=2)
        if self.buckets is not None:
            _check_int("QuotientRemainder", "buckets", self.buckets)

    @staticmethod
    def buckets_for(cardinality: int, compression: float, op: str) -> int:
        """Quotient rows that keep about ``1/compression`` of a full table's bytes.

        ``mult`` and ``add`` tables are full width, so ``ceil(N / compression)`` rows; ``concat`` splits
        the dim into two half-width tables, so twice the rows (at most ``N``: ``concat`` never holds more
        than half the full bytes).

        Example:
            >>> QuotientRemainder.buckets_for(1000, 4, "mult"), QuotientRemainder.buckets_for(1000, 4, "concat")
            (250, 500)
        """
        width_share = 2 if op == "concat" else 1
        return max(1, min(cardinality, math.ceil(cardinality * width_share / compression)))

    @classmethod
    def for_field(cls, sizing: Sizing, name: str, cardinality: int) -> EmbeddingSpec:
        """Op ``options["qr_op"]``, quotient rows :meth:`buckets_for` the compression."""
        op = str(sizing.options.get("qr_op", "mult"))
        return cls(dim=sizing.dim, buckets=cls.buckets_for(cardinality, sizing.compression, op), op=op)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        if options.get("qr_op", "mult") not in QR_OPS:
            raise ConfigError(f"{key}.qr_op={options['qr_op']!r} is not allowed; choose one of {list(QR_OPS)}")

    @classmethod
    def suggest(cls, trial: Any, space: Any, group: str, variant: str, dim: int,
                options: Mapping[str, Any]) -> Tuple[int, Dict[str, Any], float]:
        """The compression; ``concat`` halves the dim, so a dim that is no multiple of 8 grows by 4."""
        dim, opts, compression = super().suggest(trial, space, group, variant, dim, options)
        if opts.get("qr_op") == "concat" and dim % (2 * DIM_MULTIPLE):
            dim += DIM_MULTIPLE
        return dim, opts, compression

    def modulus(self, cardinality: int) -> int:
        """The remainder modulus ``m`` for a vocabulary of ``cardinality`` ids."""
        if self.collisions is not None:
            return self.collisions
        if self.buckets is not None:
            return max(1, math.ceil(cardinality / self.buckets))
        return max(1, math.isqrt(cardinality - 1) + 1)

    def table_rows(self, cardinality: int) -> Tuple[int, int]:
        """(quotient rows, remainder rows) for a vocabulary of ``cardinality`` ids."""
        m = self.modulus(cardinality)
        return math.ceil(cardinality / m), m

    @property
    def table_dim(self) -> int:
        return self.dim // 2 if self.op == "concat" else self.dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        q_rows, r_rows = self.table_rows(int(cardinality))  # type: ignore[arg-type]
        return [TableDef(owner + "@q", q_rows, self.table_dim), TableDef(owner + "@r", r_rows, self.table_dim)]

    @property
    def output_dim(self) -> int:
        return self.dim


def _harmonic_mass(start: int, stop: int) -> float:
    """Access mass of ranks [start, stop) under Zipf's law p(r) ~ 1/(r+1) (integral approximation)."""
    return math.log((stop + 0.5) / (start + 0.5))


def mixed_field_dims(sizes: Sequence[int], base_dim: int, alpha: float,
                     queries: Optional[Sequence[float]] = None, round_to: int = DIM_MULTIPLE) -> List[int]:
    """Field-level mixed dimensions (one dim per field; DLRM's ``md_solver`` rule).

    ``d_f = base_dim * (n_f' / n_min') ** (-alpha)`` with ``n_f' = rows_f / queries_f`` (queries: mean
    lookups of the field per sample, default 1): the field with the fewest effective rows gets
    ``base_dim``, larger fields less; rounded to ``round_to`` and clamped to ``[round_to, base_dim]``.
    Use with :class:`Full` specs (:mod:`recsys_emb.mixed_dims` also exports it); models project to a common dim only where they need one.

    Example:
        >>> mixed_field_dims([10, 1000, 100000], base_dim=64, alpha=0.25)
        [64, 20, 8]
    """
    q = list(queries) if queries is not None else [1.0] * len(sizes)
    eff = [n / max(k, 1e-12) for n, k in zip(sizes, q)]
    smallest = min(eff)
    dims = []
    for e in eff:
        d = int(round(base_dim * (e / smallest) ** (-alpha) / round_to)) * round_to
        dims.append(min(base_dim, max(round_to, d)))
    return dims


@dataclass(frozen=True)
class MixedDimension(EmbeddingSpec):
    """Mixed-dimension embedding (Ginart et al., "Mixed Dimension Embeddings with Application to
    Memory-Efficient Recommendation Systems", ISIT 2021).

    Ids are frequency ranks (id 0 = most frequent). They are cut into ``k`` blocks of contiguous
    ranks; block ``i`` holds ``n_i`` ids with total access probability ``P_i`` and gets its own
    ``n_i x d_i`` table and a learned projection ``d_i -> base_dim`` (none when ``d_i = base_dim``,
    where it would be a redundant re-parameterisation). Dimensions follow the
    paper's popularity power rule (DLRM's ``md_solver``)::

        d_i = base_dim * (p_i / p_0) ** alpha,   p_i = P_i / n_i  (mean access probability of an id)

    i.e. ``base_dim * (n_i' / n_0') ** (-alpha)`` with ``n_i' = n_i / P_i``, rounded to a multiple of
    ``round_to`` and clamped to ``[round_to, base_dim]``. ``alpha = 0`` gives equal dims. ``P_i``
    comes from frequency counts (:meth:`resolve`); without counts, Zipf's law ``p(r) ~ 1/(r+1)`` is
    assumed. Blocks: ``boundaries`` (first rank of blocks 1..k-1), or ``num_blocks`` log-uniform
    blocks (boundaries at ``N ** (i / k)``); default 4 blocks. ``block_dims`` fixes the dims
    explicitly (what :meth:`resolve` writes, so a saved config rebuilds the same tables).

    Example:
        >>> md = MixedDimension(base_dim=32, alpha=0.5, boundaries=(10, 100)).resolve(1000)
        >>> md.block_dims
        (32, 8, 4)
    """

    base_dim: int
    alpha: float = 0.3
    num_blocks: Optional[int] = None
    boundaries: Optional[Tuple[int, ...]] = None
    round_to: int = DIM_MULTIPLE
    block_dims: Optional[Tuple[int, ...]] = None
    kind: ClassVar[str] = "mixed"
    needs_cardinality: ClassVar[bool] = True
    compresses: ClassVar[bool] = False
    search_blocks: ClassVar[int] = 4
    """Frequency blocks per field of a searched group when the base config is field-level (``num_blocks: 1``):
    there the search itself chooses each field's dim, so alpha would have nothing to act on."""

    @classmethod
    def for_group(cls, sizing: Sizing) -> Dict[str, EmbeddingSpec]:
        """``options["num_blocks"] == 1``: one table per large field, dims by
        :func:`~recsys_emb.mixed_dims.mixed_field_dims` across the group's large fields (DLRM's
        ``md_solver``); more: that many frequency blocks inside each large field. Memory follows
        ``options["alpha"]``, not ``compression``."""
        dim = sizing.dim
        alpha = float(sizing.options.get("alpha", cls.alpha))
        blocks = int(sizing.options.get("num_blocks") or 0)
        out: Dict[str, EmbeddingSpec] = {f: Full(dim) for f in sizing.cardinalities if not sizing.is_large(f)}
        large = sizing.large_fields
        if blocks == 1:
            for f, d in zip(large, mixed_field_dims([sizing.cardinalities[f] for f in large], dim, alpha)):
                out[f] = Full(dim) if d == dim else cls(dim, alpha=alpha, boundaries=(), block_dims=(d,))
        else:
            for f in large:
                out[f] = cls(base_dim=dim, alpha=alpha, num_blocks=blocks or None)
        return {f: out[f] for f in sizing.cardinalities}

    @classmethod
    def for_own_dim(cls, sizing: Sizing) -> Dict[str, EmbeddingSpec]:
        """Field-level (``num_blocks: 1``): a full table of its own dim; else its own frequency blocks."""
        if int(sizing.options.get("num_blocks") or 0) == 1:
            return {f: Full(sizing.dim) for f in sizing.cardinalities}
        return cls.for_group(sizing)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        _option_at_least(key, options, "num_blocks", 1)
        alpha = options.get("alpha", cls.alpha)
        if not 0 <= alpha <= 2:
            raise ConfigError(f"{key}.alpha={alpha!r} must lie in [0, 2] (the paper uses 0..1)")

    @classmethod
    def suggest(cls, trial: Any, space: Any, group: str, variant: str, dim: int,
                options: Mapping[str, Any]) -> Tuple[int, Dict[str, Any], float]:
        """``alpha:<group>`` from ``space.alpha``; frequency blocks inside each field (the base config's
        ``num_blocks`` when above 1, else :attr:`search_blocks`)."""
        opts = dict(options)
        opts["alpha"] = float(trial.suggest_categorical(f"alpha:{group}", list(space.alpha)))
        blocks = int(opts.get("num_blocks", 1))
        opts["num_blocks"] = blocks if blocks > 1 else cls.search_blocks
        return dim, opts, 1.0

    def __post_init__(self) -> None:
        _check_int("MixedDimension", "round_to", self.round_to, multiple=DIM_MULTIPLE)
        _check_int("MixedDimension", "base_dim", self.base_dim, multiple=self.round_to)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 2:
            raise SpecError(f"MixedDimension.alpha={self.alpha!r} must be a number in [0, 2] (the paper uses 0..1)")
        if self.num_blocks is not None and self.boundaries is not None:
            raise SpecError("MixedDimension: give num_blocks or boundaries, not both")
        if self.num_blocks is not None:
            _check_int("MixedDimension", "num_blocks", self.num_blocks)
        if self.boundaries is not None:
            b = tuple(self.boundaries)
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in b) or any(
                    x >= y for x, y in zip(b, b[1:])) or (b and b[0] < 1):
                raise SpecError(f"MixedDimension.boundaries={b} must be strictly increasing ints >= 1")
        if self.block_dims is not None:
            for d in self.block_dims:
                _check_int("MixedDimension", "block_dims[]", d, multiple=DIM_MULTIPLE)
                if d > self.base_dim:
                    raise SpecError(f"MixedDimension.block_dims={self.block_dims} must be <= base_dim={self.base_dim}")
            if self.boundaries is None:
                raise SpecError("MixedDimension.block_dims needs explicit boundaries")
            if len(self.block_dims) != len(self.boundaries) + 1:
                raise SpecError(f"MixedDimension.block_dims has {len(self.block_dims)} entries; "
                                 f"{len(self.boundaries) + 1} blocks are defined by boundaries={self.boundaries}")

    def check_feature(self, feature: "FeatureSpec") -> None:
        if self.boundaries and feature.cardinality is not None and self.boundaries[-1] >= feature.cardinality:
            raise SpecError(f"feature {feature.name!r}: MixedDimension.boundaries={self.boundaries} must lie below "
                             f"cardinality={feature.cardinality}")

    @property
    def output_dim(self) -> int:
        return self.base_dim

    def block_boundaries(self, cardinality: int) -> Tuple[int, ...]:
        """First rank of every block but the first (strictly increasing, in ``[1, cardinality)``)."""
        if self.boundaries is not None:
            return tuple(self.boundaries)
        k = self.num_blocks or 4
        cuts = sorted({int(round(cardinality ** (i / k))) for i in range(1, k)})
        return tuple(c for c in cuts if 1 <= c < cardinality)

    def resolve(self, cardinality: int, counts: Optional[Sequence[float]] = None) -> "MixedDimension":
        """This spec with explicit boundaries and block dims, from per-rank frequency ``counts``
        (length ``cardinality``; index = id) or, without counts, Zipf's law."""
        bounds = self.block_boundaries(cardinality)
        edges = (0, *bounds, cardinality)
        if counts is not None:
            if len(counts) != cardinality:
                raise SpecError(f"MixedDimension.resolve: got {len(counts)} counts for cardinality {cardinality}")
            import numpy as np

            csum = np.concatenate([[0.0], np.cumsum(np.asarray(counts, dtype=np.float64))])
            mass = [float(csum[b] - csum[a]) for a, b in zip(edges, edges[1:])]
        else:
            mass = [_harmonic_mass(a, b) for a, b in zip(edges, edges[1:])]
        sizes = [b - a for a, b in zip(edges, edges[1:])]
        pop = [m / n for m, n in zip(mass, sizes)]
        dims = []
        for p in pop:
            raw = self.base_dim * (p / pop[0]) ** self.alpha if pop[0] > 0 and p > 0 else (
                self.base_dim if self.alpha == 0 else 0.0)
            d = int(round(raw / self.round_to)) * self.round_to
            dims.append(min(self.base_dim, max(self.round_to, d)))
        return dataclasses.replace(self, num_blocks=None, boundaries=bounds, block_dims=tuple(dims))

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        assert cardinality is not None  # FeatureSpec refuses a mixed-dimension feature without one
        r = self if self.block_dims is not None else self.resolve(int(cardinality))
        assert r.boundaries is not None and r.block_dims is not None  # explicit, or set by resolve()
        edges = (0, *r.boundaries, int(cardinality))
        return [TableDef(f"{owner}@b{i}", b - a, d) for i, (a, b, d) in enumerate(zip(edges, edges[1:], r.block_dims))]

    def dense_params(self, cardinality: Optional[int]) -> int:
        """Projections of the blocks narrower than ``base_dim`` (a full-width block needs none)."""
        return sum(t.dim * self.base_dim for t in self.tables("_", cardinality) if t.dim != self.base_dim)


@dataclass(frozen=True)
class UnifiedTable:
    """One table shared by a group of features (Unified Embedding / feature multiplexing).

    Ids hash into its first ``rows`` rows; ``reserved`` more rows follow them, one per feature whose
    OOV id has its own row (:attr:`Unified.oov_row`). The table holds ``rows + reserved`` rows.

    Example:
        >>> UnifiedTable("shared", rows=100_000, chunk_dim=16).params
        1600000
        >>> UnifiedTable("shared", rows=100_000, chunk_dim=16, reserved=2).total_rows
        100002
    """

    name: str
    rows: int
    chunk_dim: int
    reserved: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "@. "):
            raise SpecError(f"UnifiedTable.name={self.name!r} must be a non-empty string without '@', '.' or spaces")
        _check_int("UnifiedTable", "rows", self.rows)
        _check_int("UnifiedTable", "chunk_dim", self.chunk_dim, multiple=DIM_MULTIPLE)
        _check_int("UnifiedTable", "reserved", self.reserved, low=0)

    @property
    def total_rows(self) -> int:
        """Hashed rows plus reserved rows."""
        return self.rows + self.reserved

    @property
    def params(self) -> int:
        return self.total_rows * self.chunk_dim

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "rows": self.rows, "chunk_dim": self.chunk_dim}
        if self.reserved:
            out["reserved"] = self.reserved
        return out


@dataclass(frozen=True)
class Unified(EmbeddingSpec):
    """A feature multiplexed into a shared :class:`UnifiedTable` (Coleman et al., "Unified
    Embedding: Battle-Tested Feature Representations for Web-Scale ML Systems", NeurIPS 2023).

    Chunk ``j`` of id ``x`` reads row ``hash(x, salt_j) mod rows`` of the group's table; the
    feature's embedding is the concatenation of its ``chunks`` lookups (``chunks * chunk_dim``
    columns: variable-length unified embedding). Salts default to
    ``seed_from_name(group, feature, j)``; :class:`FeatureSpec` fills them in, so a dumped config
    carries them and a loaded one reproduces the same rows.

    ``oov_id`` and ``oov_row``: the feature's OOV id (``metadata.json``'s ``oov_ids``) is not hashed;
    every chunk of it reads the reserved row ``oov_row`` (in ``[group.rows, group.total_rows)``, one
    per feature), so unseen values do not share a row trained for another id of any field. Give both
    or neither.

    Example:
        >>> Unified(UnifiedTable("u", rows=1000, chunk_dim=8), chunks=3).output_dim
        24
    """

    group: UnifiedTable
    chunks: int = 1
    salts: Optional[Tuple[int, ...]] = None
    oov_id: Optional[int] = None
    oov_row: Optional[int] = None
    kind: ClassVar[str] = "unified"
    shared_group: ClassVar[bool] = True

    @classmethod
    def for_group(cls, sizing: Sizing) -> Dict[str, EmbeddingSpec]:
        """Every field joins one table named ``sizing.table_name`` (feature multiplexing): large fields add
        ``ceil(N / compression)`` rows, small ones their full row count; ``options["chunks"]`` lookups per
        field of ``dim / chunks`` columns (rounded down to a multiple of 4, at least 4)."""
        chunks = int(sizing.options.get("chunks", 1))
        rows = sum(math.ceil(c / sizing.compression) if sizing.is_large(f) else c
                   for f, c in sizing.cardinalities.items())
        chunk_dim = max(DIM_MULTIPLE, (sizing.dim // chunks) // DIM_MULTIPLE * DIM_MULTIPLE)
        table = UnifiedTable(sizing.table_name, rows=max(1, rows), chunk_dim=chunk_dim)
        return {f: cls(table, chunks=chunks) for f in sizing.cardinalities}

    @classmethod
    def for_own_dim(cls, sizing: Sizing) -> Dict[str, EmbeddingSpec]:
        """A field with a dim of its own leaves the shared table: the hashing trick at that dim."""
        return Hashed.for_group(dataclasses.replace(sizing, variant="hashed", options={"num_hashes": 1}))

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        _option_at_least(key, options, "chunks", 1)
        chunks = int(options.get("chunks", 1))
        if dim is not None and (dim % chunks or (dim // chunks) % DIM_MULTIPLE):
            raise ConfigError(f"{key}.chunks={chunks} must split dim={dim} into chunks whose size is a multiple of "
                              f"{DIM_MULTIPLE}")

    @classmethod
    def with_oov_rows(cls, specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int]) -> Dict[str, EmbeddingSpec]:
        """Each shared table without reserved rows gets one per member field with an OOV id (in field order);
        the members without one read the same, larger table."""
        return _reserve_oov_rows(cls, specs, oov_ids, lambda spec: 1)

    @classmethod
    def suggest(cls, trial: Any, space: Any, group: str, variant: str, dim: int,
                options: Mapping[str, Any]) -> Tuple[int, Dict[str, Any], float]:
        """The compression, then ``chunks:<group>`` from ``space.chunks``."""
        dim, opts, compression = super().suggest(trial, space, group, variant, dim, options)
        opts["chunks"] = int(trial.suggest_categorical(f"chunks:{group}", list(space.chunks)))
        return dim, opts, compression

    def __post_init__(self) -> None:
        if not isinstance(self.group, UnifiedTable):
            raise SpecError(f"Unified.group={self.group!r} must be a UnifiedTable(name, rows, chunk_dim)")
        _check_int("Unified", "chunks", self.chunks)
        if self.salts is not None:
            if len(self.salts) != self.chunks or not all(isinstance(s, int) and not isinstance(s, bool)
                                                         for s in self.salts):
                raise SpecError(f"Unified.salts={self.salts} must be {self.chunks} ints (one per chunk)")
        if (self.oov_id is None) != (self.oov_row is None):
            raise SpecError(f"Unified: give oov_id ({self.oov_id}) and oov_row ({self.oov_row}) together, or neither")
        if self.oov_id is not None:
            _check_int("Unified", "oov_id", self.oov_id, low=0)
            _check_int("Unified", "oov_row", self.oov_row, low=self.group.rows,
                       hint=f" and < {self.group.total_rows} (a reserved row of table {self.group.name!r}: "
                            f"rows={self.group.rows}, reserved={self.group.reserved})")
            if self.oov_row >= self.group.total_rows:  # type: ignore[operator]
                raise SpecError(f"Unified.oov_row={self.oov_row} must be < {self.group.total_rows}: table "
                                f"{self.group.name!r} has rows={self.group.rows} and reserved={self.group.reserved}; "
                                f"raise its reserved rows")

    @property
    def output_dim(self) -> int:
        return self.chunks * self.group.chunk_dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        return [TableDef(self.group.name, self.group.total_rows, self.group.chunk_dim)]

    def with_salts(self, owner: str) -> "Unified":
        """This spec with its salts filled in from (group, owner feature, chunk index)."""
        if self.salts is not None:
            return self
        from recsys_emb.hashing import seed_from_name

        return dataclasses.replace(self, salts=tuple(seed_from_name(self.group.name, owner, j)
                                                     for j in range(self.chunks)))

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["group"] = self.group.to_dict()
        return out


def _isqrt_ceil(n: int, k: int) -> int:
    """The smallest ``r`` with ``r ** k >= n`` (integer ``k``-th root, rounded up)."""
    r = max(1, int(round(n ** (1.0 / k))))
    while r ** k < n:
        r += 1
    while r > 1 and (r - 1) ** k >= n:
        r -= 1
    return r


@dataclass(frozen=True)
class LowRank(EmbeddingSpec):
    """A low-rank table: a ``cardinality x rank`` table times a learned ``rank x dim`` projection
    (the factorisation ``E = A P`` of the "Unified Low-rank Compression Framework for Click-through
    Rate Prediction" and of ALBERT's factorised embeddings), ``cardinality * rank + rank * dim``
    parameters instead of ``cardinality * dim``.

    ``min_rows``: a feature with fewer ids is not factorised (a plain ``cardinality x dim`` table, no
    projection): a small field saves almost nothing and loses its rank. Ids must lie in
    ``[0, cardinality)``.

    Example:
        >>> LowRank(dim=16, rank=4).tables("C1", 1000)[0].dim
        4
        >>> LowRank(dim=16, rank=4).dense_params(1000)
        64
        >>> LowRank(dim=16, rank=4, min_rows=2000).factorised(1000)
        False
    """

    dim: int
    rank: int
    min_rows: int = 0
    kind: ClassVar[str] = "lowrank"
    needs_cardinality: ClassVar[bool] = True

    @classmethod
    def for_field(cls, sizing: Sizing, name: str, cardinality: int) -> EmbeddingSpec:
        """Rank ``options["rank"]``, or (0) the multiple of 4 nearest to the rank with ``N r + r d = N d /
        compression`` (at least 4, below ``dim``); a dim of 4 leaves nothing to factorise: a full table."""
        dim = sizing.dim
        if dim <= DIM_MULTIPLE:
            return Full(dim)
        rank = int(sizing.options.get("rank", 0))
        if rank <= 0:
            fit = cardinality * dim / (sizing.compression * (cardinality + dim))
            rank = int(round(fit / DIM_MULTIPLE)) * DIM_MULTIPLE
        rank = min(max(DIM_MULTIPLE, rank), dim - DIM_MULTIPLE)
        return cls(dim=dim, rank=rank)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        rank = options.get("rank", 0)
        if rank < 0 or rank % DIM_MULTIPLE or (dim is not None and rank and rank >= dim):
            below = f" and below dim={dim}" if dim is not None else ""
            raise ConfigError(f"{key}.rank={rank!r} must be 0 (sized by compression) or a multiple of "
                              f"{DIM_MULTIPLE}{below}")

    def __post_init__(self) -> None:
        _check_int("LowRank", "dim", self.dim, multiple=DIM_MULTIPLE)
        _check_int("LowRank", "rank", self.rank, multiple=DIM_MULTIPLE, hint=" (the factor table's dim)")
        if self.rank >= self.dim:
            raise SpecError(f"LowRank.rank={self.rank} must be < dim={self.dim}: a rank >= dim factorisation "
                            f"spans the same tables as Full(dim={self.dim}) with more parameters; use type 'full'")
        _check_int("LowRank", "min_rows", self.min_rows, low=0)

    @property
    def output_dim(self) -> int:
        return self.dim

    def factorised(self, cardinality: Optional[int]) -> bool:
        """Whether a feature of ``cardinality`` ids gets the factorisation (``>= min_rows``)."""
        return int(cardinality or 0) >= self.min_rows

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        width = self.rank if self.factorised(cardinality) else self.dim
        return [TableDef(owner, int(cardinality), width)]  # type: ignore[arg-type]

    def dense_params(self, cardinality: Optional[int]) -> int:
        """The ``rank x dim`` projection (none below ``min_rows``)."""
        return self.rank * self.dim if self.factorised(cardinality) else 0


@dataclass(frozen=True)
class TensorTrain(EmbeddingSpec):
    """A tensor-train table (TT-Rec, Yin et al., MLSys 2021): row ``x`` of the virtual
    ``cardinality x dim`` table is the product of three small cores, never stored whole.

    ``x`` is written in the mixed radix ``factors = (n1, n2, n3)`` (``n1 * n2 * n3 >= cardinality``):
    ``x = (i1 * n2 + i2) * n3 + i3``; the dim as ``dim_factors = (d1, d2, d3)`` (product ``dim``). With
    ``ranks = (r1, r2)`` the cores are ``G1 (n1, d1 r1)``, ``G2 (n2, r1 d2 r2)`` and ``G3 (n3, r2 d3)``,
    and row ``x``, viewed as ``(d1, d2, d3)``, is ``sum_{a, b} G1[i1][d1, a] G2[i2][a, d2, b] G3[i3][b, d3]``.
    Parameters: ``n1 d1 r1 + n2 r1 d2 r2 + n3 r2 d3``. Both factorisations default to the most
    balanced one (``n_k`` about ``cardinality ** (1/3)``; ``d_k`` the divisors of ``dim`` closest to
    its cube root, largest first).

    The cores are dense parameters of the feature's module, not TorchRec tables: TorchRec's collections
    pool rows before anything can multiply them, and a bag's sum of products is not a product of sums.

    ``oov_id``: the feature's OOV id (``metadata.json``'s ``oov_ids``) reads a ``dim``-float row of its
    own (one more dense parameter row) instead of its product of cores: an id that stands for every
    unseen or rare value is frequent, and through the cores its gradient would move the rows of every
    id that shares a core slice with it. ``None``: every id is a product of cores.

    Example:
        >>> tt = TensorTrain(dim=16, ranks=(8, 8))
        >>> tt.resolved_factors(1000), tt.resolved_dim_factors()
        ((10, 10, 10), (4, 2, 2))
        >>> tt.dense_params(1000)   # 10*4*8 + 10*8*2*8 + 10*8*2
        1760
    """

    dim: int
    ranks: Tuple[int, int] = (16, 16)
    factors: Optional[Tuple[int, int, int]] = None
    dim_factors: Optional[Tuple[int, int, int]] = None
    oov_id: Optional[int] = None
    kind: ClassVar[str] = "tt"
    needs_cardinality: ClassVar[bool] = True

    @classmethod
    def for_field(cls, sizing: Sizing, name: str, cardinality: int) -> EmbeddingSpec:
        """Ranks ``(r, r)`` with ``r = options["tt_rank"]``, or (0) the largest ``r`` whose cores hold at most
        ``N d / compression`` parameters (at least 1), on the balanced factors."""
        r = int(sizing.options.get("tt_rank", 0))
        if r <= 0:
            probe = cls(dim=sizing.dim, ranks=(1, 1))
            (n1, n2, n3), (d1, d2, d3) = probe.resolved_factors(cardinality), probe.resolved_dim_factors()
            a, b = n1 * d1 + n3 * d3, n2 * d2  # parameters: a r + b r^2
            target = cardinality * sizing.dim / sizing.compression
            r = max(1, int((-a + math.sqrt(a * a + 4 * b * target)) / (2 * b)))
        return cls(dim=sizing.dim, ranks=(r, r))

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        _option_at_least(key, options, "tt_rank", 0)

    @classmethod
    def with_oov_rows(cls, specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int]) -> Dict[str, EmbeddingSpec]:
        """Each field with an OOV id and no ``oov_id`` yet gets it: one more ``dim``-float parameter row."""
        return _give_oov_ids(specs, oov_ids)

    def __post_init__(self) -> None:
        _check_int("TensorTrain", "dim", self.dim, multiple=DIM_MULTIPLE)
        if isinstance(self.ranks, int) and not isinstance(self.ranks, bool):
            object.__setattr__(self, "ranks", (self.ranks, self.ranks))
        for name, want in (("ranks", 2), ("factors", 3), ("dim_factors", 3)):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, (tuple, list)) or len(v) != want or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
                raise SpecError(f"TensorTrain.{name}={v!r} must be {want} ints >= 1")
            object.__setattr__(self, name, tuple(v))
        if self.oov_id is not None:
            _check_int("TensorTrain", "oov_id", self.oov_id, low=0)
        if self.dim_factors is not None and math.prod(self.dim_factors) != self.dim:
            raise SpecError(f"TensorTrain.dim_factors={self.dim_factors} multiply to "
                            f"{math.prod(self.dim_factors)}, not dim={self.dim}; leave it unset for a balanced split")

    def check_feature(self, feature: "FeatureSpec") -> None:
        if self.factors is not None and feature.cardinality is not None and math.prod(self.factors) < feature.cardinality:
            raise SpecError(f"feature {feature.name!r}: TensorTrain.factors={self.factors} address "
                            f"{math.prod(self.factors)} rows, fewer than cardinality={feature.cardinality}; "
                            f"leave factors unset for a balanced split")
        if self.oov_id is not None and feature.cardinality is not None and self.oov_id >= feature.cardinality:
            raise SpecError(f"feature {feature.name!r}: TensorTrain.oov_id={self.oov_id} must be < "
                            f"cardinality={feature.cardinality} (an id of the vocabulary)")

    @property
    def output_dim(self) -> int:
        return self.dim

    def resolved_factors(self, cardinality: int) -> Tuple[int, int, int]:
        """``(n1, n2, n3)``: the given factors, else ``n1 = n2 = ceil(N ** (1/3))`` and the smallest
        ``n3`` that covers ``N`` ids."""
        if self.factors is not None:
            return self.factors
        n = _isqrt_ceil(cardinality, 3)
        return n, n, max(1, math.ceil(cardinality / (n * n)))

    def resolved_dim_factors(self) -> Tuple[int, int, int]:
        """``(d1, d2, d3)``: the given ones, else the split of ``dim`` with the smallest largest factor."""
        if self.dim_factors is not None:
            return self.dim_factors
        best = (self.dim, 1, 1)
        for a in range(1, self.dim + 1):
            for b in range(1, a + 1):
                if self.dim % (a * b) == 0 and self.dim // (a * b) <= b and max(a, b) < max(best):
                    best = (a, b, self.dim // (a * b))
        return best

    def core_shapes(self, cardinality: int) -> List[Tuple[int, int]]:
        """The three cores' ``(rows, columns)``: ``(n1, d1 r1)``, ``(n2, r1 d2 r2)``, ``(n3, r2 d3)``."""
        (n1, n2, n3), (d1, d2, d3), (r1, r2) = self.resolved_factors(cardinality), self.resolved_dim_factors(), self.ranks
        return [(n1, d1 * r1), (n2, r1 * d2 * r2), (n3, r2 * d3)]

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        """None: the cores are dense parameters (:meth:`dense_params`), not TorchRec tables."""
        return []

    def dense_params(self, cardinality: Optional[int]) -> int:
        """The three cores' parameters (and the OOV id's row)."""
        assert cardinality is not None  # FeatureSpec refuses a tensor-train feature without one
        return sum(rows * cols for rows, cols in self.core_shapes(cardinality)) + (self.dim if self.oov_id is not None else 0)


@dataclass(frozen=True)
class RobeArray:
    """The flat parameter array of a ROBE group: ``size`` floats that every member feature reads.

    It is stored as a ``size / 4 x 4`` table (FBGEMM's fused kernels need rows of a multiple of 4
    floats), so a block starts at any multiple of 4 floats of the array. ``reserved`` more rows follow
    the hashed ones, never hashed to: ``dim / 4`` of them per member feature whose OOV id has an
    embedding of its own (:attr:`Robe.oov_row`).

    Example:
        >>> RobeArray("robe", size=4096).rows
        1024
        >>> RobeArray("robe", size=4096, reserved=4).total_rows
        1028
    """

    name: str
    size: int
    reserved: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "@. "):
            raise SpecError(f"RobeArray.name={self.name!r} must be a non-empty string without '@', '.' or spaces")
        _check_int("RobeArray", "size", self.size, multiple=DIM_MULTIPLE, hint=" (floats in the array)")
        _check_int("RobeArray", "reserved", self.reserved, low=0, hint=" (rows of 4 floats after the array)")

    @property
    def rows(self) -> int:
        """Rows of the hashed array's ``rows x 4`` table (blocks start and wrap within these)."""
        return self.size // DIM_MULTIPLE

    @property
    def total_rows(self) -> int:
        """Hashed rows plus the ``reserved`` rows that hold OOV ids' embeddings (:attr:`Robe.oov_row`)."""
        return self.rows + self.reserved

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "size": self.size}
        if self.reserved:
            out["reserved"] = self.reserved
        return out


@dataclass(frozen=True)
class Robe(EmbeddingSpec):
    """ROBE-Z (Desai et al., "Random Offset Block Embedding (ROBE) for compressed embedding tables in
    deep learning recommendation systems", MLSys 2022): every feature of a group reads one flat
    circular array ``M`` of :class:`RobeArray` ``.size`` floats.

    The feature's virtual ``cardinality x dim`` table, flattened id after id, is cut into blocks of
    ``block`` floats (``Z``); each block starts at a hashed offset of ``M`` and reads ``Z`` consecutive
    floats (wrapping around the end). With ``Z <= dim`` (``Z`` divides ``dim``) block ``j`` of id ``x``
    starts at ``hash(x, seed_j)``; with ``Z > dim`` (``dim`` divides ``Z``) ``Z / dim`` consecutive ids
    share one block, starting at ``hash(x // (Z / dim), seed)``. Offsets are multiples of 4 floats
    (:class:`RobeArray`); seeds come from the group's and the feature's names. Any int64 id is
    accepted, negative ids included; ``cardinality`` may be ``None``.

    ``oov_id`` and ``oov_row``: the feature's OOV id (``metadata.json``'s ``oov_ids``) is not hashed; it
    reads the ``dim / 4`` reserved rows ``oov_row, oov_row + 1, ...`` of the array (after its hashed
    ``rows``), ``dim`` floats no other id reads, so unseen values do not share floats trained for other
    ids. Give both or neither.

    Example:
        >>> Robe(RobeArray("r", size=1024), dim=16, block=8).output_dim
        16
    """

    group: RobeArray
    dim: int
    block: int = 16
    oov_id: Optional[int] = None
    oov_row: Optional[int] = None
    kind: ClassVar[str] = "robe"

    shared_group: ClassVar[bool] = True

    @classmethod
    def for_group(cls, sizing: Sizing) -> Dict[str, EmbeddingSpec]:
        """Every field reads one array named ``sizing.table_name``: large fields add ``N d / compression``
        floats, small ones ``N d``; blocks of ``options["robe_block"]`` floats (0: ``dim``, one block per id)."""
        floats = sum(math.ceil(c * sizing.dim / sizing.compression) if sizing.is_large(f) else c * sizing.dim
                     for f, c in sizing.cardinalities.items())
        size = max(DIM_MULTIPLE, -(-floats // DIM_MULTIPLE) * DIM_MULTIPLE)
        block = int(sizing.options.get("robe_block", 0)) or sizing.dim
        array = RobeArray(sizing.table_name, size=size)
        return {f: cls(array, dim=sizing.dim, block=min(block, size)) for f in sizing.cardinalities}

    @classmethod
    def for_own_dim(cls, sizing: Sizing) -> Dict[str, EmbeddingSpec]:
        """A field with a dim of its own leaves the shared array: the hashing trick at that dim."""
        return Hashed.for_group(dataclasses.replace(sizing, variant="hashed", options={"num_hashes": 1}))

    @classmethod
    def with_oov_rows(cls, specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int]) -> Dict[str, EmbeddingSpec]:
        """Each array without reserved rows gets ``dim / 4`` per member field with an OOV id (in field order);
        the members without one read the same, longer array (its hashed part unchanged)."""
        return _reserve_oov_rows(cls, specs, oov_ids, lambda spec: spec.dim // DIM_MULTIPLE)

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        block = options.get("robe_block", 0)
        if block < 0 or block % DIM_MULTIPLE or (dim is not None and block and dim % block and block % dim):
            raise ConfigError(f"{key}.robe_block={block!r} must be 0 (= dim) or a multiple of {DIM_MULTIPLE} that "
                              f"divides dim or is a multiple of it" + (f" (dim={dim})" if dim is not None else ""))

    def __post_init__(self) -> None:
        if not isinstance(self.group, RobeArray):
            raise SpecError(f"Robe.group={self.group!r} must be a RobeArray(name, size)")
        _check_int("Robe", "dim", self.dim, multiple=DIM_MULTIPLE)
        _check_int("Robe", "block", self.block, multiple=DIM_MULTIPLE, hint=" (the block size Z, in floats)")
        if self.dim % self.block and self.block % self.dim:
            raise SpecError(f"Robe.block={self.block} must divide dim={self.dim} or be a multiple of it "
                            f"(blocks within an id, or ids within a block)")
        if self.block > self.group.size:
            raise SpecError(f"Robe.block={self.block} must be <= the array's size={self.group.size}")
        if (self.oov_id is None) != (self.oov_row is None):
            raise SpecError(f"Robe: give oov_id ({self.oov_id}) and oov_row ({self.oov_row}) together, or neither")
        if self.oov_id is not None:
            _check_int("Robe", "oov_id", self.oov_id, low=0)
            _check_int("Robe", "oov_row", self.oov_row, low=self.group.rows,
                       hint=f" (a reserved row of array {self.group.name!r}, after its {self.group.rows} hashed rows)")
            end = self.oov_row + self.dim // DIM_MULTIPLE  # type: ignore[operator]
            if end > self.group.total_rows:
                raise SpecError(f"Robe.oov_row={self.oov_row} with dim={self.dim} reads rows up to {end - 1}, past array "
                                f"{self.group.name!r}'s {self.group.total_rows} rows (rows={self.group.rows}, "
                                f"reserved={self.group.reserved}); raise its reserved rows")

    @property
    def output_dim(self) -> int:
        return self.dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        # The array starts as the full table it replaces, U(-1/sqrt(N), 1/sqrt(N)); a group read by several
        # features as the root mean square of theirs (init_bounds), as a unified table does.
        bound = None if cardinality is None else cardinality ** -0.5
        return [TableDef(self.group.name, self.group.total_rows, DIM_MULTIPLE, init_bound=bound)]

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["group"] = self.group.to_dict()
        return out


MC_EVICTIONS = ("lfu", "lru", "distance_lfu")
"""Eviction policies of :class:`ManagedCollision`: TorchRec's ``LFU_EvictionPolicy``,
``LRU_EvictionPolicy`` and ``DistanceLFU_EvictionPolicy``."""

_MC_METADATA = {"lfu": 1, "lru": 1, "distance_lfu": 2}
"""int64 per-slot metadata buffers of each policy (counts, last access, or both)."""


@dataclass(frozen=True)
class ManagedCollision(EmbeddingSpec):
    """TorchRec's managed-collision hashing (``torchrec.modules.mc_modules.MCHManagedCollisionModule``):
    a ``zch_size x dim`` table whose rows are given to ids by a stateful remap. In training, every
    ``eviction_interval`` forwards the remap admits the ids it has seen since the last eviction,
    evicting the slots the policy scores lowest (``lfu``: fewest hits; ``lru``: least recently seen;
    ``distance_lfu``: hits divided by the distance in iterations); an id not (yet) admitted reads the
    last row, which TorchRec keeps for misses. In eval mode the remap is frozen. An evicted slot's row
    is not reset: the newly admitted id starts from it (as in TorchRec's
    ``ManagedCollisionEmbeddingBagCollection``). Any int64 id below ``2**63 - 1`` is accepted;
    ``cardinality`` may be ``None``.

    Memory: the table (:meth:`tables`, what ``bytes`` counts), plus the remap's int64 state
    (:meth:`remap_state_bytes`: the sorted admitted ids, their slots and the policy's per-slot
    metadata, saved in checkpoints), plus, in training only, a history of the ids seen since the last
    eviction (int64, ``1.25 x`` the ids of ``eviction_interval`` batches; twice that for ``lru`` and
    ``distance_lfu``).

    Example:
        >>> ManagedCollision(dim=16, zch_size=1000).tables("C1", 100_000)[0].rows
        1000
        >>> ManagedCollision(dim=16, zch_size=1000).remap_state_bytes()  # sorted ids, slots, counts
        32208
    """

    dim: int
    zch_size: int
    eviction: str = "lfu"
    eviction_interval: int = 1
    kind: ClassVar[str] = "managed_collision"

    @classmethod
    def for_field(cls, sizing: Sizing, name: str, cardinality: int) -> EmbeddingSpec:
        """``ceil(cardinality / compression)`` rows (at least 2: one is the miss row); the policy and the
        interval from ``options["mch_eviction"]`` and ``options["mch_eviction_interval"]``."""
        return cls(dim=sizing.dim, zch_size=max(2, math.ceil(cardinality / sizing.compression)),
                   eviction=str(sizing.options.get("mch_eviction", "lfu")),
                   eviction_interval=int(sizing.options.get("mch_eviction_interval", 1)))

    @classmethod
    def check_options(cls, options: Mapping[str, Any], dim: Optional[int], key: str = "embeddings.options") -> None:
        eviction = options.get("mch_eviction", "lfu")
        if eviction not in MC_EVICTIONS:
            raise ConfigError(f"{key}.mch_eviction={eviction!r} is not one of {list(MC_EVICTIONS)}")
        _option_at_least(key, options, "mch_eviction_interval", 1)

    def __post_init__(self) -> None:
        _check_int("ManagedCollision", "dim", self.dim, multiple=DIM_MULTIPLE)
        _check_int("ManagedCollision", "zch_size", self.zch_size, low=2,
                   hint=" (the table's rows; the last one is read by ids not admitted)")
        if self.eviction not in MC_EVICTIONS:
            raise SpecError(f"ManagedCollision.eviction={self.eviction!r} must be one of {MC_EVICTIONS}")
        _check_int("ManagedCollision", "eviction_interval", self.eviction_interval,
                   hint=" (training forwards between evictions)")

    @property
    def output_dim(self) -> int:
        return self.dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        return [TableDef(owner, self.zch_size, self.dim)]

    def remap_state_bytes(self) -> int:
        """Bytes of the remap's saved state (TorchRec's persistent buffers): per slot the admitted id, its
        row and the policy's metadata (8 bytes each), plus 1026 int64 of shard segments and iteration."""
        return 8 * self.zch_size * (2 + _MC_METADATA[self.eviction]) + 8 * 1026


@dataclass(frozen=True)
class FeatureSpec:
    """A categorical feature and how it is embedded.

    Args:
        name: the feature's key in the input ``KeyedJaggedTensor``.
        embedding: the variant spec (:class:`Full`, :class:`Hashed`, :class:`QuotientRemainder`, ...).
        cardinality: number of distinct ids (ids in ``[0, cardinality)``), or ``None`` for an open
            vocabulary (hashed variants only).
        pooling: ``"sum"`` or ``"mean"`` over the ids of one bag. Empty bags give zero vectors.
        shared_with: name of another feature whose tables this one looks up (same ids, same rows),
            e.g. a candidate item sharing the item table. Its embedding spec and cardinality must match.

    Example:
        >>> FeatureSpec("C1", Hashed(dim=16, buckets=1000), cardinality=None).output_dim
        16
    """

    name: str
    embedding: EmbeddingSpec
    cardinality: Optional[int] = None
    pooling: str = "sum"
    shared_with: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in "@. "):
            raise SpecError(f"feature name {self.name!r} must be a non-empty string without '@', '.' or spaces "
                             f"(they are used in table and state-dict names)")
        if not isinstance(self.embedding, EmbeddingSpec):
            raise SpecError(
                f"feature {self.name!r}: embedding={self.embedding!r} must be a spec such as Full(dim=...) "
                f"or Hashed(dim=..., buckets=...)"
            )
        if self.cardinality is not None:
            if isinstance(self.cardinality, bool) or not isinstance(self.cardinality, int) or self.cardinality < 1:
                raise SpecError(f"feature {self.name!r}: cardinality={self.cardinality!r} must be an int >= 1 or None")
        elif self.embedding.needs_cardinality:
            raise SpecError(
                f"feature {self.name!r}: embedding type {self.embedding.kind!r} needs a cardinality "
                f"(ids in [0, cardinality)); set cardinality, or use type 'hashed' for an open vocabulary"
            )
        if self.pooling not in self.allowed_poolings():
            raise SpecError(f"feature {self.name!r}: pooling={self.pooling!r} must be one of {self.allowed_poolings()}")
        if self.shared_with == self.name:
            raise SpecError(f"feature {self.name!r}: shared_with names the feature itself; leave it unset")
        check = getattr(self.embedding, "check_feature", None)
        if check is not None:
            check(self)
        if isinstance(self.embedding, Unified) and self.embedding.salts is None:
            object.__setattr__(self, "embedding", self.embedding.with_salts(self.table_owner))

    @staticmethod
    def allowed_poolings() -> Tuple[str, ...]:
        return POOLINGS

    @property
    def output_dim(self) -> int:
        """Columns of this feature's output, known before any forward."""
        return self.embedding.output_dim

    @property
    def table_owner(self) -> str:
        """Name of the feature whose tables this feature looks up."""
        return self.shared_with or self.name

    def tables(self) -> List[TableDef]:
        """The physical tables this feature reads (its owner's, for a sharing feature)."""
        return self.embedding.tables(self.table_owner, self.cardinality)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "cardinality": self.cardinality, "pooling": self.pooling}
        if self.shared_with is not None:
            out["shared_with"] = self.shared_with
        out["embedding"] = self.embedding.to_dict()
        return out

def validate_feature_set(specs: Sequence[FeatureSpec]) -> None:
    """Checks that need all features at once: unique names and consistent table sharing."""
    by_name: Dict[str, FeatureSpec] = {}
    for s in specs:
        if not isinstance(s, FeatureSpec):
            raise SpecError(f"expected FeatureSpec objects, got {s!r}")
        if s.name in by_name:
            raise SpecError(f"feature {s.name!r} appears twice; feature names must be unique")
        by_name[s.name] = s
    groups: Dict[str, Tuple[str, Any]] = {}
    for s in specs:
        if isinstance(s.embedding, (Unified, Robe)):
            g = s.embedding.group
            what = "unified table" if isinstance(g, UnifiedTable) else "ROBE array"
            if g.name in by_name:
                raise SpecError(f"feature {s.name!r}: {what} name {g.name!r} is also a feature name; "
                                 f"rename the {what.split()[-1]}")
            seen = groups.setdefault(g.name, (s.name, g))
            if seen[1] != g:
                raise SpecError(f"feature {s.name!r}: {what} {g.name!r} is {g}, but feature {seen[0]!r} "
                                 f"declares it as {seen[1]}; one table needs one definition")
    for s in specs:
        if s.shared_with is None:
            continue
        owner = by_name.get(s.shared_with)
        if owner is None:
            raise SpecError(f"feature {s.name!r}: shared_with={s.shared_with!r} is not a feature of this layer; "
                             f"known: {sorted(by_name)}")
        if owner.shared_with is not None:
            raise SpecError(f"feature {s.name!r}: shared_with={s.shared_with!r} itself shares "
                             f"{owner.shared_with!r}; point shared_with at {owner.shared_with!r} directly")
        if owner.embedding != s.embedding or owner.cardinality != s.cardinality:
            raise SpecError(
                f"feature {s.name!r}: shared_with={s.shared_with!r} needs the same embedding and cardinality; "
                f"got {s.embedding} / {s.cardinality} vs {owner.embedding} / {owner.cardinality}"
            )


def init_bounds(specs: Sequence[FeatureSpec]) -> Dict[str, float]:
    """The default uniform bound of every table the features read, ``{table name: bound}``.

    A table read by one feature (full, hashed, QR, multi-hash, mixed-dimension: each variant's own
    tables) keeps its :attr:`TableDef.bound` (TorchRec's default ``1/sqrt(rows)`` unless the variant sets one). A table shared by several features (a unified
    table) starts as the per-field full tables it replaces would have: the root mean square of their
    bounds, ``sqrt(mean_f 1/cardinality_f)`` (a feature without a cardinality counts as one of the
    table's rows). So the start does not depend on how many features share the table: ``1/sqrt(rows)``
    of one large shared table would be orders of magnitude smaller, and measured on the Criteo-like
    benchmark it left the unified embeddings contributing nothing (docs/embeddings.md, "Initialisation").
    ``embeddings.init_scale`` overrides every bound.

    Example:
        >>> from recsys_emb.specs import Unified, UnifiedTable
        >>> g = UnifiedTable("u", rows=10_000, chunk_dim=8)
        >>> b = init_bounds([FeatureSpec("a", Unified(g), cardinality=100),
        ...                  FeatureSpec("b", Unified(g), cardinality=10_000),
        ...                  FeatureSpec("c", Full(8), cardinality=400)])
        >>> round(b["u"], 4), b["c"]    # sqrt((1/100 + 1/10000) / 2); 1/sqrt(400)
        (0.0711, 0.05)
    """
    readers: Dict[str, List[FeatureSpec]] = {}
    tables: Dict[str, TableDef] = {}
    for f in specs:
        if f.shared_with is not None:  # reads its owner's tables, with the owner's ids
            continue
        for t in f.tables():
            readers.setdefault(t.name, []).append(f)
            tables[t.name] = t
    out: Dict[str, float] = {}
    for name, fs in readers.items():
        rows = tables[name].rows
        out[name] = tables[name].bound if len(fs) == 1 else \
            math.sqrt(sum(1.0 / (f.cardinality or rows) for f in fs) / len(fs))
    return out


def _reserve_oov_rows(kind: Any, specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int],
                      rows_of: Callable[[Any], int]) -> Dict[str, EmbeddingSpec]:
    """The shared-table form of ``with_oov_rows`` (:class:`Unified`, :class:`Robe`): each shared table of
    ``kind`` without reserved rows gets ``rows_of(spec)`` rows after its hashed rows per member field with an
    OOV id (in field order); every member, with an OOV id or not, reads the same, longer table."""
    out = dict(specs)
    shared: Mapping[str, Any] = specs  # members of kind: a group, an oov_id
    members: Dict[str, List[Tuple[str, Any]]] = {}  # table name -> its fields with an OOV id
    for f, spec in shared.items():
        if f in oov_ids and isinstance(spec, kind) and spec.oov_id is None and spec.group.reserved == 0:
            members.setdefault(spec.group.name, []).append((f, spec))
    for fields in members.values():
        old = fields[0][1].group
        if any(spec.group != old for _, spec in fields):
            continue  # one name, two tables: validate_feature_set reports it
        group = dataclasses.replace(old, reserved=sum(rows_of(spec) for _, spec in fields))
        for f, spec in shared.items():
            if isinstance(spec, kind) and spec.group == old:
                out[f] = dataclasses.replace(spec, group=group)
        row = group.rows
        for f, spec in fields:
            out[f] = dataclasses.replace(spec, group=group, oov_id=oov_ids[f], oov_row=row)
            row += rows_of(spec)
    return out


def _give_oov_ids(specs: Mapping[str, EmbeddingSpec], oov_ids: Mapping[str, int]) -> Dict[str, EmbeddingSpec]:
    """The per-field form of ``with_oov_rows`` (:class:`Hashed`, :class:`TensorTrain`): each field with an OOV
    id whose spec has ``oov_id=None`` gets that id; the spec gives it its row."""
    return {f: dataclasses.replace(s, oov_id=oov_ids[f])  # type: ignore[type-var]
            if f in oov_ids and getattr(s, "oov_id", 0) is None else s for f, s in specs.items()}
