"""Feature and embedding-variant specs: frozen, validated dataclasses that load from and dump to YAML.

A :class:`FeatureSpec` says what a categorical feature is (name, vocabulary size, pooling); its
``embedding`` field says how it is embedded (one spec dataclass per variant).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import yaml

__all__ = [
    "DIM_MULTIPLE",
    "POOLINGS",
    "TableDef",
    "EmbeddingSpec",
    "Full",
    "Hashed",
    "QuotientRemainder",
    "FeatureSpec",
    "embedding_spec_from_dict",
    "specs_from_dicts",
    "specs_to_dicts",
    "load_specs",
    "dump_specs",
    "validate_feature_set",
]

DIM_MULTIPLE = 4
"""FBGEMM's fused kernels (what TorchRec runs once a table is sharded) need dims divisible by 4."""

POOLINGS = ("sum", "mean")


def _check_int(cls: str, name: str, value: Any, low: int = 1, multiple: int = 1, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{cls}.{name}={value!r} must be an int{hint}")
    if value < low:
        raise ValueError(f"{cls}.{name}={value} must be >= {low}{hint}")
    if value % multiple:
        lower = max(multiple, value - value % multiple)
        raise ValueError(
            f"{cls}.{name}={value} must be a multiple of {multiple} (FBGEMM's fused kernels, used once "
            f"TorchRec shards a table, require it); use {lower} or {lower + multiple}{hint}"
        )


@dataclass(frozen=True)
class TableDef:
    """One physical table: ``rows x dim`` trainable parameters, named after its owning feature."""

    name: str
    rows: int
    dim: int

    @property
    def params(self) -> int:
        return self.rows * self.dim


class EmbeddingSpec:
    """Base of the per-variant specs. Subclasses are frozen dataclasses with a ``kind`` tag.

    A spec alone determines its tables (:meth:`tables`) and its small dense parameters
    (:meth:`dense_params`), so memory is known before anything is built.
    """

    kind: ClassVar[str] = ""
    needs_cardinality: ClassVar[bool] = False

    @property
    def output_dim(self) -> int:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:  # pragma: no cover
        """The physical tables of a feature named ``owner`` with this spec."""
        raise NotImplementedError

    def dense_params(self) -> int:
        """Trainable parameters outside the tables (projections, probe weights), per feature."""
        return 0

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict with a ``type`` key, the inverse of :func:`embedding_spec_from_dict`."""
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

    def __post_init__(self) -> None:
        _check_int("Full", "dim", self.dim, multiple=DIM_MULTIPLE)

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

    Example:
        >>> Hashed(dim=16, buckets=1000, num_hashes=2).output_dim
        16
    """

    dim: int
    buckets: int
    num_hashes: int = 1
    combiner: str = "sum"
    kind: ClassVar[str] = "hashed"

    def __post_init__(self) -> None:
        _check_int("Hashed", "dim", self.dim, multiple=DIM_MULTIPLE)
        _check_int("Hashed", "buckets", self.buckets)
        _check_int("Hashed", "num_hashes", self.num_hashes)
        if self.num_hashes > 16:
            raise ValueError(f"Hashed.num_hashes={self.num_hashes} must be <= 16")
        if self.combiner not in HASH_COMBINERS:
            raise ValueError(f"Hashed.combiner={self.combiner!r} must be one of {HASH_COMBINERS}")

    @property
    def output_dim(self) -> int:
        return self.dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        return [TableDef(owner, self.buckets, self.dim)]

    def dense_params(self) -> int:
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
            raise ValueError(f"QuotientRemainder.op={self.op!r} must be one of {QR_OPS}")
        if self.collisions is not None and self.buckets is not None:
            raise ValueError(
                f"QuotientRemainder: give collisions ({self.collisions}) or buckets ({self.buckets}), not both"
            )
        if self.collisions is not None:
            _check_int("QuotientRemainder", "collisions", self.collisions, low=2)
        if self.buckets is not None:
            _check_int("QuotientRemainder", "buckets", self.buckets)

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


_REGISTRY: Dict[str, Type[EmbeddingSpec]] = {
    cls.kind: cls for cls in (Full, Hashed, QuotientRemainder)
}


def register_embedding_spec(cls: Type[EmbeddingSpec]) -> Type[EmbeddingSpec]:
    """Register a further variant spec under its ``kind`` (used by the variants added later)."""
    _REGISTRY[cls.kind] = cls
    return cls


def embedding_spec_from_dict(d: Mapping[str, Any], feature: str = "?") -> EmbeddingSpec:
    """Build a variant spec from ``{"type": kind, ...fields}``; errors name the feature and the key."""
    if not isinstance(d, Mapping):
        raise ValueError(f"feature {feature!r}: embedding must be a mapping with a 'type' key, got {d!r}")
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in _REGISTRY:
        raise ValueError(f"feature {feature!r}: embedding.type={kind!r} is not one of {sorted(_REGISTRY)}")
    cls = _REGISTRY[kind]
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ValueError(
            f"feature {feature!r}: unknown key(s) {unknown} for embedding type {kind!r}; allowed: {allowed}"
        )
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        return cls(**d)
    except TypeError as e:  # a missing required field
        raise ValueError(f"feature {feature!r}: embedding type {kind!r}: {e}; fields: {allowed}") from None
    except ValueError as e:
        raise ValueError(f"feature {feature!r}: {e}") from None


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
            raise ValueError(f"feature name {self.name!r} must be a non-empty string without '@', '.' or spaces "
                             f"(they are used in table and state-dict names)")
        if not isinstance(self.embedding, EmbeddingSpec):
            raise ValueError(
                f"feature {self.name!r}: embedding={self.embedding!r} must be a spec such as Full(dim=...) "
                f"or Hashed(dim=..., buckets=...)"
            )
        if self.cardinality is not None:
            if isinstance(self.cardinality, bool) or not isinstance(self.cardinality, int) or self.cardinality < 1:
                raise ValueError(f"feature {self.name!r}: cardinality={self.cardinality!r} must be an int >= 1 or None")
        elif self.embedding.needs_cardinality:
            raise ValueError(
                f"feature {self.name!r}: embedding type {self.embedding.kind!r} needs a cardinality "
                f"(ids in [0, cardinality)); set cardinality, or use type 'hashed' for an open vocabulary"
            )
        if self.pooling not in self.allowed_poolings():
            raise ValueError(f"feature {self.name!r}: pooling={self.pooling!r} must be one of {self.allowed_poolings()}")
        if self.shared_with == self.name:
            raise ValueError(f"feature {self.name!r}: shared_with names the feature itself; leave it unset")
        check = getattr(self.embedding, "check_feature", None)
        if check is not None:
            check(self)

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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
        if not isinstance(d, Mapping):
            raise ValueError(f"a feature must be a mapping with keys name, embedding, ...; got {d!r}")
        name = d.get("name", "?")
        allowed = ["name", "embedding", "cardinality", "pooling", "shared_with"]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ValueError(f"feature {name!r}: unknown key(s) {unknown}; allowed: {allowed}")
        if "embedding" not in d:
            raise ValueError(f"feature {name!r}: missing key 'embedding' (e.g. {{type: full, dim: 16}})")
        emb = embedding_spec_from_dict(d["embedding"], feature=str(name))
        return cls(
            name=name,
            embedding=emb,
            cardinality=d.get("cardinality"),
            pooling=d.get("pooling", "sum"),
            shared_with=d.get("shared_with"),
        )


def validate_feature_set(specs: Sequence[FeatureSpec]) -> None:
    """Checks that need all features at once: unique names and consistent table sharing."""
    by_name: Dict[str, FeatureSpec] = {}
    for s in specs:
        if not isinstance(s, FeatureSpec):
            raise ValueError(f"expected FeatureSpec objects, got {s!r}")
        if s.name in by_name:
            raise ValueError(f"feature {s.name!r} appears twice; feature names must be unique")
        by_name[s.name] = s
    for s in specs:
        if s.shared_with is None:
            continue
        owner = by_name.get(s.shared_with)
        if owner is None:
            raise ValueError(f"feature {s.name!r}: shared_with={s.shared_with!r} is not a feature of this layer; "
                             f"known: {sorted(by_name)}")
        if owner.shared_with is not None:
            raise ValueError(f"feature {s.name!r}: shared_with={s.shared_with!r} itself shares "
                             f"{owner.shared_with!r}; point shared_with at {owner.shared_with!r} directly")
        if owner.embedding != s.embedding or owner.cardinality != s.cardinality:
            raise ValueError(
                f"feature {s.name!r}: shared_with={s.shared_with!r} needs the same embedding and cardinality; "
                f"got {s.embedding} / {s.cardinality} vs {owner.embedding} / {owner.cardinality}"
            )


def specs_from_dicts(items: Sequence[Mapping[str, Any]]) -> List[FeatureSpec]:
    """Features from a list of dicts (as in YAML); validated one by one and as a set."""
    specs = [FeatureSpec.from_dict(d) for d in items]
    validate_feature_set(specs)
    return specs


def specs_to_dicts(specs: Sequence[FeatureSpec]) -> List[Dict[str, Any]]:
    return [s.to_dict() for s in specs]


def load_specs(path: Union[str, Path]) -> List[FeatureSpec]:
    """Read features from a YAML file: either a list, or a mapping with a ``features`` list."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, Mapping):
        if "features" not in data:
            raise ValueError(f"{path}: expected a list of features or a mapping with key 'features'")
        data = data["features"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: features must be a list, got {type(data).__name__}")
    return specs_from_dicts(data)


def dump_specs(specs: Sequence[FeatureSpec], path: Union[str, Path]) -> None:
    """Write features as YAML (``{features: [...]}``), loadable by :func:`load_specs`."""
    Path(path).write_text(yaml.safe_dump({"features": specs_to_dicts(specs)}, sort_keys=False))
