"""The search space: fields grouped by ``space.groups``/``space.ungrouped``, a dim per group, and (with
``space.variants``) a variant and its size per group, turned into a trial's ``embeddings.dims`` and
``embeddings.overrides``.

Example (a fixed trial: dim 16 for the group ``g`` of two fields):
    >>> import optuna
    >>> space = SpaceConfig(dims=[8, 16], variants=[])
    >>> groups = field_groups(space, ["C1", "C2"])
    >>> groups
    {'C1': ['C1'], 'C2': ['C2']}
    >>> trial = optuna.trial.FixedTrial({"dim:C1": 16, "dim:C2": 8})
    >>> trial_choices(trial, space, groups, cards={"C1": 100, "C2": 7}, run_dict={"embeddings": {}})
    {'dims': {'C1': 16, 'C2': 8}, 'overrides': {}}
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from recsys_emb import families
from recsys_emb.families import family_options
from recsys_emb.errors import ConfigError
from recsys_emb.presets import group_specs
from recsys_emb.specs import DIM_MULTIPLE, MixedDimension
from recsys_emb.search.config import DimRange, SpaceConfig

__all__ = ["MIXED_SEARCH_BLOCKS", "FILL_TARGET", "dim_levels", "field_groups", "suggest_dim", "trial_choices",
           "fill_budget", "fit_compression", "uniform_choices"]

FILL_TARGET = 0.99
"""A trial scaled by :func:`fill_budget` stops once it uses this share of the budget (or more, never above it)."""
_MAX_SCALE = 1e9  # a compression scale at which every compressing table has one row per field
_FILL_STEPS = 16  # bytes evaluations of the compression solve, at most

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


def dim_levels(space: SpaceConfig) -> List[int]:
    """The dims a group can have, ascending: ``space.dims`` sorted, or every multiple of 4 of the range.

    Example:
        >>> dim_levels(SpaceConfig(dims=[16, 4, 8])), dim_levels(SpaceConfig(dims=DimRange(8, 20)))
        ([4, 8, 16], [8, 12, 16, 20])
    """
    if isinstance(space.dims, DimRange):
        return list(range(space.dims.low, space.dims.high + 1, DIM_MULTIPLE))
    return sorted(set(space.dims))


def _shifted(dim: int, levels: Sequence[int], shift: int) -> int:
    """``dim`` moved ``shift`` steps along ``levels`` (clamped to its ends)."""
    if not shift:
        return dim
    i = levels.index(dim) if dim in levels else min(range(len(levels)), key=lambda j: abs(levels[j] - dim))
    return levels[min(len(levels) - 1, max(0, i + shift))]


def _group_embeddings(trial: Any, space: SpaceConfig, group: str, fields: Sequence[str],
                      cards: Mapping[str, int], base: Dict[str, Any], dim_shift: int = 0,
                      compression_scale: float = 1.0, group_shift: int = 0) -> Tuple[Dict[str, int], Dict[str, Dict[str, Any]]]:
    """(dims, overrides) of one group's fields for a trial: the trial picks a dim and (when variants are
    searched) a variant; the variant's family picks its knobs (:meth:`~recsys_emb.specs.EmbeddingSpec.suggest`:
    compression, chunks, alpha, ...) and sizes the group (:func:`recsys_emb.presets.group_specs`), as it
    does for run configs. ``dim_shift``, then ``group_shift``, move the dim along :func:`dim_levels` (each
    clamped to its ends); a compressing family's
    compression is multiplied by ``compression_scale`` (at least 1: all rows)."""
    levels = dim_levels(space)
    dim = _shifted(_shifted(suggest_dim(trial, space, group), levels, dim_shift), levels, group_shift)
    if not space.variants:
        return {f: dim for f in fields}, {}
    variant = trial.suggest_categorical(f"variant:{group}", list(space.variants))
    emb = base["embeddings"]
    family = families.family_of_variant(variant, "space.variants[]")
    asked = dim  # a family may widen the dim it sizes with (QR concat); the fields' dims stay the trial's
    dim, options, compression = family.spec.suggest(trial, space, group, variant, dim,
                                                    family_options(variant, emb.get("options") or {}))
    if family.spec.compresses:
        compression = max(1.0, compression * compression_scale)
    specs = group_specs(variant, dim, {f: cards[f] for f in fields}, compression, int(emb["min_rows"]),
                        options, table_name=f"unified_{group}")
    overrides = {f: spec.to_dict() for f, spec in specs.items()}
    dims = {} if family.spec.shared_group else {f: asked for f in fields}
    return dims, overrides


def trial_choices(trial: Any, space: SpaceConfig, groups: Mapping[str, Sequence[str]], cards: Mapping[str, int],
                  run_dict: Dict[str, Any], dim_shift: int = 0, compression_scale: float = 1.0,
                  group_shifts: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """A trial's ``{"dims": {field: dim}, "overrides": {field: embedding dict}}`` over all groups.

    Args:
        trial: an Optuna trial (its suggestions are the choices).
        space: the search space.
        groups: :func:`field_groups`.
        cards: ids per field (the dataset's vocabulary sizes).
        run_dict: the trial's train config as a dict (its ``embeddings`` section gives ``min_rows`` and
            the families' ``options`` when variants are searched).
        dim_shift: every group's dim moves this many steps along :func:`dim_levels` (clamped).
        compression_scale: every compressing group's compression is multiplied by it (at least 1).
        group_shifts: ``{group: steps}`` moved after ``dim_shift`` (clamped again).
    """
    extra = group_shifts or {}
    dims: Dict[str, int] = {}
    overrides: Dict[str, Dict[str, Any]] = {}
    for g, fields in groups.items():
        d, o = _group_embeddings(trial, space, g, fields, cards, run_dict, dim_shift, compression_scale,
                                 extra.get(g, 0))
        dims.update(d)
        overrides.update(o)
    return {"dims": dims, "overrides": overrides}


Measure = Callable[[Dict[str, Any]], int]
"""``measure(choices) -> embedding bytes`` of a trial's (or a uniform configuration's) choices."""


def _solve_scale(at: Callable[[float], int], budget: int, lo: float, hi: float, target: float = FILL_TARGET
                 ) -> Tuple[float, int]:
    """The smallest scale ``s`` in ``[lo, hi]`` (found to within :data:`FILL_TARGET`) with ``at(s) <= budget``,
    given ``at(hi) <= budget`` and bytes that fall as ``s`` grows: regula falsi on ``1/s`` with the Illinois
    rule. Returns ``(s, at(s))``."""
    b_hi = at(hi)
    if b_hi > budget:
        raise ValueError(f"{b_hi} bytes at the largest compression exceed the budget {budget}")
    b_lo = at(lo)
    if b_lo <= budget:
        return lo, b_lo
    # on u = 1/s bytes are affine while no compression is clamped at 1: regula falsi with the Illinois
    # rule (an end kept twice has its residual halved), so clamping and rounding cannot stall it
    u_fit, f_fit, u_over, f_over = 1 / hi, float(b_hi - budget), 1 / lo, float(b_lo - budget)
    b_fit, side = b_hi, 0
    for _ in range(_FILL_STEPS):
        if b_fit >= target * budget:
            break
        u = (u_fit * f_over - u_over * f_fit) / (f_over - f_fit)
        if not u_fit < u < u_over:
            u = (u_fit + u_over) / 2
        b = at(1 / u)
        if b <= budget:
            u_fit, f_fit, b_fit = u, float(b - budget), b
            if side == -1:
                f_over /= 2
            side = -1
        else:
            u_over, f_over = u, float(b - budget)
            if side == 1:
                f_fit /= 2
            side = 1
    fit = 1 / u_fit
    return fit, b_fit


def fill_budget(trial: Any, space: SpaceConfig, groups: Mapping[str, Sequence[str]], cards: Mapping[str, int],
                run_dict: Dict[str, Any], measure: Measure, budget: int) -> Tuple[Dict[str, Any], int, Dict[str, Any]]:
    """A trial's choices scaled to use the budget: ``(choices, bytes, info)``.

    The trial's sampled dims and compressions fix the shape (which group is wider, which is compressed
    more); the scale is chosen here. First the dims: while the trial does not fit the budget even with
    one row per compressed field, every group's dim steps down one level of :func:`dim_levels`; while it
    fits with no compression at all (every compressing group at compression 1), every dim steps up while
    it still fits, then each group's own dim (in group order) while the trial still fits, and one
    group's one step more when that leaves the budget under-used and compression can fill it. Then the compressions: one factor multiplies every compressing group's compression
    (:func:`trial_choices`' ``compression_scale``), solved so that the trial uses between
    :data:`FILL_TARGET` of the budget and the budget. A trial that cannot fit (its uncompressed groups at
    the lowest dims exceed the budget) is returned as sampled, over the budget: the caller rejects it.

    Args:
        trial: an Optuna trial (or ``FixedTrial``): its suggestions are read once, then replayed.
        space, groups, cards, run_dict: as for :func:`trial_choices`.
        measure: ``measure(choices)`` -> embedding bytes (the objective's count from the feature specs).
        budget: the embedding bytes allowed.

    Returns:
        ``choices`` (as :func:`trial_choices`), their bytes, and ``info``: ``dim_shift`` (every group),
        ``group_shifts`` (``{group: steps}`` on top of it), ``compression_scale``, ``budget_use`` (bytes / budget).

    Example (one field, full or hashed; a hashed draw at dim 8 under a budget above its full table's bytes
    goes to dim 16 and the compression that fills the budget):
        >>> import optuna
        >>> space = SpaceConfig(dims=[8, 16], variants=["full", "hashed"], compression=[2.0])
        >>> cards = {"a": 10_000}
        >>> def measure(ch):
        ...     spec = ch["overrides"]["a"]
        ...     return spec.get("buckets", cards["a"]) * spec["dim"] * 4
        >>> trial = optuna.trial.FixedTrial({"dim:a": 8, "variant:a": "hashed", "compression:a": 2.0})
        >>> run = {"embeddings": {"min_rows": 0, "options": {}}}
        >>> choices, n_bytes, info = fill_budget(trial, space, {"a": ["a"]}, cards, run, measure, 400_000)
        >>> choices["overrides"]["a"]["dim"], n_bytes / 400_000 >= FILL_TARGET, info["dim_shift"], info["group_shifts"]
        (16, True, 0, {'a': 1})
    """
    from optuna.trial import FixedTrial

    sampled = trial_choices(trial, space, groups, cards, run_dict)
    replay = FixedTrial(dict(trial.params))
    levels = len(dim_levels(space))
    cache: Dict[Tuple[int, Tuple[Tuple[str, int], ...], float], int] = {}
    own: Dict[str, int] = {}  # groups moved on their own, on top of the common shift

    def at(shift: int, scale: float, extra: Optional[Mapping[str, int]] = None) -> int:
        key = (shift, tuple(sorted((extra if extra is not None else own).items())), scale)
        if key not in cache:
            cache[key] = measure(trial_choices(replay, space, groups, cards, run_dict, shift, scale, dict(key[1])))
        return cache[key]

    max_c = max([float(c) for c in space.compression] + [1.0])
    none = 1.0 / max_c  # every compressing group at compression 1
    shift = 0
    while shift > -(levels - 1) and at(shift, _MAX_SCALE) > budget:
        shift -= 1
    if at(shift, _MAX_SCALE) > budget:
        n = measure(sampled)
        return sampled, n, {"dim_shift": 0, "compression_scale": 1.0, "budget_use": n / budget}
    if at(shift, none) <= budget:
        while shift >= 0 and shift < levels - 1 and at(shift + 1, none) <= budget:
            shift += 1
        # then group by group (in order), one step at a time, while the trial still fits uncompressed
        grown = True
        while grown and at(shift, none) < FILL_TARGET * budget:
            grown = False
            for g in groups:
                more = {**own, g: own.get(g, 0) + 1}  # at the top dim already: the same bytes, not grown
                if at(shift, none) != at(shift, none, more) <= budget:
                    own, grown = more, True
        if at(shift, none) < FILL_TARGET * budget and at(shift, none) != at(shift, _MAX_SCALE):
            # uncompressed, these dims leave budget unused: the first group whose next dim fits compressed
            for g in groups:
                more = {**own, g: own.get(g, 0) + 1}
                if at(shift, _MAX_SCALE, more) <= budget < at(shift, none, more):
                    own = more
                    break
    scale, n = _solve_scale(lambda s: at(shift, s), budget, none, _MAX_SCALE)
    choices = trial_choices(replay, space, groups, cards, run_dict, shift, scale, own)
    return choices, n, {"dim_shift": shift, "group_shifts": dict(own), "compression_scale": scale,
                        "budget_use": n / budget}


def fit_compression(measure_at: Callable[[float], int], budget: int) -> Optional[Tuple[float, int]]:
    """The compression (>= 1) whose bytes ``measure_at(compression)`` come closest to the budget without
    exceeding it, ``(compression, bytes)``; ``None`` when even one row per field exceeds it.

    Example (a table of 1000 rows of 16 floats plus 10 rows that do not compress, under 20 000 bytes):
        >>> c, n = fit_compression(lambda c: (math.ceil(1000 / c) + 10) * 64, 20_000)
        >>> round(c, 2), n, n <= 20_000
        (3.31, 19968, True)
    """
    if measure_at(_MAX_SCALE) > budget:
        return None
    return _solve_scale(measure_at, budget, 1.0, _MAX_SCALE)


def uniform_choices(variants: Sequence[str], space: SpaceConfig, base_dim: int,
                    measure: Measure, budget: int) -> List[Tuple[str, Dict[str, Any], int]]:
    """The uniform configurations at the budget, ``[(label, choices, bytes)]``: every field the same
    variant (the run config's ``embeddings.variant`` / ``dim`` / ``compression``, in ``choices["preset"]``).
    A non-compressing variant (``full``, ...) takes the largest dim of :func:`dim_levels` that fits; a
    compressing one (``hashed``, ``unified``, ...) the base dim (or, when uncompressed it leaves budget
    unused, the first larger dim of :func:`dim_levels` that does not) and the compression that fills the
    budget (:func:`fit_compression`). Variants that cannot fit are left out.

    Example (full tables of 1000 rows: dim 8 is the largest within 40 000 bytes):
        >>> space = SpaceConfig(dims=[4, 8, 16])
        >>> measure = lambda ch: 1000 * ch["preset"]["dim"] * 4
        >>> [(label, n) for label, _, n in uniform_choices(["full"], space, 16, measure, 40_000)]
        [('full dim 8', 32000)]
    """
    out: List[Tuple[str, Dict[str, Any], int]] = []
    for variant in variants:
        family = families.family_of_variant(variant, "space.variants[]")

        def choices(dim: int, compression: float) -> Dict[str, Any]:
            return {"preset": {"variant": variant, "dim": dim, "compression": compression}, "dims": {}, "overrides": {}}

        if family.spec.compresses:
            dim, wider = base_dim, [d for d in dim_levels(space) if d > base_dim]
            while wider and measure(choices(dim, 1.0)) < FILL_TARGET * budget:
                dim = wider.pop(0)  # uncompressed, this dim leaves budget unused
            found = fit_compression(lambda c: measure(choices(dim, c)), budget)
            if found is not None:
                c, n = found
                out.append((f"{variant} dim {dim} 1/{c:.3g}", choices(dim, c), n))
            continue
        fits = [(d, n) for d in dim_levels(space) for n in [measure(choices(d, 1.0))] if n <= budget]
        if fits:
            d, n = fits[-1]
            out.append((f"{variant} dim {d}", choices(d, 1.0), n))
    return out
