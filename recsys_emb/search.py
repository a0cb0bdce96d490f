"""Optuna search of per-field embedding dimensions (and optionally variants) under a memory budget.

One worker or many: every worker runs :func:`search` (or ``recsys-emb search``) on the same storage URL
and study name. See ``docs/search.md``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import logging
import math
import os
import random
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from recsys_emb.config import ConfigError, RunConfig, apply_overrides, dataclass_from_dict, config_from_dict, config_to_dict, load_config_dict
from recsys_emb.presets import qr_buckets
from recsys_emb.specs import DIM_MULTIPLE

__all__ = ["DimRange", "PrunerConfig", "SpaceConfig", "SearchConfig", "load_search_config", "search_config_from_dict",
           "open_study", "search", "search_report", "trial_run_config", "normalize_storage_url", "best_trial", "SEARCH_VARIANTS"]

logger = logging.getLogger(__name__)

SEARCH_VARIANTS = ("full", "hashed", "multi_hash", "qr", "mixed", "unified")
"""Variants a group may choose from (``space.variants``)."""
MIXED_SEARCH_BLOCKS = 4
"""Frequency blocks per field of a searched ``mixed`` group when the base config is field-level."""

_SAMPLERS = ("auto", "tpe", "random", "nsga2")
_PRUNERS = ("median", "hyperband", "none")
_MODES = ("single", "multi")
_UNGROUPED = ("each", "one", "fixed")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed; {allowed}")


def _dim_ok(key: str, d: Any) -> None:
    if isinstance(d, bool) or not isinstance(d, int) or d < DIM_MULTIPLE or d % DIM_MULTIPLE:
        _fail(key, d, f"dims must be positive multiples of {DIM_MULTIPLE} (FBGEMM's fused kernels need it)")


# ----------------------------------------------------------------------------------------------- config
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


@dataclass
class SpaceConfig:
    """What a trial chooses, per group of fields.

    Attributes:
        dims: a list of dims (categorical choice) or ``{low, high, log}`` (integer range, multiples of 4).
        groups: ``{group name: [field, ...]}``; a group's fields share one choice.
        ungrouped: fields in no group: ``each`` (default: one group per field, named after it),
            ``one`` (all of them form one group named ``rest``) or ``fixed`` (not searched; they keep the
            base config's embedding).
        variants: variants a group chooses from (``[]`` = keep the base config's variant for every
            field, only dims are searched). Any of ``SEARCH_VARIANTS``; small fields (fewer ids than the
            base config's ``embeddings.min_rows``) always stay full tables.
        compression: choices of rows kept per field (1/compression) for hashed, multi_hash, qr, unified.
        alpha: choices of the mixed-dimension power.
        chunks: choices of chunks for unified groups (the group's shared table has ``dim / chunks``
            columns, rounded down to a multiple of 4).
    """

    dims: Union[List[int], DimRange] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    groups: Dict[str, List[str]] = field(default_factory=dict)
    ungrouped: str = "each"
    variants: List[str] = field(default_factory=list)
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
            if v not in SEARCH_VARIANTS:
                _fail("space.variants[]", v, f"choose from {list(SEARCH_VARIANTS)}")
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

    ``kind``: ``median`` (MedianPruner: ``startup_trials`` unpruned trials, ``warmup_steps`` steps before
    pruning), ``hyperband`` (HyperbandPruner over steps, ``reduction_factor``) or ``none``."""

    kind: str = "median"
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
        keep_checkpoints: keep the trials' training checkpoints (default: deleted after the trial).
        progress: tqdm bar over trials on a TTY.
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
    keep_checkpoints: bool = False
    progress: bool = True
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
        for item in self.train_overrides:
            if "=" not in item:
                _fail("train_overrides[]", item, "each entry looks like key.sub=value")
        self.space.validate()
        self.pruner.validate()
        self.trial_run_dict()  # the base config and the trial overrides must load and validate too
        return self

    # -- the base train config
    def base_path(self) -> Path:
        p = Path(self.base_config)
        if not p.is_absolute() and self.source:
            near = Path(self.source).parent / p
            if near.exists():
                return near
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
    data = copy.deepcopy(dict(data))
    space = data.get("space")
    if isinstance(space, Mapping) and isinstance(space.get("dims"), Mapping):
        space = dict(space)
        space["dims"] = dataclass_from_dict(DimRange, space["dims"], "space.dims")
        data["space"] = space
        cfg = dataclass_from_dict(SearchConfig, {k: v for k, v in data.items() if k != "space"}, "")
        rest = {k: v for k, v in space.items() if k != "dims"}
        cfg.space = dataclass_from_dict(SpaceConfig, rest, "space")
        cfg.space.dims = space["dims"]
    else:
        if isinstance(space, Mapping) and "dims" in space and not isinstance(space["dims"], list):
            _fail("space.dims", space["dims"], "give a list of dims or {low, high, log}")
        cfg = dataclass_from_dict(SearchConfig, data, "")
    cfg.source = source or cfg.source
    return cfg.validate()


def load_search_config(path: Union[str, Path], overrides: Sequence[str] = ()) -> SearchConfig:
    """Read a search YAML, apply ``key=value`` overrides (e.g. ``budget_bytes=1e6``), validate."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a search config must be a mapping")
    data = apply_overrides(data, overrides)
    if isinstance(data.get("budget_bytes"), float):
        data["budget_bytes"] = int(data["budget_bytes"])
    return search_config_from_dict(data, source=str(path))


# ----------------------------------------------------------------------------------------------- trials
def _load_schema(cfg: RunConfig) -> Any:
    from recsys_emb.data.parquet import TableSchema, read_metadata
    from recsys_emb.training import prepare_data

    path = Path(cfg.data.path)
    if not (path / "metadata.json").exists():
        # several workers on one machine may start together: one generates, the others wait
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(path) + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            prepare_data(cfg)
    return TableSchema.from_dict(read_metadata(path)["schema"])


def _field_groups(space: SpaceConfig, fields: Sequence[str]) -> Dict[str, List[str]]:
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


def _suggest_dim(trial: Any, space: SpaceConfig, group: str) -> int:
    if isinstance(space.dims, DimRange):
        r = space.dims
        units = trial.suggest_int(f"dim_units:{group}", r.low // DIM_MULTIPLE, r.high // DIM_MULTIPLE, log=r.log)
        return int(units) * DIM_MULTIPLE
    return int(trial.suggest_categorical(f"dim:{group}", sorted(space.dims)))


def _group_embeddings(trial: Any, space: SpaceConfig, group: str, fields: Sequence[str],
                      cards: Mapping[str, int], base: Dict[str, Any]) -> Tuple[Dict[str, int], Dict[str, Dict[str, Any]]]:
    """(dims, overrides) of one group's fields for a trial."""
    dim = _suggest_dim(trial, space, group)
    if not space.variants:
        return {f: dim for f in fields}, {}
    variant = trial.suggest_categorical(f"variant:{group}", list(space.variants))
    min_rows = int(base["embeddings"]["min_rows"])
    dims: Dict[str, int] = {}
    overrides: Dict[str, Dict[str, Any]] = {}
    compression = alpha = chunks = None
    if variant in ("hashed", "multi_hash", "qr", "unified"):
        compression = float(trial.suggest_categorical(f"compression:{group}", list(space.compression)))
    if variant == "mixed":
        alpha = float(trial.suggest_categorical(f"alpha:{group}", list(space.alpha)))
    if variant == "unified":
        chunks = int(trial.suggest_categorical(f"chunks:{group}", list(space.chunks)))
        chunk_dim = max(DIM_MULTIPLE, (dim // chunks) // DIM_MULTIPLE * DIM_MULTIPLE)
        rows = sum(max(1, math.ceil(cards[f] / compression)) if cards[f] >= min_rows else cards[f] for f in fields)
        table = {"name": f"unified_{group}", "rows": max(1, rows), "chunk_dim": chunk_dim}
        for f in fields:
            overrides[f] = {"type": "unified", "group": dict(table), "chunks": chunks}
        return dims, overrides
    for f in fields:
        if variant == "full" or cards[f] < min_rows:
            dims[f] = dim
            overrides[f] = {"type": "full", "dim": dim}
            continue
        buckets = max(1, math.ceil(cards[f] / compression)) if compression else None
        if variant == "hashed":
            overrides[f] = {"type": "hashed", "dim": dim, "buckets": buckets}
        elif variant == "multi_hash":
            overrides[f] = {"type": "hashed", "dim": dim, "buckets": buckets,
                            "num_hashes": int(base["embeddings"]["num_hashes"])}
        elif variant == "qr":
            op = base["embeddings"]["qr_op"]
            qdim = dim if op != "concat" or dim % (2 * DIM_MULTIPLE) == 0 else dim + DIM_MULTIPLE
            overrides[f] = {"type": "qr", "dim": qdim, "op": op,
                            "buckets": qr_buckets(cards[f], compression, op) if compression else None}
        else:  # mixed
            # frequency blocks inside each field: with the field-level form (num_blocks 1) the dim per
            # field is what the search itself chooses, so its alpha would have nothing to act on
            blocks = int(base["embeddings"]["num_blocks"])
            overrides[f] = {"type": "mixed", "base_dim": dim, "alpha": alpha,
                            "num_blocks": blocks if blocks > 1 else MIXED_SEARCH_BLOCKS}
        dims[f] = dim
    return dims, overrides


def trial_run_config(config: SearchConfig, choices: Mapping[str, Any], run_dict: Optional[Dict[str, Any]] = None,
                     out_dir: Optional[str] = None, name: Optional[str] = None) -> RunConfig:
    """A RunConfig from a train config dict and a trial's ``{"dims": ..., "overrides": ...}``."""
    data = copy.deepcopy(run_dict if run_dict is not None else config.trial_run_dict())
    emb = data["embeddings"]
    emb["dims"] = {**emb.get("dims", {}), **dict(choices.get("dims", {}))}
    emb["overrides"] = {**emb.get("overrides", {}), **copy.deepcopy(dict(choices.get("overrides", {})))}
    for f in choices.get("overrides", {}):  # an override wins over a dim for the same field
        emb["dims"].pop(f, None)
    if out_dir is not None:
        data["train"]["out_dir"] = out_dir
    if name is not None:
        data["name"] = name
    return config_from_dict(data)


class _Objective:
    """``objective(trial)``: trial choices -> bytes (from specs, before anything is built) -> short training."""

    def __init__(self, config: SearchConfig, study_name: str, out: Path) -> None:
        from recsys_emb.training import build_features

        self.config = config
        self.out = out
        self.multi = config.mode == "multi"
        self.run_dict = config.trial_run_dict()
        self.run_dict["train"]["progress"] = False
        self.run_dict["train"]["checkpoint_every"] = 0
        self.study_name = study_name
        base_cfg = config_from_dict(self.run_dict)
        self.schema = _load_schema(base_cfg)
        self.cards = {k: int(self.schema.vocab_sizes[k]) for k in (*self.schema.sparse, *self.schema.jagged)}
        fields = list(self.schema.sparse) + list(self.schema.jagged)
        self.groups = _field_groups(config.space, fields)
        self._build_features = build_features
        self.over_budget_seen = 0
        self.total: Optional[int] = None  # the study's n_trials, set by search()

    def choices(self, trial: Any) -> Dict[str, Any]:
        dims: Dict[str, int] = {}
        overrides: Dict[str, Dict[str, Any]] = {}
        for g, fields in self.groups.items():
            d, o = _group_embeddings(trial, self.config.space, g, fields, self.cards, self.run_dict)
            dims.update(d)
            overrides.update(o)
        return {"dims": dims, "overrides": overrides}

    def bytes_of(self, cfg: RunConfig) -> int:
        from recsys_emb.memory import memory_from_specs

        specs, _ = self._build_features(cfg, self.schema)
        return int(memory_from_specs(specs).bytes)

    def __call__(self, trial: Any) -> Union[float, Tuple[float, float]]:
        import shutil

        import optuna

        from recsys_emb.training import train

        choices = self.choices(trial)
        trial_dir = self.out / f"trial_{trial.number}"
        cfg = trial_run_config(self.config, choices, self.run_dict, out_dir=str(trial_dir),
                               name=f"{self.study_name}-trial-{trial.number}")
        n_bytes = self.bytes_of(cfg)
        trial.set_user_attr("bytes", n_bytes)
        trial.set_user_attr("embeddings", choices)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        budget = self.config.budget_bytes
        if budget is not None:
            # Recorded as a constraint too (> 0 = infeasible), which Optuna 5's samplers read, so a
            # trial over budget can never be the best one.
            trial.set_constraint("bytes_over_budget", float(n_bytes - budget))
        over = budget is not None and n_bytes > budget
        trial.set_user_attr("over_budget", bool(over))
        if over:
            self.over_budget_seen += 1
            logger.info("trial %d: %d bytes > budget %d; not trained", trial.number, n_bytes, budget)
            raise optuna.TrialPruned(f"{n_bytes} bytes over the budget of {budget}")
        if self.total is not None and _trained_before(trial) >= self.total:
            # Another worker started the last trial between this worker's count and this trial's
            # creation: the study already holds n_trials trained trials, so this one is not trained.
            trial.set_user_attr("surplus", True)
            logger.info("trial %d: the study already holds %d trained trials; not trained", trial.number, self.total)
            raise optuna.TrialPruned(f"surplus: the study already holds n_trials={self.total} trained trials")

        def on_eval(step: int, metrics: Dict[str, Any]) -> None:
            auc = float(metrics["auc"])
            if self.multi:  # Optuna does not prune multi-objective trials: keep a record only
                trial.set_user_attr(f"valid_auc_step_{step}", auc)
                return
            if math.isfinite(auc):
                trial.report(auc, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                raise optuna.TrialPruned(f"valid AUC {auc:.4f} at step {step}")

        try:
            summary = train(cfg, on_eval=on_eval)
        finally:
            if not self.config.keep_checkpoints:
                shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
        auc = float(summary["valid"]["auc"])
        trial.set_user_attr("test_auc", float(summary["test"]["auc"]))
        trial.set_user_attr("valid_logloss", float(summary["valid"]["logloss"]))
        trial.set_user_attr("trained_bytes", int(summary["embedding_bytes"]))
        if "ceiling_auc" in summary["test"]:
            trial.set_user_attr("test_ceiling_auc", float(summary["test"]["ceiling_auc"]))
        if int(summary["embedding_bytes"]) != n_bytes:
            logger.warning("trial %d: bytes from specs %d != bytes of the trained model %d", trial.number, n_bytes,
                           summary["embedding_bytes"])
        return (auc, float(n_bytes)) if self.multi else auc


# ----------------------------------------------------------------------------------------------- study
def default_storage(config: SearchConfig, study_name: str) -> str:
    return f"sqlite:///{Path(config.out_root) / study_name}.db"


def normalize_storage_url(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; we pin psycopg2 (requirements.txt), so a URL
    without a driver goes to whichever of the two is installed."""
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def open_study(config: SearchConfig, storage: Optional[str] = None, study_name: Optional[str] = None,
               seed: Optional[int] = None) -> Any:
    """Create or load (by name) the study, on an RDB storage with heartbeats and retry of killed trials."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    name = study_name or config.study_name
    if not name:
        raise ConfigError("a study name is required: --study NAME or study_name in the search config")
    url = normalize_storage_url(storage or config.storage or default_storage(config, name))
    engine_kwargs: Dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        db = url[len("sqlite:///"):]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        # several worker processes on one file: wait for the lock instead of failing
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=config.heartbeat_interval,
                                 grace_period=config.grace_period or 2 * config.heartbeat_interval + 2,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                     max_retry=config.max_retries))
            break
        except Exception as e:  # noqa: BLE001 - see below
            # Workers that start together on an empty database race to create Optuna's schema
            # (PostgreSQL: "type studydirection already exists"); the loser retries and finds it made.
            if attempt == 5 or "sqlalchemy" not in type(e).__module__:
                raise
            logger.info("storage set-up raced another worker (%s); retrying", type(e).__name__)
            time.sleep(0.5 + random.random() * (attempt + 1))
    directions = ["maximize", "minimize"] if config.mode == "multi" else ["maximize"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # TPE's group, metric names
        study = _create_study(config, rdb, name, directions, seed)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study {name!r} in {url} has directions {[d.name.lower() for d in study.directions]}; "
                          f"mode={config.mode!r} needs {directions}: use another study name")
    return study


def _create_study(config: SearchConfig, rdb: Any, name: str, directions: List[str], seed: Optional[int]) -> Any:
    import optuna

    kind = config.sampler if config.sampler != "auto" else ("nsga2" if config.mode == "multi" else "tpe")
    if kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                             n_startup_trials=max(4, min(10, config.n_trials // 3)))
    elif kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, config.n_trials // 3)))
    p = config.pruner
    if config.mode == "multi" or p.kind == "none":
        pruner = optuna.pruners.NopPruner()
    elif p.kind == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    else:
        run = config.trial_run_dict()["train"]
        pruner = optuna.pruners.HyperbandPruner(min_resource=max(1, run["eval_every"] or 1),
                                                max_resource=run["max_steps"] or "auto",
                                                reduction_factor=p.reduction_factor)
    study = optuna.create_study(storage=rdb, study_name=name, directions=directions, sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    if len(study.directions) == len(directions):
        study.set_metric_names(["valid_auc", "bytes"] if config.mode == "multi" else ["valid_auc"])
    return study


def _not_trained(t: Any) -> bool:
    """Over budget, or a surplus trial stopped before training (user attributes set by the objective)."""
    return bool(t.user_attrs.get("over_budget") or t.user_attrs.get("surplus"))


def _counted(study: Any) -> Tuple[int, int]:
    """(trained trials finished or running, trials never trained) of the study."""
    from optuna.trial import TrialState

    done = over = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if t.state == TrialState.PRUNED and _not_trained(t):
            over += 1
        else:
            done += 1
    return done, over


def _trained_before(trial: Any) -> int:
    """Trained trials (finished or running) numbered below ``trial``: the storage numbers trials
    atomically, so of two workers that both saw ``n_trials - 1`` and each started a trial, exactly
    the later-numbered one sees ``n_trials`` here. A running trial not yet known to be over budget
    counts (if it turns out over budget, the worker's loop starts another trial)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(1 for t in trial.study.get_trials(deepcopy=False, states=states)
               if t.number < trial.number and not _not_trained(t))


def _best_value(study: Any) -> Optional[float]:
    from optuna.trial import TrialState

    vals = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(vals) if vals else None


def _fail_stale(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def search(config: SearchConfig, storage: Optional[str] = None, study_name: Optional[str] = None,
           n_trials: Optional[int] = None) -> Any:
    """Run one search worker until the study holds ``n_trials`` trained trials; return the study.

    Start the same call (or ``recsys-emb search``) in several processes or machines on one storage URL to
    add workers. ``n_trials`` counts the study's trained trials (COMPLETE, or PRUNED on AUC) across all
    workers, running ones included; over-budget trials are not trained and not counted. A worker checks the
    count before each trial and again once its trial is numbered: of two workers that start the last trial
    at the same instant, the later-numbered trial is recorded as PRUNED with user attribute ``surplus`` and
    not trained, so the study holds exactly ``n_trials`` trained trials.

    Args:
        config: the search config (:func:`load_search_config`).
        storage: an Optuna RDB URL (``sqlite:///runs/x.db``, ``postgresql://user@host/db``); default
            ``config.storage`` or ``sqlite:///<out_root>/<study>.db``.
        study_name: default ``config.study_name``; an existing study of that name is resumed.
        n_trials: default ``config.n_trials``.

    Example:
        >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")  # doctest: +SKIP
        >>> study = search(cfg, study_name="dims", n_trials=30)  # doctest: +SKIP
        >>> study.best_trial.user_attrs["bytes"] <= cfg.budget_bytes  # doctest: +SKIP
        True
    """
    import optuna

    name = study_name or config.study_name
    total = int(n_trials or config.n_trials)
    study = open_study(config, storage, name, seed=config.seed)
    out = Path(config.out_root) / study.study_name
    out.mkdir(parents=True, exist_ok=True)
    objective = _Objective(config, study.study_name, out)
    objective.total = total
    _fail_stale(study)
    show = config.progress and sys.stderr.isatty()
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=min(total, _counted(study)[0]), disable=not show, desc=f"search {name}",
               unit="trial")
    try:
        while True:
            _fail_stale(study)
            done, over = _counted(study)
            bar.n = min(done, total)
            best = _best_value(study)
            if best is not None:
                bar.set_postfix(best_auc=f"{best:.4f}")
            bar.refresh()
            if done >= total:
                break
            if objective.over_budget_seen >= config.max_over_budget_trials:
                logger.warning("stopping: %d over-budget trials in this worker (max_over_budget_trials); "
                               "the space is mostly over budget", objective.over_budget_seen)
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, n_trials=1, gc_after_trial=True)
    finally:
        bar.close()
    search_report(study, config)
    return study


# ----------------------------------------------------------------------------------------------- outputs
@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    yield tmp
    os.replace(tmp, path)


def _pareto(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the (auc up, bytes down) non-dominated points."""
    out = []
    for i, (a, b) in enumerate(points):
        if not any((a2 >= a and b2 <= b) and (a2 > a or b2 < b) for a2, b2 in points):
            out.append(i)
    return out


def best_trial(study: Any, config: SearchConfig) -> Optional[Any]:
    """The highest-AUC completed trial within the budget (in multi mode: of the Pareto front)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if config.budget_bytes is None or t.user_attrs.get("bytes", math.inf) <= config.budget_bytes]
    return max(done, key=lambda t: (t.values[0], -t.user_attrs.get("bytes", 0)), default=None)


def search_report(study: Any, config: SearchConfig, out_dir: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Write ``best.yaml`` (a train config: the base config with the best trial's embeddings),
    ``trials.csv`` and ``history.png`` (single) or ``pareto.png`` (multi) into ``out_dir``
    (default ``<out_root>/<study>``). Returns the paths and the best trial's numbers."""
    out = Path(out_dir or Path(config.out_root) / study.study_name)
    out.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"out_dir": str(out)}
    df = study.trials_dataframe(attrs=("number", "state", "value", "values", "params", "user_attrs",
                                       "datetime_start", "duration", "system_attrs"))
    drop = [c for c in df.columns if c in ("user_attrs_embeddings",) or c.startswith("system_attrs_constraints")]
    df = df.drop(columns=drop)
    with _atomic(out / "trials.csv") as tmp:
        df.to_csv(tmp, index=False)
    result["trials_csv"] = str(out / "trials.csv")
    best = best_trial(study, config)
    if best is not None:
        cfg = trial_run_config(config, best.user_attrs["embeddings"], config.base_run_dict(),
                               out_dir=str(out / "best"), name=f"{study.study_name}-best")
        data = config_to_dict(cfg)
        header = (f"# Best trial {best.number} of study {study.study_name!r}: valid AUC {best.values[0]:.4f} "
                  f"(short trial training), {best.user_attrs['bytes']:,} embedding bytes.\n"
                  f"# Run: recsys-emb train --config {out / 'best.yaml'}\n")
        with _atomic(out / "best.yaml") as tmp:
            tmp.write_text(header + yaml.safe_dump(data, sort_keys=False))
        result.update(best_yaml=str(out / "best.yaml"), best_number=best.number, best_auc=best.values[0],
                      best_bytes=best.user_attrs["bytes"], best_dims=best.user_attrs["embeddings"]["dims"])
    result["plot"] = _plot(study, config, out)
    return result


def _plot(study: Any, config: SearchConfig, out: Path) -> Optional[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    aucs = [t.values[0] for t in done]
    nbytes = [t.user_attrs.get("bytes", float("nan")) for t in done]
    multi = config.mode == "multi"
    fig, axes = plt.subplots(1, 1 if multi else 2, figsize=(6 if multi else 11, 4.2))
    axes = [axes] if multi else list(axes)
    if not multi:
        ax = axes[0]
        nums = [t.number for t in done]
        ax.scatter(nums, aucs, s=14, label="completed trial")
        best_so_far = [max(aucs[: i + 1]) for i in range(len(aucs))]
        ax.step(nums, best_so_far, where="post", color="C3", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel("valid AUC")
        ax.set_title(f"{study.study_name}: history")
        ax.legend(loc="lower right")
    ax = axes[-1]
    front = _pareto(list(zip(aucs, nbytes)))
    ax.scatter(nbytes, aucs, s=14, color="C0", alpha=0.6, label="completed trial")
    fb = sorted((nbytes[i], aucs[i]) for i in front)
    ax.plot([b for b, _ in fb], [a for _, a in fb], "o-", color="C3", label="Pareto front")
    if config.budget_bytes is not None:
        ax.axvline(config.budget_bytes, color="gray", ls="--", label="budget")
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes")
    ax.set_ylabel("valid AUC")
    ax.set_title(f"{study.study_name}: AUC vs bytes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / ("pareto.png" if multi else "history.png")
    with _atomic(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return str(path)
