"""One-shot dimension search (OptEmbed's supernet, Lyu et al., CIKM 2022): one training, then a search
that trains nothing, then one retraining.

1. **Supernet**: every searched field's table at the space's largest dim ``D``. At every training step each
   group of fields (``space.groups`` / ``space.ungrouped``) draws a dim uniformly from the space's choices,
   and the lookups of its fields keep their first ``d`` columns; the other ``D - d`` are set to zero
   (:class:`DimMask`, a forward hook on the embedding layer's table collection, before the L2 penalty and
   the interaction). The zero tail is OptEmbed's mask: the interaction and the MLPs keep one input width
   for every candidate, so one set of dense weights serves them all, and a ``d``-column slice with a zero
   tail equals a table of dim ``d`` holding the first ``d`` columns, in the forward pass and in the
   gradient (the tail gets none, so a step updates only the first ``d`` columns of each row it reads).
   Slicing to ``d`` columns and projecting would instead need one projection per (field, dim), each trained
   only by the steps that drew that dim.
2. **Search without training** (:func:`evolve`): candidates (a dim per group) over the budget are never
   scored; the others are scored by the supernet's validation AUC with those slices. An evolutionary
   search (population, parents, mutation, crossover) keeps the best; every candidate is first grown to fill
   the budget (``supernet.fill``).
3. **Retrain**: the chosen dims trained from scratch with the base config's full recipe; its run directory
   holds the model that ``recsys-emb predict`` scores.

Example (the mask alone, on a layer of two fields at ``D = 8``; the group ``g`` drawn at dim 4):
    >>> import torch
    >>> from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
    >>> from recsys_emb.specs import FeatureSpec, Full
    >>> layer = EmbeddingLayer([FeatureSpec("a", Full(dim=8), cardinality=10),
    ...                         FeatureSpec("b", Full(dim=8), cardinality=10)])
    >>> mask = DimMask.install(layer, {"g": ["a", "b"]}, [4, 8])
    >>> mask.dims = {"g": 4}
    >>> out = layer.eval()(kjt_from_lists({"a": [[1]], "b": [[2]]})).values()
    >>> out.shape, bool((out[:, 4:8] == 0).all()), bool((out[:, :4] != 0).any())
    (torch.Size([1, 16]), True, True)
"""

from __future__ import annotations

import csv
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import yaml
from torch import nn

from recsys_emb.config import RunConfig, apply_overrides, config_from_dict, config_to_dict
from recsys_emb.errors import ConfigError
from recsys_emb.memory import memory_from_specs
from recsys_emb.search.config import DEFAULT_SPACE_VARIANTS, DimRange, SearchConfig
from recsys_emb.search.objective import _load_schema, trial_run_config
from recsys_emb.search.space import field_groups
from recsys_emb.specs import DIM_MULTIPLE, Full, Hashed

__all__ = ["DimMask", "SupernetPlan", "supernet_plan", "evolve", "supernet_search", "SLICEABLE"]

logger = logging.getLogger(__name__)

SLICEABLE = (Full, Hashed)
"""Embedding specs whose lookup is a plain table row (or a weighted sum of rows of one table), so the
first ``d`` columns of a ``D``-wide table are a ``d``-wide table: the supernet slices these only."""

Candidate = Tuple[int, ...]
"""A dim per group, in the plan's group order."""


class DimMask:
    """Keeps the first ``d`` columns of each masked field's lookups and zeroes the rest: a forward hook on
    an :class:`~recsys_emb.layer.EmbeddingLayer`'s table collection (``layer.ebc``, whichever kernel holds
    it, sharded or not), so the L2 penalty, the combine and the interaction all see the masked rows.

    In training mode every forward (one per step) draws a dim per group uniformly from ``choices``
    (:attr:`last_drawn`); in eval mode it uses :attr:`dims` (default: every group at its largest choice).
    Shapes: the collection's pooled ``(B, sum of D)`` values times a ``(sum of D,)`` 0/1 mask.
    """

    def __init__(self, key_groups: Mapping[str, str], key_dims: Mapping[str, int], choices: Sequence[int],
                 seed: int = 0) -> None:
        self.key_groups = dict(key_groups)
        self.key_dims = dict(key_dims)
        self.choices = sorted(int(c) for c in choices)
        self.groups = sorted(set(self.key_groups.values()))
        self.dims: Dict[str, int] = {g: self.choices[-1] for g in self.groups}
        self.last_drawn: Dict[str, int] = {}
        self.sampling = True
        self.rng = random.Random(seed)
        self._masks: Dict[Tuple[Any, ...], torch.Tensor] = {}

    @classmethod
    def install(cls, layer: Any, groups: Mapping[str, Sequence[str]], choices: Sequence[int],
                seed: int = 0) -> "DimMask":
        """Hook a mask on ``layer.ebc`` (install it after the tables are attached, which replaces ``ebc``):
        ``groups`` maps a group to its fields, all of them :data:`SLICEABLE` at one dim ``>= max(choices)``."""
        key_groups: Dict[str, str] = {}
        key_dims: Dict[str, int] = {}
        specs = {f.name: f for f in layer.features}
        for g, fields in groups.items():
            for f in fields:
                spec = specs[f]
                if not isinstance(spec.embedding, SLICEABLE) or spec.output_dim < max(choices):
                    raise ConfigError(f"supernet: field {f!r} ({type(spec.embedding).__name__}, dim "
                                      f"{spec.output_dim}) cannot be sliced to {max(choices)} columns; the supernet "
                                      f"slices full or hashed tables of the space's largest dim")
                for vf in layer.variant(f).virtual_features():
                    key_groups[vf.name] = g
                    key_dims[vf.name] = spec.output_dim
        mask = cls(key_groups, key_dims, choices, seed)
        layer.ebc.register_forward_hook(mask.hook)
        return mask

    def draw(self) -> Dict[str, int]:
        """A dim per group, uniformly from the choices."""
        self.last_drawn = {g: self.rng.choice(self.choices) for g in self.groups}
        return self.last_drawn

    def _mask(self, keys: Sequence[str], widths: Sequence[int], dims: Mapping[str, int], like: torch.Tensor
              ) -> torch.Tensor:
        cache = (tuple(keys), tuple(widths), tuple(sorted(dims.items())), like.device, like.dtype)
        m = self._masks.get(cache)
        if m is None:
            parts = []
            for k, w in zip(keys, widths):
                keep = dims[self.key_groups[k]] if k in self.key_groups else w
                parts.append(torch.cat([torch.ones(keep), torch.zeros(w - keep)]))
            m = torch.cat(parts).to(device=like.device, dtype=like.dtype)
            if len(self._masks) > 4096:
                self._masks.clear()
            self._masks[cache] = m
        return m

    def hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        """The collection's pooled ``KeyedTensor`` -> the same with each masked key's tail columns zero."""
        from torchrec.sparse.jagged_tensor import KeyedTensor

        dims = self.draw() if module.training and self.sampling else self.dims
        keys, widths, values = list(output.keys()), list(output.length_per_key()), output.values()
        return KeyedTensor(keys=keys, length_per_key=widths, values=values * self._mask(keys, widths, dims, values))


class SupernetPlan:
    """What the supernet searches: ``groups`` (group -> fields, in order), ``choices`` (sorted dims), and the
    bytes of a candidate from each field's bytes at each choice (``field_bytes[field][dim]``) plus the
    unsearched fields' (``fixed_bytes``)."""

    def __init__(self, groups: Dict[str, List[str]], choices: List[int], field_bytes: Dict[str, Dict[int, int]],
                 fixed_bytes: int) -> None:
        self.groups = groups
        self.names = list(groups)
        self.choices = choices
        self.field_bytes = field_bytes
        self.fixed_bytes = fixed_bytes

    def bytes_of(self, cand: Candidate) -> int:
        """Embedding parameter bytes of a candidate (as :func:`recsys_emb.memory.memory_from_specs` counts)."""
        return self.fixed_bytes + sum(self.field_bytes[f][d] for g, d in zip(self.names, cand) for f in self.groups[g])

    def dims_of(self, cand: Candidate) -> Dict[str, int]:
        """``{field: dim}`` of a candidate."""
        return {f: d for g, d in zip(self.names, cand) for f in self.groups[g]}


def _choices(config: SearchConfig) -> List[int]:
    dims = config.space.dims
    if isinstance(dims, DimRange):
        return list(range(dims.low, dims.high + 1, DIM_MULTIPLE))
    return sorted(set(int(d) for d in dims))


def supernet_plan(config: SearchConfig, schema: Any, run_dict: Optional[Dict[str, Any]] = None) -> SupernetPlan:
    """The groups, the dims and the bytes of every field at every dim, from the feature specs (nothing built).

    Raises :class:`~recsys_emb.errors.ConfigError` for what the supernet cannot search: ``space.variants`` other
    than the default (which it leaves unsearched),
    a model other than DLRM, a base variant that is not :data:`SLICEABLE`."""
    from recsys_emb.training import build_features

    if config.space.variants and tuple(config.space.variants) != DEFAULT_SPACE_VARIANTS:
        raise ConfigError(f"space.variants={config.space.variants!r}: --method supernet searches the dims of the base "
                          f"config's tables only; leave space.variants unset or [] (or use --method trials)")
    if config.space.variants:
        logger.info("--method supernet searches dims only: the default space.variants %s is not searched",
                    list(config.space.variants))
    base = run_dict if run_dict is not None else config.base_run_dict()
    if base["model"]["kind"] != "dlrm":
        raise ConfigError(f"model.kind={base['model']['kind']!r}: --method supernet trains DLRM only")
    fields = list(schema.sparse) + list(schema.jagged)
    groups = field_groups(config.space, fields)
    choices = _choices(config)
    field_bytes: Dict[str, Dict[int, int]] = {f: {} for fs in groups.values() for f in fs}
    fixed = 0
    for d in choices:
        cfg = trial_run_config(config, {"dims": {f: d for f in field_bytes}}, base)
        specs, _ = build_features(cfg, schema)
        for s in specs:
            if s.name in field_bytes:
                if not isinstance(s.embedding, SLICEABLE):
                    raise ConfigError(f"field {s.name!r} is {type(s.embedding).__name__} in the base config "
                                      f"({config.base_config}): --method supernet slices full or hashed tables; "
                                      f"set embeddings.variant to full or hashed there")
                field_bytes[s.name][d] = int(memory_from_specs([s]).bytes)
        fixed = int(memory_from_specs([s for s in specs if s.name not in field_bytes]).bytes) \
            if any(s.name not in field_bytes for s in specs) else 0
    return SupernetPlan(groups, choices, field_bytes, fixed)


def _fill(cand: List[int], plan: SupernetPlan, budget: int, rng: random.Random) -> List[int]:
    """Raise groups (in random order, repeatedly) to the largest choice that keeps ``cand`` within budget."""
    changed = True
    while changed:
        changed = False
        for i in rng.sample(range(len(cand)), len(cand)):
            for d in reversed(plan.choices):
                if d <= cand[i]:
                    break
                trial = cand[:i] + [d] + cand[i + 1:]
                if plan.bytes_of(tuple(trial)) <= budget:
                    cand, changed = trial, True
                    break
    return cand


def _repair(cand: List[int], plan: SupernetPlan, budget: int, rng: random.Random) -> List[int]:
    """Lower random groups one choice at a time until ``cand`` is within budget."""
    while plan.bytes_of(tuple(cand)) > budget:
        big = [i for i, d in enumerate(cand) if d > plan.choices[0]]
        i = rng.choice(big)
        cand = cand[:i] + [plan.choices[plan.choices.index(cand[i]) - 1]] + cand[i + 1:]
    return cand


def evolve(score: Callable[[Candidate], float], plan: SupernetPlan, budget: int, population: int = 16,
           generations: int = 6, parents: int = 6, mutation_prob: float = 0.3, fill: bool = True,
           seed: int = 0) -> List[Dict[str, Any]]:
    """Evolutionary search over a dim per group: ``score(candidate)`` (higher is better) is called once per
    distinct candidate within ``budget``; candidates over it are never scored.

    The first population holds every uniform candidate (one dim for all groups) and random ones; each
    generation breeds ``population`` children from the ``parents`` best (half by mutation, half by
    crossover). Every candidate is brought within the budget (random groups lowered); with ``fill`` its copy
    grown to fill the budget is scored too (so the search meets the points that use the budget, and can
    still prefer one that does not). Ties in score go to the candidate with more bytes.

    Returns the scored candidates in order: ``{"candidate", "dims" (per group), "bytes", "score",
    "generation"}``.

    Raises:
        ConfigError: the budget is below the smallest candidate (every group at the smallest dim).

    Example:
        >>> plan = SupernetPlan({"a": ["a"], "b": ["b"]}, [4, 8, 16], {"a": {4: 40, 8: 80, 16: 160},
        ...                     "b": {4: 400, 8: 800, 16: 1600}}, 0)
        >>> best = max(evolve(lambda c: sum(c), plan, budget=1000, generations=2), key=lambda r: r["score"])
        >>> best["dims"], best["bytes"]
        ({'a': 16, 'b': 8}, 960)
    """
    smallest = tuple(plan.choices[0] for _ in plan.names)
    if plan.bytes_of(smallest) > budget:
        raise ConfigError(f"budget_bytes={budget} is below the smallest candidate ({plan.bytes_of(smallest)} bytes, "
                          f"every group at dim {plan.choices[0]}); raise it, or search a hashed base config "
                          f"(fewer rows per table)")
    rng = random.Random(seed)
    seen: Dict[Candidate, Dict[str, Any]] = {}
    order: List[Dict[str, Any]] = []

    def admit(cand: List[int], generation: int) -> None:
        cand = _repair(cand, plan, budget, rng)
        for c in (cand, _fill(cand, plan, budget, rng)) if fill else (cand,):
            key = tuple(c)
            if key in seen:
                continue
            rec = {"candidate": key, "dims": dict(zip(plan.names, key)), "bytes": plan.bytes_of(key),
                   "score": float(score(key)), "generation": generation}
            logger.info("candidate %d (generation %d): %s bytes, score %.4f", len(order), generation,
                        f"{rec['bytes']:,}", rec["score"])
            seen[key] = rec
            order.append(rec)

    def rank(r: Dict[str, Any]) -> Tuple[float, int]:
        return (r["score"], r["bytes"])

    for d in plan.choices:  # the uniform candidates within the budget (a uniform over it is lowered, then filled)
        if len(order) >= population:
            break
        admit([d] * len(plan.names), 0)
    tries = 0
    while len(order) < population and tries < 20 * population:
        tries += 1
        admit([rng.choice(plan.choices) for _ in plan.names], 0)
    for gen in range(1, generations + 1):
        top = sorted(order, key=rank, reverse=True)[:parents]
        before, tries = len(order), 0
        while len(order) - before < population and tries < 20 * population:
            tries += 1
            a = list(rng.choice(top)["candidate"])
            if tries % 2 and len(top) > 1:
                b = list(rng.choice(top)["candidate"])
                child = [x if rng.random() < 0.5 else y for x, y in zip(a, b)]
            else:
                child = [rng.choice(plan.choices) if rng.random() < mutation_prob else x for x in a]
            admit(child, gen)
        if len(order) == before:
            logger.info("generation %d bred no new candidate; the search stops", gen)
            break
    return order


def _run_dict(config: SearchConfig, overrides: Sequence[str], out_dir: Path, name: str) -> Dict[str, Any]:
    data = config.base_run_dict()
    try:
        data = config_to_dict(config_from_dict(apply_overrides(data, list(overrides))))
    except ConfigError as e:
        raise ConfigError(f"supernet.train_overrides: {e}") from None
    data["train"]["out_dir"] = str(out_dir)
    data["name"] = name
    return data


def _steps(summary: Mapping[str, Any]) -> int:
    return int(summary["steps"])


def supernet_search(config: SearchConfig, study_name: Optional[str] = None) -> Dict[str, Any]:
    """The whole one-shot search; writes into ``<out_root>/<study>/``: ``supernet/`` (its training run),
    ``candidates.csv`` (every scored candidate), ``best.yaml`` (the base config with the chosen dims),
    ``retrain/`` (the chosen dims trained from scratch; ``retrain/model`` is a model directory) and
    ``report.json`` (what this returns: chosen dims, bytes vs budget, the retrained valid/test AUC, and the
    compute: supernet steps, candidates scored, retrain steps).

    Example::

        cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")
        report = supernet_search(cfg)
        report["bytes"] <= report["budget_bytes"], report["retrain"]["test_auc"]
    """
    from recsys_emb.training import build_features, embedding_layers
    from recsys_emb.training import train as train_run
    from recsys_emb.training.trainer import Trainer

    if config.mode != "single" or config.budget_bytes is None:
        raise ConfigError(f"mode={config.mode!r}: --method supernet searches under a hard budget_bytes (mode: single)")
    study = study_name or config.study_name
    out = Path(config.out_root) / study
    if (out / "supernet").exists() or (out / "report.json").exists():
        raise ConfigError(f"{out} already holds a supernet search (supernet/ or report.json); choose another --study "
                          f"or remove that directory")
    s = config.supernet
    seed = s.seed if s.seed is not None else (config.seed if config.seed is not None else 0)
    base = config.base_run_dict()
    schema = _load_schema(config_from_dict(base))
    plan = supernet_plan(config, schema, base)
    budget = int(config.budget_bytes)
    smallest = plan.bytes_of(tuple(plan.choices[0] for _ in plan.names))
    if smallest > budget:  # before the supernet's training, not after it
        raise ConfigError(f"budget_bytes={budget} is below the smallest candidate ({smallest} bytes, every group at "
                          f"dim {plan.choices[0]}); raise it, or search a hashed base config (fewer rows per table)")
    top = plan.choices[-1]
    sup_dict = _run_dict(config, s.train_overrides, out / "supernet", f"{study}-supernet")
    sup_cfg = trial_run_config(config, {"dims": {f: top for f in plan.field_bytes}}, sup_dict)
    t0 = time.perf_counter()
    trainer = Trainer(sup_cfg, write_model=False)
    try:
        model: Any = trainer.model
        (layer,) = embedding_layers(model.module)
        mask = DimMask.install(layer, plan.groups, plan.choices, seed=seed)
        sup_summary = trainer.fit()
        t_train = time.perf_counter() - t0
        logger.info("supernet: %d steps, valid AUC %.4f at the largest dims", _steps(sup_summary),
                    sup_summary["valid"]["auc"])

        def score(cand: Candidate) -> float:
            mask.dims = dict(zip(plan.names, cand))
            return float(trainer.evaluate("valid")["auc"])

        t1 = time.perf_counter()
        scored = evolve(score, plan, budget, population=s.population, generations=s.generations, parents=s.parents,
                        mutation_prob=s.mutation_prob, fill=s.fill, seed=seed)
        t_search = time.perf_counter() - t1
    finally:
        trainer.close()
    best = max(scored, key=lambda r: (r["score"], r["bytes"]))
    dims = plan.dims_of(best["candidate"])
    final = trial_run_config(config, {"dims": dims}, base, out_dir=str(out / "retrain"), name=f"{study}-best")
    specs, _ = build_features(final, schema)
    n_bytes = int(memory_from_specs(specs).bytes)
    if n_bytes != best["bytes"]:  # the plan's per-field sum against the whole model's count
        logger.warning("supernet: bytes of the chosen dims from specs %d != the plan's %d", n_bytes, best["bytes"])
    with open(out / "candidates.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["number", "generation", "bytes", "valid_auc_supernet", *plan.names])
        for i, r in enumerate(scored):
            w.writerow([i, r["generation"], r["bytes"], f"{r['score']:.6f}", *r["candidate"]])
    header = (f"# Supernet search {study!r}: dims of candidate {scored.index(best)} of {len(scored)} (supernet valid "
              f"AUC {best['score']:.4f}), {n_bytes:,} embedding bytes of a budget of {budget:,}.\n"
              f"# Run: recsys-emb train --config {out / 'best.yaml'}\n")
    (out / "best.yaml").write_text(header + yaml.safe_dump(config_to_dict(final), sort_keys=False))
    report: Dict[str, Any] = {
        "method": "supernet", "study": study, "budget_bytes": budget, "bytes": n_bytes,
        "budget_used": n_bytes / budget, "dims": dims, "group_dims": best["dims"],
        "supernet_valid_auc": best["score"], "best_yaml": str(out / "best.yaml"),
        "candidates_csv": str(out / "candidates.csv"),
        "compute": {"supernet_steps": _steps(sup_summary), "candidates_scored": len(scored),
                    "retrain_steps": 0, "supernet_seconds": t_train, "search_seconds": t_search},
        "supernet": {"valid_auc_largest": sup_summary["valid"]["auc"], "out_dir": str(out / "supernet")},
    }
    if s.retrain:
        t2 = time.perf_counter()
        summary = train_run(final)
        report["compute"]["retrain_steps"] = _steps(summary)
        report["compute"]["retrain_seconds"] = time.perf_counter() - t2
        report["retrain"] = {"valid_auc": summary["valid"]["auc"], "test_auc": summary["test"]["auc"],
                             "embedding_bytes": summary["embedding_bytes"], "out_dir": str(out / "retrain"),
                             "model_dir": str(out / "retrain" / "model")}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    report["report_json"] = str(out / "report.json")
    return report
