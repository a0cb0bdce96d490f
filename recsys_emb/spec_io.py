"""Feature specs to and from plain dicts and YAML; the spec class of a ``type`` comes from the family
registry (:mod:`recsys_emb.families`).

The dict form is what configs and saved runs hold, e.g.
``{name: C3, cardinality: 10131227, embedding: {type: qr, dim: 16, collisions: 4, op: mult}}``.
Invalid entries fail before anything is built, naming the feature, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, Union

import yaml

from recsys_emb import families
from recsys_emb.errors import SpecError, UnknownVariantError
from recsys_emb.specs import EmbeddingSpec, FeatureSpec, Robe, RobeArray, Unified, UnifiedTable, validate_feature_set

__all__ = [
    "register_embedding_spec",
    "unregister_embedding_spec",
    "embedding_spec_from_dict",
    "feature_from_dict",
    "specs_from_dicts",
    "specs_to_dicts",
    "load_specs",
    "dump_specs",
]

def register_embedding_spec(cls: Type[EmbeddingSpec]) -> Type[EmbeddingSpec]:
    """Register a spec class under its ``kind`` for dicts and YAML only (no module, no preset variant):
    :func:`recsys_emb.families.register_family` without a builder. A spec already registered keeps its
    family."""
    try:
        families.family_of_spec(cls)
    except SpecError:
        families.register_family(cls, variants={})
    return cls


def unregister_embedding_spec(cls: Type[EmbeddingSpec]) -> None:
    """Remove a spec class registered by :func:`register_embedding_spec` (the built-in kinds stay)."""
    families.unregister_family(cls)


def embedding_spec_from_dict(d: Mapping[str, Any], feature: str = "?",
                             unified_tables: Optional[Mapping[str, UnifiedTable]] = None) -> EmbeddingSpec:
    """Build a variant spec from ``{"type": kind, ...fields}``; errors name the feature and the key.

    A unified feature's ``group`` is a mapping ``{name, rows, chunk_dim}`` or the name of an entry
    of ``unified_tables`` (the ``unified_tables:`` section of a YAML file)."""
    if not isinstance(d, Mapping):
        raise SpecError(f"feature {feature!r}: embedding must be a mapping with a 'type' key, got {d!r}")
    d = dict(d)
    kind = d.pop("type", None)
    cls = families.spec_class(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownVariantError(f"feature {feature!r}: embedding.type={kind!r} is not one of {families.kinds()}")
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise SpecError(
            f"feature {feature!r}: unknown key(s) {unknown} for embedding type {kind!r}; allowed: {allowed}"
        )
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    if issubclass(cls, Unified) and "group" in d:
        g = d["group"]
        if isinstance(g, str):
            if not unified_tables or g not in unified_tables:
                raise SpecError(f"feature {feature!r}: embedding.group={g!r} is not a defined unified table; "
                                 f"defined: {sorted(unified_tables or {})}")
            d["group"] = unified_tables[g]
        elif isinstance(g, Mapping):
            try:
                d["group"] = UnifiedTable(**g)
            except (TypeError, ValueError) as e:
                raise SpecError(f"feature {feature!r}: embedding.group: {e}") from None
    if cls is Robe and isinstance(d.get("group"), Mapping):
        try:
            d["group"] = RobeArray(**d["group"])
        except (TypeError, ValueError) as e:
            raise SpecError(f"feature {feature!r}: embedding.group (a ROBE array {{name, size}}): {e}") from None
    try:
        return cls(**d)
    except TypeError as e:  # a missing required field
        raise SpecError(f"feature {feature!r}: embedding type {kind!r}: {e}; fields: {allowed}") from None
    except ValueError as e:
        raise SpecError(f"feature {feature!r}: {e}") from None


def feature_from_dict(d: Mapping[str, Any], unified_tables: Optional[Mapping[str, UnifiedTable]] = None) -> FeatureSpec:
    """A :class:`~recsys_emb.specs.FeatureSpec` from ``{name, embedding, cardinality, pooling, shared_with}``
    (the inverse of ``FeatureSpec.to_dict``); errors name the feature and the key.

    Example:
        >>> feature_from_dict({"name": "C1", "cardinality": 10, "embedding": {"type": "full", "dim": 8}}).output_dim
        8
    """
    if not isinstance(d, Mapping):
        raise SpecError(f"a feature must be a mapping with keys name, embedding, ...; got {d!r}")
    name = d.get("name", "?")
    allowed = ["name", "embedding", "cardinality", "pooling", "shared_with"]
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise SpecError(f"feature {name!r}: unknown key(s) {unknown}; allowed: {allowed}")
    if "embedding" not in d:
        raise SpecError(f"feature {name!r}: missing key 'embedding' (e.g. {{type: full, dim: 16}})")
    emb = embedding_spec_from_dict(d["embedding"], feature=str(name), unified_tables=unified_tables)
    return FeatureSpec(name=name, embedding=emb, cardinality=d.get("cardinality"), pooling=d.get("pooling", "sum"),
                       shared_with=d.get("shared_with"))


def specs_from_dicts(items: Sequence[Mapping[str, Any]],
                     unified_tables: Optional[Sequence[Mapping[str, Any]]] = None) -> List[FeatureSpec]:
    """Features from a list of dicts (as in YAML); validated one by one and as a set.

    ``unified_tables`` (a list of ``{name, rows, chunk_dim}``) defines tables that unified
    features name in ``embedding.group``."""
    tables: Dict[str, UnifiedTable] = {}
    for t in unified_tables or []:
        try:
            table = UnifiedTable(**t)
        except (TypeError, ValueError) as e:
            raise SpecError(f"unified_tables entry {dict(t)!r}: {e}") from None
        tables[table.name] = table
    specs = [feature_from_dict(d, unified_tables=tables) for d in items]
    validate_feature_set(specs)
    return specs


def specs_to_dicts(specs: Sequence[FeatureSpec]) -> List[Dict[str, Any]]:
    return [s.to_dict() for s in specs]


def load_specs(path: Union[str, Path]) -> List[FeatureSpec]:
    """Read features from a YAML file: either a list, or a mapping with a ``features`` list."""
    data = yaml.safe_load(Path(path).read_text())
    tables = None
    if isinstance(data, Mapping):
        if "features" not in data:
            raise SpecError(f"{path}: expected a list of features or a mapping with key 'features'")
        tables = data.get("unified_tables")
        data = data["features"]
    if not isinstance(data, list):
        raise SpecError(f"{path}: features must be a list, got {type(data).__name__}")
    return specs_from_dicts(data, unified_tables=tables)


def dump_specs(specs: Sequence[FeatureSpec], path: Union[str, Path]) -> None:
    """Write features as YAML (``{features: [...]}``), loadable by :func:`load_specs`."""
    Path(path).write_text(yaml.safe_dump({"features": specs_to_dicts(specs)}, sort_keys=False))
