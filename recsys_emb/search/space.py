"""The search space: fields grouped by ``space.groups``/``space.ungrouped``, a dim per group, and (with
``space.variants``) a variant and its size per group, turned into a trial's ``embeddings.dims`` and
``embeddings.overrides``.

Example (a fixed trial: dim 16 for the group ``g`` of two fields):
    >>> import optuna
    >>> space = SpaceConfig(dims=[8, 16])
    >>> groups = field_groups(space, ["C1", "C2"])
    >>> groups
    {'C1': ['C1'], 'C2': ['C2']}
    >>> trial = optuna.trial.FixedTrial({"dim:C1": 16, "dim:C2": 8})
    >>> trial_choices(trial, space, groups, cards={"C1": 100, "C2": 7}, run_dict={"embeddings": {}})
    {'dims': {'C1': 16, 'C2': 8}, 'overrides': {}}
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

from recsys_emb import families
from recsys_emb.families import family_options
from recsys_emb.errors import ConfigError
from recsys_emb.presets import group_specs
from recsys_emb.specs import DIM_MULTIPLE, MixedDimension
from recsys_emb.search.config import DimRange, SpaceConfig

__all__ = ["MIXED_SEARCH_BLOCKS", "field_groups", "suggest_dim", "trial_choices"]

MIXED_SEARCH_BLOCKS = MixedDimension.search_blocks
"""Frequency blocks per field of a searched ``mixed`` group when the base config is field-level."""



def field_groups(space: SpaceConfig, fields: Sequence[str]) -> Dict[str, List[str]]:
    """``{group: [field, ...]}``: the configured groups, then the fields of no group (``ungrouped: each``: one
    group per field, named after it; ``one``: a group ``rest``; ``fixed``: left out, they keep the base
    config's embedding). Unknown fields and clashing names raise :class:`~recsys_emb.errors.ConfigError`."""
    unknown = sorted({f for fs in space.groups.values() for f in fs} - set(fields))
    if unknown:
        raise ConfigError(f"space.groups names field(s) {unknown} the data does not have; fields: {list(fields)}")
    groups = {g: list(fs) for g, fs in space.groups.items()}
    grouped = {f for fs in groups.values() for f in fs}
    rest = [f for f in fields if f not in grouped]
    if space.ungrouped == "each":
        for f in rest:
            if f in groups:
                raise ConfigError(f"space.groups: group name {f!r} is also an ungrouped field's name; rename it")
            groups[f] = [f]
    elif space.ungrouped == "one" and rest:
        if "rest" in groups:
            raise ConfigError("space.groups: 'rest' is reserved for the ungrouped fields (space.ungrouped: one)")
        groups["rest"] = rest
    return groups


def suggest_dim(trial: Any, space: SpaceConfig, group: str) -> int:
    """The group's dim: ``dim:<group>`` from a list, or ``dim_units:<group>`` (4-wide units) from a range."""
    if isinstance(space.dims, DimRange):
        r = space.dims
        units = trial.suggest_int(f"dim_units:{group}", r.low // DIM_MULTIPLE, r.high // DIM_MULTIPLE, log=r.log)
        return int(units) * DIM_MULTIPLE
    return int(trial.suggest_categorical(f"dim:{group}", sorted(space.dims)))


def _group_embeddings(trial: Any, space: SpaceConfig, group: str, fields: Sequence[str],
                      cards: Mapping[str, int], base: Dict[str, Any]) -> Tuple[Dict[str, int], Dict[str, Dict[str, Any]]]:
    """(dims, overrides) of one group's fields for a trial: the trial picks a dim and (when variants are
    searched) a variant; the variant's family picks its knobs (:meth:`~recsys_emb.specs.EmbeddingSpec.suggest`:
    compression, chunks, alpha, ...) and sizes the group (:func:`recsys_emb.presets.group_specs`), as it
    does for run configs."""
    dim = suggest_dim(trial, space, group)
    if not space.variants:
        return {f: dim for f in fields}, {}
    variant = trial.suggest_categorical(f"variant:{group}", list(space.variants))
    emb = base["embeddings"]
    family = families.family_of_variant(variant, "space.variants[]")
    asked = dim  # a family may widen the dim it sizes with (QR concat); the fields' dims stay the trial's
    dim, options, compression = family.spec.suggest(trial, space, group, variant, dim,
                                                    family_options(variant, emb.get("options") or {}))
    specs = group_specs(variant, dim, {f: cards[f] for f in fields}, compression, int(emb["min_rows"]),
                        options, table_name=f"unified_{group}")
    overrides = {f: spec.to_dict() for f, spec in specs.items()}
    dims = {} if family.spec.shared_group else {f: asked for f in fields}
    return dims, overrides


def trial_choices(trial: Any, space: SpaceConfig, groups: Mapping[str, Sequence[str]], cards: Mapping[str, int],
                  run_dict: Dict[str, Any]) -> Dict[str, Any]:
    """A trial's ``{"dims": {field: dim}, "overrides": {field: embedding dict}}`` over all groups.

    Args:
        trial: an Optuna trial (its suggestions are the choices).
        space: the search space.
        groups: :func:`field_groups`.
        cards: ids per field (the dataset's vocabulary sizes).
        run_dict: the trial's train config as a dict (its ``embeddings`` section gives ``min_rows`` and
            the families' ``options`` when variants are searched).
    """
    dims: Dict[str, int] = {}
    overrides: Dict[str, Dict[str, Any]] = {}
    for g, fields in groups.items():
        d, o = _group_embeddings(trial, space, g, fields, cards, run_dict)
        dims.update(d)
        overrides.update(o)
    return {"dims": dims, "overrides": overrides}
