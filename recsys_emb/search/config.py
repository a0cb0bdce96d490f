"""The search config: what a study searches (:class:`SpaceConfig`), how (sampler, :class:`PrunerConfig`,
workers' heartbeats) and from which train config (:class:`SearchConfig`); loaded from YAML and validated
before any work.

Example:
    >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml", ["n_trials=8", "space.dims=[8, 16]"])
    >>> (cfg.mode, cfg.n_trials, cfg.space.dims, cfg.budget_bytes)
    ('single', 8, [8, 16], 20000000)
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from recsys_emb.errors import ConfigError
from recsys_emb.families import variant_names
from recsys_emb.config import (
    _read_yaml,
    apply_overrides,
    check_plain_name,
    config_from_dict,
    config_to_dict,
    dataclass_from_dict,
    load_config_dict,
    packaged_configs,
    resolve_config,
)
from recsys_emb.specs import DIM_MULTIPLE

__all__ = ["DimRange", "SpaceConfig", "PrunerConfig", "SupernetConfig", "SearchConfig", "load_search_config", "search_config_from_dict",
           "SEARCH_VARIANTS"]

def __getattr__(name: str) -> Any:
    if name == "SEARCH_VARIANTS":  # read from the registry: families registered later are in it
        return variant_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SEARCH_VARIANTS: Tuple[str, ...]
"""Variants a group may choose from (``space.variants``): every registered family's variant names
(:func:`recsys_emb.families.variant_names`), read when accessed."""

_SAMPLERS = ("auto", "tpe", "random", "nsga2")
_PRUNERS = ("successive_halving", "hyperband", "median", "none")
_MODES = ("single", "multi")
_UNGROUPED = ("each", "one", "fixed")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed; {allowed}")


def _dim_ok(key: str, d: Any) -> None:
    if isinstance(d, bool) or not isinstance(d, int) or d < DIM_MULTIPLE or d % DIM_MULTIPLE:
        _fail(key, d, f"dims must be positive multiples of {DIM_MULTIPLE} (FBGEMM's fused kernels need it)")


@dataclass
class DimRange:
    """An integer range of dims, searched in steps of 4 (log-uniform on the number of 4-wide units
    when ``log``)."""

    low: int = 4
    high: int = 64
    log: bool = True

    def validate(self, key: str) -> None:
        _dim_ok(f"{key}.low", self.low)
        _dim_ok(f"{key}.high", self.high)
        if self.high < self.low:
            _fail(f"{key}.high", self.high, f"must be >= {key}.low={self.low}")


DEFAULT_SPACE_VARIANTS = ("full", "hashed", "unified")
"""``space.variants`` when a search config does not set it."""


@dataclass
class SpaceConfig:
    """What a trial chooses, per group of fields.

    Attributes:
        dims: a list of dims (categorical choice) or ``{low, high, log}`` (integer range, multiples of 4).
        groups: ``{group name: [field, ...]}``; a group's fields share one choice.
        ungrouped: fields in no group: ``each`` (default: one group per field, named after it),
            ``one`` (all of them form one group named ``rest``) or ``fixed`` (not searched; they keep the
            base config's embedding).
        variants: variants a group chooses from (default ``[full, hashed, unified]``; ``[]`` = keep the
            base config's variant for every field, only dims are searched). Any of ``SEARCH_VARIANTS``;
            small fields (fewer ids than the base config's ``embeddings.min_rows``) always stay full
            tables. A ``unified`` group's fields share one table (its own, named ``unified_<group>``).
        compression: choices of rows kept per field (1/compression) for hashed, multi_hash, qr, unified;
            with ``fill_budget`` they are relative: a trial scales all of its groups' compressions by one
            factor so that it fills the budget.
        alpha: choices of the mixed-dimension power.
        chunks: choices of chunks for unified groups (the group's shared table has ``dim / chunks``
            columns, rounded down to a multiple of 4).
    """

    dims: Union[List[int], DimRange] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    groups: Dict[str, List[str]] = field(default_factory=dict)
    ungrouped: str = "each"
    variants: List[str] = field(default_factory=lambda: list(DEFAULT_SPACE_VARIANTS))
    compression: List[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])
    alpha: List[float] = field(default_factory=lambda: [0.2, 0.4])
    chunks: List[int] = field(default_factory=lambda: [1])

    def validate(self) -> None:
        if isinstance(self.dims, DimRange):
            self.dims.validate("space.dims")
        else:
            if not self.dims:
                _fail("space.dims", self.dims, "give a non-empty list of dims or {low, high, log}")
            for d in self.dims:
                _dim_ok("space.dims[]", d)
        if self.ungrouped not in _UNGROUPED:
            _fail("space.ungrouped", self.ungrouped, f"choose one of {list(_UNGROUPED)}")
        seen: Dict[str, str] = {}
        for g, fields in self.groups.items():
            if not isinstance(g, str) or not g or any(c in g for c in ":@. "):
                _fail("space.groups", g, "group names are non-empty strings without ':', '@', '.' or spaces")
            if not fields:
                _fail(f"space.groups.{g}", fields, "a group lists at least one field")
            for f in fields:
                if f in seen:
                    _fail(f"space.groups.{g}", f, f"field {f!r} is already in group {seen[f]!r}")
                seen[f] = g
        for v in self.variants:
            if v not in variant_names():
                _fail("space.variants[]", v, f"choose from {list(variant_names())}")
        for c in self.compression:
            if not c >= 1:
                _fail("space.compression[]", c, "must be >= 1 (1 = all rows)")
        for a in self.alpha:
            if not 0 <= a <= 2:
                _fail("space.alpha[]", a, "must lie in [0, 2]")
        for c in self.chunks:
            if c < 1:
                _fail("space.chunks[]", c, "must be >= 1")
        for key in ("compression", "alpha", "chunks"):
            if not getattr(self, key):
                _fail(f"space.{key}", [], "give at least one choice")


@dataclass
class PrunerConfig:
    """Pruning on intermediate validation AUC (single-objective mode only).

    ``kind``: ``successive_halving`` (default: SuccessiveHalvingPruner over steps: at steps
    ``eval_every * reduction_factor**k`` a trial goes on only while its AUC is in the best
    ``1/reduction_factor`` of the trials that reached that step), ``hyperband`` (HyperbandPruner over
    steps, brackets of successive halving), ``median`` (MedianPruner: ``startup_trials`` unpruned trials,
    ``warmup_steps`` steps before pruning) or ``none``. The uniform trials (``uniform_trials``) are never
    pruned: they are the baselines the others are ranked against."""

    kind: str = "successive_halving"
    startup_trials: int = 3
    warmup_steps: int = 0
    reduction_factor: int = 3

    def validate(self) -> None:
        if self.kind not in _PRUNERS:
            _fail("pruner.kind", self.kind, f"choose one of {list(_PRUNERS)}")
        for key in ("startup_trials", "warmup_steps"):
            if getattr(self, key) < 0:
                _fail(f"pruner.{key}", getattr(self, key), "must be >= 0")
        if self.reduction_factor < 2:
            _fail("pruner.reduction_factor", self.reduction_factor, "must be >= 2")


@dataclass
class SupernetConfig:
    """The one-shot search (``recsys-emb search --method supernet``, :mod:`recsys_emb.search.supernet`).

    ``train_overrides``: ``key=value`` overrides of the supernet's training on top of the base config (its
    full recipe by default). The evolutionary search scores ``population`` candidates, then ``generations``
    rounds of ``population`` children (mutation: each group's dim redrawn with ``mutation_prob``; crossover:
    each group's dim from either of two parents) bred from the ``parents`` best; ``fill``: each candidate's
    copy grown to the budget is scored too (groups in random order, each raised to the largest dim that
    still fits).
    ``retrain``: train the chosen dims from scratch with the base config. ``seed``: the step sampling and
    the search (``null``: the search config's ``seed``, else 0)."""

    train_overrides: List[str] = field(default_factory=list)
    population: int = 16
    generations: int = 6
    parents: int = 6
    mutation_prob: float = 0.3
    fill: bool = True
    retrain: bool = True
    seed: Optional[int] = None

    def validate(self) -> None:
        for key in ("population", "parents"):
            if getattr(self, key) < 1:
                _fail(f"supernet.{key}", getattr(self, key), "must be >= 1")
        if self.generations < 0:
            _fail("supernet.generations", self.generations, "must be >= 0")
        if not 0 < self.mutation_prob <= 1:
            _fail("supernet.mutation_prob", self.mutation_prob, "must lie in (0, 1]")
        for item in self.train_overrides:
            if "=" not in item:
                _fail("supernet.train_overrides[]", item, "each entry looks like key.sub=value")


@dataclass
class SearchConfig:
    """A whole search, as loaded from YAML by :func:`load_search_config`.

    Attributes:
        base_config: the train config the trials start from (a path relative to the search YAML, else to
            the working directory); the best trial's config is this one with the chosen embeddings.
        train_overrides: ``key=value`` overrides for the short trial trainings (e.g. ``train.max_steps=200``).
        study_name: default study name (``--study`` overrides).
        storage: Optuna storage URL; default ``sqlite:///<out_root>/<study>.db``.
        out_root: where ``<study>/`` (trial runs, best.yaml, trials.csv, plots) goes.
        n_trials: trials the study runs in total, across all workers (``--n-trials`` overrides).
        mode: ``single`` (maximise valid AUC under ``budget_bytes``) or ``multi`` (AUC up, bytes down).
        budget_bytes: embedding parameter bytes allowed (required in ``single`` mode; optional cap in
            ``multi`` mode). Trials over it are never trained.
        space: the search space (:class:`SpaceConfig`).
        sampler: ``auto`` (TPE for single, NSGA-II for multi), ``tpe``, ``random`` or ``nsga2``.
        pruner: :class:`PrunerConfig`.
        seed: sampler seed (``null``: a fresh one per worker, what many workers want).
        heartbeat_interval, grace_period: seconds; a RUNNING trial whose worker has not beaten for
            ``grace_period`` is failed by the next worker and retried with the same parameters.
        max_retries: retries of one killed trial.
        max_over_budget_trials: over-budget trials (free: not trained) a worker tolerates before it
            gives up, so a space whose every point breaks the budget cannot spin forever.
        supernet: the one-shot search's settings (:class:`SupernetConfig`, ``--method supernet``).
        keep_checkpoints: keep the trials' training checkpoints and model directories (default: deleted after
            the trial).
        progress: tqdm bar over trials on a TTY.
        fill_budget: (single mode) a sampled trial is scaled to use the budget instead of being drawn and
            hoped for: its groups' dims move up or down together by whole steps of ``space.dims`` and the
            compressions of its compressing groups by one common factor, until it uses at least
            :data:`~recsys_emb.search.space.FILL_TARGET` of the budget without exceeding it (or cannot).
        uniform_trials: (single mode) the study's first trials are the uniform configurations at the
            budget: every field the same variant of ``space.variants`` (full at the largest dim of
            ``space.dims`` that fits, compressing variants at the base dim with the compression that
            fills the budget); user attribute ``uniform`` names each.
        retrain_top: once the study is done, the best ``retrain_top`` completed trials are trained again
            with the base config's full recipe and the one with the best valid AUC is the result
            (``best.yaml``); 0 = no retraining (``best.yaml`` is the best short trial).
    """

    base_config: str = ""
    train_overrides: List[str] = field(default_factory=list)
    study_name: str = ""
    storage: Optional[str] = None
    out_root: str = "runs"
    n_trials: int = 20
    mode: str = "single"
    budget_bytes: Optional[int] = None
    space: SpaceConfig = field(default_factory=SpaceConfig)
    sampler: str = "auto"
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    seed: Optional[int] = None
    heartbeat_interval: int = 10
    grace_period: Optional[int] = None
    max_retries: int = 2
    max_over_budget_trials: int = 1000
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    keep_checkpoints: bool = False
    progress: bool = True
    fill_budget: bool = True
    uniform_trials: bool = True
    retrain_top: int = 3
    source: str = field(default="", repr=False)
    """The YAML file the config came from (set by the loader; resolves ``base_config``)."""

    def validate(self) -> "SearchConfig":
        if not self.base_config:
            raise ConfigError("base_config is required: the train config (YAML) the trials start from")
        if self.mode not in _MODES:
            _fail("mode", self.mode, f"choose one of {list(_MODES)}")
        if self.sampler not in _SAMPLERS:
            _fail("sampler", self.sampler, f"choose one of {list(_SAMPLERS)}")
        if self.mode == "single" and self.sampler == "nsga2":
            _fail("sampler", self.sampler, "nsga2 is for mode: multi; choose tpe or random")
        if self.mode == "single" and self.budget_bytes is None:
            raise ConfigError("budget_bytes is required in mode: single (the hard memory budget, in bytes)")
        if self.budget_bytes is not None and self.budget_bytes <= 0:
            _fail("budget_bytes", self.budget_bytes, "must be > 0")
        if self.n_trials < 1:
            _fail("n_trials", self.n_trials, "must be >= 1")
        if self.heartbeat_interval < 1:
            _fail("heartbeat_interval", self.heartbeat_interval, "must be >= 1 (seconds)")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            _fail("grace_period", self.grace_period, f"must be > heartbeat_interval={self.heartbeat_interval}")
        if self.max_retries < 0:
            _fail("max_retries", self.max_retries, "must be >= 0")
        if self.retrain_top < 0:
            _fail("retrain_top", self.retrain_top, "must be >= 0 (0: no retraining)")
        if self.study_name:
            check_plain_name("study_name", self.study_name, example="dims-dlrm")
        for item in self.train_overrides:
            if "=" not in item:
                _fail("train_overrides[]", item, "each entry looks like key.sub=value")
        self.space.validate()
        self.pruner.validate()
        self.supernet.validate()
        self.trial_run_dict()  # the base config and the trial overrides must load and validate too
        return self

    # -- the base train config
    def base_path(self) -> Path:
        p = Path(self.base_config)
        if not p.is_absolute() and self.source:
            near = Path(self.source).parent / p
            if near.exists():
                return near
        if not p.exists() and p.name in {c.name for c in packaged_configs().values()}:
            return resolve_config(p)  # a packaged config's name (a copy of a packaged search config)
        return p

    def base_run_dict(self) -> Dict[str, Any]:
        """The base train config as a validated dict (no trial overrides)."""
        path = self.base_path()
        if not path.exists():
            raise ConfigError(f"base_config={self.base_config!r}: no such file (looked next to "
                              f"{self.source or 'the search config'} and in {os.getcwd()})")
        try:
            return config_to_dict(config_from_dict(load_config_dict(path)))
        except ConfigError as e:
            raise ConfigError(f"base_config {path}: {e}") from None

    def trial_run_dict(self) -> Dict[str, Any]:
        """The base train config with ``train_overrides`` applied (the short trial training)."""
        try:
            return config_to_dict(config_from_dict(apply_overrides(self.base_run_dict(), self.train_overrides)))
        except ConfigError as e:
            raise ConfigError(f"train_overrides: {e}") from None


def search_config_from_dict(data: Mapping[str, Any], source: str = "") -> SearchConfig:
    """A validated :class:`SearchConfig` from a plain dict; unknown keys and bad values raise
    :class:`~recsys_emb.config.ConfigError` naming the key, the value and what is allowed."""
    values = copy.deepcopy(dict(data))
    space = values.get("space")
    if isinstance(space, Mapping) and isinstance(space.get("dims"), Mapping):
        space = dict(space)
        space["dims"] = dataclass_from_dict(DimRange, space["dims"], "space.dims")
        values["space"] = space
        cfg = dataclass_from_dict(SearchConfig, {k: v for k, v in values.items() if k != "space"}, "")
        rest = {k: v for k, v in space.items() if k != "dims"}
        cfg.space = dataclass_from_dict(SpaceConfig, rest, "space")
        cfg.space.dims = space["dims"]
    else:
        if isinstance(space, Mapping) and "dims" in space and not isinstance(space["dims"], list):
            _fail("space.dims", space["dims"], "give a list of dims or {low, high, log}")
        cfg = dataclass_from_dict(SearchConfig, values, "")
    cfg.source = source or cfg.source
    return cfg.validate()


def load_search_config(path: Union[str, Path], overrides: Sequence[str] = ()) -> SearchConfig:
    """Read a search YAML, apply ``key=value`` overrides (e.g. ``budget_bytes=1e6``), validate."""
    path = resolve_config(path)
    data = _read_yaml(Path(path))  # a YAML error (a tag that builds objects included) names the file and line
    data = apply_overrides(data, overrides)
    if isinstance(data.get("budget_bytes"), float):
        data["budget_bytes"] = int(data["budget_bytes"])
    return search_config_from_dict(data, source=str(path))
