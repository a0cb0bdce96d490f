"""The registry of embedding families: one registration makes a family known to spec I/O (``type:`` in
dicts and YAML), to the layer builder, to run configs' presets (``embeddings.variant``) and to the search
space (``space.variants``).

A family is a spec class (an :class:`~recsys_emb.specs.EmbeddingSpec` subclass with a ``kind``) that
sizes itself for a group of fields (:meth:`~recsys_emb.specs.EmbeddingSpec.for_group`, usually through
:meth:`~recsys_emb.specs.EmbeddingSpec.for_field`), plus what :func:`register_family` is told: the module
that implements it (an :class:`~recsys_emb.embeddings.base.EmbeddingVariant` class or factory), the
variant names presets and the search choose it by, and its options (the ``embeddings.options:`` keys,
with their defaults). The lists of variant names (:func:`variant_names`), of families that follow
``compression`` (:func:`compressing_variants`) and of options (:func:`option_defaults`) are read from it.

Example (a family that is the hashing trick with a fixed share of rows, registered and removed again):
    >>> from dataclasses import dataclass
    >>> from recsys_emb.specs import Hashed
    >>> @register_family(builder="recsys_emb.embeddings.hashed:HashedEmbedding", variants={"tenth": {}})
    ... @dataclass(frozen=True)
    ... class Tenth(Hashed):
    ...     kind = "tenth"
    ...     @classmethod
    ...     def for_field(cls, sizing, name, cardinality):
    ...         return cls(dim=sizing.dim, buckets=max(1, cardinality // 10))
    >>> "tenth" in variant_names(), spec_class("tenth") is Tenth
    (True, True)
    >>> Tenth.for_group(Sizing("tenth", dim=8, cardinalities={"a": 5, "b": 1000}, min_rows=100))
    {'a': Full(dim=8), 'b': Tenth(dim=8, buckets=100, num_hashes=1, combiner='sum', oov_id=None)}
    >>> unregister_family(Tenth)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

from recsys_emb.errors import ConfigError, SpecError
from recsys_emb.specs import (EmbeddingSpec, Full, Hashed, LowRank, ManagedCollision, MixedDimension, QuotientRemainder,
                              Robe, Sizing, TensorTrain, Unified)

__all__ = [
    "Family",
    "Sizing",
    "register_family",
    "unregister_family",
    "family_of_spec",
    "family_of_variant",
    "spec_class",
    "kinds",
    "variant_names",
    "compressing_variants",
    "option_defaults",
    "family_options",
    "check_options",
]

Builder = Union[str, Callable[..., Any]]
"""``builder(feature, validate_ids=...) -> EmbeddingVariant``, or ``"module:attribute"`` naming one
(imported on first build, so the registry needs no torch)."""


@dataclass(frozen=True)
class Family:
    """One registered family (see :func:`register_family`).

    Attributes:
        spec: the spec class.
        builder: the module that implements it, or ``None`` (spec I/O only: it cannot be built).
        variants: ``{variant name: fixed options}``: the names presets and the search choose it by, each
            with the options it fixes (``multi_hash`` and ``hashed`` are one family, ``hashed`` fixing
            ``num_hashes: 1``). Empty: the family is not offered to presets and the search.
        options: ``{option name: default}``: the ``embeddings.options:`` keys it reads.
    """

    spec: Type[EmbeddingSpec]
    builder: Optional[Builder] = None
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.spec.kind

    def build(self, feature: Any, validate_ids: bool = True) -> Any:
        """The family's module for one :class:`~recsys_emb.specs.FeatureSpec`."""
        builder = self.builder
        if builder is None:
            raise SpecError(f"feature {feature.name!r}: no module for {self.spec.__name__}; register one with "
                            f"recsys_emb.families.register_family(spec, builder=...)")
        if isinstance(builder, str):
            module, _, attr = builder.partition(":")
            builder = getattr(importlib.import_module(module), attr)
        return builder(feature, validate_ids=validate_ids)

    def variant_options(self, variant: str, given: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The options ``variant`` sizes with: the family's defaults, then ``given`` (only this family's
        names), then what the variant fixes."""
        out = dict(self.options)
        out.update({k: v for k, v in (given or {}).items() if k in self.options})
        out.update(self.variants.get(variant, {}))
        return out


_FAMILIES: Dict[Type[EmbeddingSpec], Family] = {}
"""The registry: every family by its spec class (a subclass that inherits its parent's ``kind`` has a
builder here but takes no kind, no variant names)."""
_BY_KIND: Dict[str, Type[EmbeddingSpec]] = {}
_BY_VARIANT: Dict[str, Type[EmbeddingSpec]] = {}
_BUILT_IN: Tuple[Type[EmbeddingSpec], ...] = ()

S = TypeVar("S", bound=Type[EmbeddingSpec])


def register_family(spec: Optional[S] = None, *, builder: Optional[Builder] = None,
                    variants: Optional[Mapping[str, Mapping[str, Any]]] = None,
                    options: Optional[Mapping[str, Any]] = None) -> Any:
    """Register a family: spec I/O, building, presets and the search space all read it from here.

    Use it as a call (``register_family(MySpec, builder=MyModule)``) or as a class decorator
    (``@register_family(builder=..., variants=...)``); returns the spec class.

    Args:
        spec: the spec class: a frozen dataclass subclassing :class:`~recsys_emb.specs.EmbeddingSpec`
            with its own ``kind`` (dicts with ``type: <kind>`` build it), ``output_dim``, ``tables``,
            ``dense_params`` (bytes follow from them) and, to be offered to presets and the search,
            ``for_field`` or ``for_group`` (its sizing for a group under a compression target). A
            subclass that inherits its parent's ``kind`` gets only a builder (the parent keeps the kind).
        builder: the module that implements it: a class or factory ``(feature, validate_ids=...)`` ->
            :class:`~recsys_emb.embeddings.base.EmbeddingVariant`, or ``"module:attribute"``.
        variants: ``{name: fixed options}``; default ``{kind: {}}`` when the spec overrides
            ``for_field`` or ``for_group``, else none.
        options: ``{name: default}``: the ``embeddings.options:`` keys the family reads (names are shared
            by all families: one name, one family).

    Raises:
        SpecError: a kind, a variant name or an option name another family holds; a spec class that
            is no ``EmbeddingSpec`` or has no ``kind``.
    """
    if spec is None:
        return lambda cls: register_family(cls, builder=builder, variants=variants, options=options)
    if not (isinstance(spec, type) and issubclass(spec, EmbeddingSpec)) or not spec.kind:
        raise SpecError(f"register_family: {spec!r} must be an EmbeddingSpec subclass with a 'kind'")
    own_kind = "kind" in vars(spec)
    if variants is None:
        sizes = any(name in vars(c) for c in spec.__mro__ if c is not EmbeddingSpec for name in ("for_field", "for_group"))
        variants = {spec.kind: {}} if own_kind and sizes else {}
    if not own_kind and variants:
        raise SpecError(f"register_family: {spec.__name__} inherits kind {spec.kind!r}; give it a kind of its own "
                        f"to offer variants {sorted(variants)}")
    fam = Family(spec, builder, {str(k): dict(v) for k, v in variants.items()}, dict(options or {}))
    old = _FAMILIES.get(spec)
    for name in fam.variants:
        holder = _BY_VARIANT.get(name)
        if holder is not None and holder is not spec:
            raise SpecError(f"register_family: variant name {name!r} is {holder.__name__}'s; choose another")
    for name in fam.options:
        holder = next((f.spec for f in _FAMILIES.values() if name in f.options and f.spec is not spec), None)
        if holder is not None:
            raise SpecError(f"register_family: option {name!r} is {holder.__name__}'s; choose another name")
    if own_kind:
        holder = _BY_KIND.get(spec.kind)
        if holder is not None and holder is not spec and holder in _BUILT_IN:
            raise SpecError(f"register_family: kind {spec.kind!r} is the built-in {holder.__name__}'s; choose another")
        _BY_KIND[spec.kind] = spec
    if old is not None:
        for name in old.variants:
            _BY_VARIANT.pop(name, None)
    _FAMILIES[spec] = fam
    for name in fam.variants:
        _BY_VARIANT[name] = spec
    return spec


def unregister_family(spec: Type[EmbeddingSpec]) -> None:
    """Undo :func:`register_family` (tests, plugins that unload); the built-in families stay."""
    if spec in _BUILT_IN:
        return
    fam = _FAMILIES.pop(spec, None)
    if fam is None:
        return
    if _BY_KIND.get(spec.kind) is spec:
        del _BY_KIND[spec.kind]
    for name in fam.variants:
        if _BY_VARIANT.get(name) is spec:
            del _BY_VARIANT[name]


def family_of_spec(spec: Type[EmbeddingSpec]) -> Family:
    """The family registered for exactly this spec class; :class:`~recsys_emb.errors.SpecError` if none."""
    try:
        return _FAMILIES[spec]
    except KeyError:
        raise SpecError(f"no family is registered for {spec.__name__}; register it with "
                        f"recsys_emb.families.register_family({spec.__name__}, builder=...)") from None


def spec_class(kind: str) -> Optional[Type[EmbeddingSpec]]:
    """The spec class of ``type: <kind>``, or None."""
    return _BY_KIND.get(kind)


def kinds() -> List[str]:
    """Every registered ``kind``, sorted."""
    return sorted(_BY_KIND)


def variant_names() -> Tuple[str, ...]:
    """Every variant name presets and the search accept, in registration order
    (``full, hashed, multi_hash, qr, mixed, unified``, then families registered later)."""
    return tuple(_BY_VARIANT)


def family_of_variant(variant: str, key: str = "embeddings.variant") -> Family:
    """The family a variant name stands for; :class:`~recsys_emb.errors.ConfigError` naming ``key`` if none."""
    spec = _BY_VARIANT.get(variant)
    if spec is None:
        raise ConfigError(f"{key}={variant!r} is not allowed; choose one of {list(variant_names())}")
    return _FAMILIES[spec]


def compressing_variants() -> Tuple[str, ...]:
    """The variant names whose families size by ``compression`` (the others ignore it)."""
    return tuple(v for v, spec in _BY_VARIANT.items() if spec.compresses)


def option_defaults() -> Dict[str, Any]:
    """``{option name: default}`` over every family: the keys ``embeddings.options:`` accepts."""
    out: Dict[str, Any] = {}
    for fam in _FAMILIES.values():
        out.update(fam.options)
    return out


def family_options(variant: str, given: Mapping[str, Any]) -> Dict[str, Any]:
    """The options of ``variant``'s family: its defaults updated by ``given`` (what a run config's
    fingerprint records: the family's knobs, not what the variant fixes)."""
    fam = family_of_variant(variant)
    return {k: given.get(k, v) for k, v in fam.options.items()}


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or default is None:
        return default is None or isinstance(value, bool)
    if isinstance(default, (int, float)):
        return not isinstance(value, bool) and isinstance(value, (int, float) if isinstance(default, float) else int)
    if isinstance(default, (list, tuple)):  # YAML gives lists
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check_options(options: Mapping[str, Any], variant: str, dim: int, key: str = "embeddings.options") -> None:
    """Validate an ``options:`` mapping: every name is some family's option, of its default's type, and
    every family accepts its own (:meth:`~recsys_emb.specs.EmbeddingSpec.check_options`, told whether
    ``variant`` is one of its own at ``dim``). Raises :class:`~recsys_emb.errors.ConfigError` naming
    ``key.<name>``, the value and what is allowed."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"{key}={options!r} must be a mapping of option names to values, e.g. {{qr_op: mult}}")
    defaults = option_defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown option(s) {[f'{key}.{u}' for u in unknown]}; the registered families' options: "
                          f"{sorted(defaults)}")
    for name, value in options.items():
        if not _type_ok(value, defaults[name]):
            raise ConfigError(f"{key}.{name}={value!r} has the wrong type; expected a value like its default "
                              f"{defaults[name]!r}")
    chosen = _BY_VARIANT.get(variant)
    for fam in _FAMILIES.values():
        mine = {k: options.get(k, v) for k, v in fam.options.items()}
        if mine:
            fam.spec.check_options(mine, dim if fam.spec is chosen else None, key)


def _register_built_in() -> None:
    global _BUILT_IN
    register_family(Full, builder="recsys_emb.embeddings.full:FullEmbedding", variants={"full": {}})
    register_family(Hashed, builder="recsys_emb.embeddings.hashed:HashedEmbedding",
                    variants={"hashed": {"num_hashes": 1}, "multi_hash": {}}, options={"num_hashes": 2})
    register_family(QuotientRemainder, builder="recsys_emb.embeddings.qr:QuotientRemainderEmbedding",
                    variants={"qr": {}}, options={"qr_op": "concat"})
    register_family(MixedDimension, builder="recsys_emb.embeddings.mixed:MixedDimensionEmbedding",
                    variants={"mixed": {}}, options={"alpha": 0.3, "num_blocks": 1})
    register_family(Unified, builder="recsys_emb.embeddings.unified:UnifiedEmbedding",
                    variants={"unified": {}}, options={"chunks": 1})
    register_family(LowRank, builder="recsys_emb.embeddings.lowrank:LowRankEmbedding",
                    variants={"lowrank": {}}, options={"rank": 0})
    register_family(TensorTrain, builder="recsys_emb.embeddings.tt:TensorTrainEmbedding",
                    variants={"tt": {}}, options={"tt_rank": 0})
    register_family(Robe, builder="recsys_emb.embeddings.robe:RobeEmbedding",
                    variants={"robe": {}}, options={"robe_block": 0})
    register_family(ManagedCollision, builder="recsys_emb.embeddings.managed_collision:ManagedCollisionEmbedding",
                    variants={"mch": {}}, options={"mch_eviction": "lfu", "mch_eviction_interval": 1})
    _BUILT_IN = (Full, Hashed, QuotientRemainder, MixedDimension, Unified, LowRank, TensorTrain, Robe, ManagedCollision)


_register_built_in()
