"""Studies and workers: the storage URL, :func:`open_study` (an RDB storage with heartbeats and retry of
killed trials; workers racing to create the schema retry), and :func:`search`, one worker's loop.

One worker or many: every worker runs :func:`search` (or ``recsys-emb search``) on the same storage URL
and study name. See ``docs/search.md``.
"""

from __future__ import annotations

import logging
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Set, Tuple

from recsys_emb.config import check_plain_name
from recsys_emb.errors import ConfigError
from recsys_emb.search.callbacks import MaxTrainedTrialsCallback
from recsys_emb.search.config import SearchConfig
from recsys_emb.search.objective import _Objective
from recsys_emb.search.report import search_report
from recsys_emb.search.retrain import retrain_top

__all__ = ["default_storage", "grace_period", "normalize_storage_url", "open_study", "enqueue_uniform", "search"]

logger = logging.getLogger(__name__)

_Direction = Literal["minimize", "maximize"]  # what optuna.create_study accepts


def grace_period(config: SearchConfig) -> int:
    """Seconds without a heartbeat after which a RUNNING trial is dead: ``config.grace_period``, default
    ``2 * heartbeat_interval + 2``."""
    return int(config.grace_period or 2 * config.heartbeat_interval + 2)


def default_storage(config: SearchConfig, study_name: str) -> str:
    """``sqlite:///<out_root>/<study_name>.db``: the storage of a study when none is given."""
    return f"sqlite:///{Path(config.out_root) / study_name}.db"


def normalize_storage_url(url: str) -> str:
    """The URL as Optuna's RDB storage should get it. SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; we
    pin psycopg2 (requirements.txt), so a URL without a driver goes to whichever of the two is installed.
    Other URLs are returned unchanged.

    Example:
        >>> normalize_storage_url("sqlite:///runs/dims.db")
        'sqlite:///runs/dims.db'
    """
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def open_study(config: SearchConfig, storage: Optional[str] = None, study_name: Optional[str] = None,
               seed: Optional[int] = None) -> Any:
    """Create or load (by name) the study, on an RDB storage with heartbeats and retry of killed trials.

    Args:
        config: the search config (sampler, pruner, mode, heartbeats).
        storage: an Optuna RDB URL; default ``config.storage`` or :func:`default_storage`.
        study_name: default ``config.study_name``; an existing study of that name is loaded.
        seed: the sampler's seed (``None``: a fresh one).

    Example:
        >>> from recsys_emb.search.config import load_search_config
        >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")
        >>> study = open_study(cfg, "sqlite:///:memory:", "doc")
        >>> study.study_name, [d.name for d in study.directions], type(study.sampler).__name__
        ('doc', ['MAXIMIZE'], 'TPESampler')
    """
    return _open(config, storage, study_name, seed)[0]


def _open(config: SearchConfig, storage: Optional[str], study_name: Optional[str],
          seed: Optional[int]) -> Tuple[Any, Any]:
    """(study, its RDB storage): :func:`open_study`, keeping the storage for the worker loop."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    name = study_name or config.study_name
    if not name:
        raise ConfigError("a study name is required: --study NAME or study_name in the search config")
    check_plain_name("--study" if study_name else "study_name", name, example="dims-dlrm")
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
                                 grace_period=grace_period(config),
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
    directions: List[_Direction] = ["maximize", "minimize"] if config.mode == "multi" else ["maximize"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # TPE's group, metric names
        study = _create_study(config, rdb, name, directions, seed)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study {name!r} in {url} has directions {[d.name.lower() for d in study.directions]}; "
                          f"mode={config.mode!r} needs {directions}: use another study name")
    return study, rdb


def _create_study(config: SearchConfig, rdb: Any, name: str, directions: List[_Direction], seed: Optional[int]) -> Any:
    import optuna

    kind = config.sampler if config.sampler != "auto" else ("nsga2" if config.mode == "multi" else "tpe")
    sampler: optuna.samplers.BaseSampler
    if kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                             n_startup_trials=max(4, min(10, config.n_trials // 3)))
    elif kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, config.n_trials // 3)))
    p = config.pruner
    pruner: optuna.pruners.BasePruner
    if config.mode == "multi" or p.kind == "none":
        pruner = optuna.pruners.NopPruner()
    elif p.kind == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps)
    else:
        run = config.trial_run_dict()["train"]
        every = run["eval_every"]  # steps between reports; "auto" (each epoch) is not known here: 1
        first = every if isinstance(every, int) and every > 0 else 1  # the first rung: the first report
        if p.kind == "successive_halving":
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=p.reduction_factor)
        else:
            pruner = optuna.pruners.HyperbandPruner(min_resource=first, max_resource=run["max_steps"] or "auto",
                                                    reduction_factor=p.reduction_factor)
    study = optuna.create_study(storage=rdb, study_name=name, directions=directions, sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    if len(study.directions) == len(directions):
        study.set_metric_names(["valid_auc", "bytes"] if config.mode == "multi" else ["valid_auc"])
    return study


def _best_value(study: Any) -> Optional[float]:
    from optuna.trial import TrialState

    vals = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(vals) if vals else None


def _fail_stale(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _DeadTrials:
    """Fails the RUNNING trials of dead workers, so that the storage's retry callback requeues them.

    Optuna's rule (``fail_stale_trials``): a RUNNING trial whose last heartbeat is older than the grace
    period is dead. A trial whose worker died between creating it and its first heartbeat has none, and
    that rule never fails it; once this worker has watched such a trial RUNNING for a grace period, it
    records one heartbeat for it, so that the rule applies from then on. A live trial beats on its own and
    is unaffected.
    """

    def __init__(self, study: Any, storage: Any, grace: int) -> None:
        self.study = study
        self.storage = storage
        self.grace = grace
        self.running: Dict[int, float] = {}  # RUNNING trial number -> when this worker first saw it
        self._beaten: Set[int] = set()

    def fail(self) -> None:
        from optuna.trial import TrialState

        _fail_stale(self.study)
        now = time.monotonic()
        numbers = [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        self.running = {n: self.running.get(n, now) for n in numbers}
        for n, since in self.running.items():
            if n not in self._beaten and now - since > self.grace:
                study_id = self.storage.get_study_id_from_name(self.study.study_name)
                self.storage.record_heartbeat(self.storage.get_trial_id_from_study_id_trial_number(study_id, n))
                self._beaten.add(n)


def enqueue_uniform(study: Any, objective: _Objective) -> List[str]:
    """Queue the uniform configurations at the budget (:meth:`_Objective.uniform`) as the study's next
    trials, each with user attributes ``uniform`` (its label) and ``embeddings`` (its choices), unless the
    study already holds a trial of that label (a resumed study, another worker). Returns the labels queued.

    Two workers that start on an empty study in the same instant may both queue them; the second copy of a
    uniform trial then trains once more (and counts towards ``n_trials``)."""
    seen = {t.user_attrs.get("uniform") for t in study.get_trials(deepcopy=False)}
    queued = []
    for label, choices, n_bytes in objective.uniform():
        if label in seen:
            continue
        study.enqueue_trial({}, user_attrs={"uniform": label, "embeddings": choices})
        queued.append(label)
        logger.info("queued the uniform trial %s (%d bytes, %.1f%% of the budget)", label, n_bytes,
                    100 * n_bytes / objective.config.budget_bytes)  # type: ignore[operator]
    return queued


def search(config: SearchConfig, storage: Optional[str] = None, study_name: Optional[str] = None,
           n_trials: Optional[int] = None) -> Any:
    """Run one search worker until the study holds ``n_trials`` trained trials; write the report; return the
    study.

    Start the same call (or ``recsys-emb search``) in several processes or machines on one storage URL to
    add workers. ``n_trials`` counts the study's trained trials (COMPLETE, or PRUNED on AUC) across all
    workers; over-budget trials are not trained and not counted.

    - A worker starts a trial only while trained plus RUNNING trials are fewer than ``n_trials``, and checks
      again once its trial is numbered: of two workers that start the last trial at the same instant, the
      later-numbered trial is recorded as PRUNED with user attribute ``surplus`` and not trained
      (:class:`~recsys_emb.search.callbacks.MaxTrainedTrialsCallback`). So the study never holds more than
      ``n_trials`` trained trials.
    - A worker returns only once ``n_trials`` trials have *finished* training. While the count is reached
      only thanks to RUNNING trials it waits, polling the storage every ``heartbeat_interval``: a RUNNING
      trial may belong to a worker that was killed (it looks alive until ``grace_period`` seconds after its
      last heartbeat). Such a trial is then failed and requeued with the same parameters, and this worker
      runs it (past ``max_retries`` retries, a new trial takes its place). So a worker never ends with fewer
      than ``n_trials`` trained trials in the study unless the user stops it or it gives up after
      ``max_over_budget_trials`` over-budget trials (a warning says so).

    The report (``best.yaml``, ``trials.csv``, plot) is written from the storage when the worker returns,
    so it covers all ``n_trials`` trained trials.

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
    study, rdb = _open(config, storage, name, seed=config.seed)
    out = Path(config.out_root) / study.study_name
    out.mkdir(parents=True, exist_ok=True)
    trials = MaxTrainedTrialsCallback(total, max_over_budget=config.max_over_budget_trials)
    objective = _Objective(config, study.study_name, out, trials)
    dead = _DeadTrials(study, rdb, grace_period(config))
    if config.uniform_trials and config.mode == "single" and config.budget_bytes is not None:
        enqueue_uniform(study, objective)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"search {name}", unit="trial", disable=not (config.progress and sys.stderr.isatty()))

    def progress(study: Any, trial: Any = None) -> None:
        if bar.disable:  # no terminal: spare the storage the reads
            return
        c = trials.count(study)
        bar.n = min(c.trained, total)
        best = _best_value(study)
        bar.set_postfix({**({"best_auc": f"{best:.4f}"} if best is not None else {}), "running": c.running})
        bar.refresh()

    waiting_for: Optional[List[int]] = None
    try:
        while True:
            dead.fail()
            progress(study)
            counts = trials.count(study)
            if counts.trained >= total or trials.gave_up:
                break
            if counts.trained + counts.running < total:
                waiting_for = None
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    # no n_trials: the callback stops the loop once trained + running trials fill the study
                    study.optimize(objective, callbacks=[trials, progress], gc_after_trial=True)
                continue
            # Full only thanks to RUNNING trials, and a RUNNING trial may belong to a dead worker (killed
            # within the grace period: it still looks alive). Wait until each finishes or goes stale.
            if sorted(dead.running) != waiting_for:
                waiting_for = sorted(dead.running)
                logger.info("waiting for %d running trial(s) %s: the study holds %d of %d trained trials; a trial "
                            "whose worker died is failed %d s after its last heartbeat and retried here",
                            len(waiting_for), waiting_for, counts.trained, total, dead.grace)
            time.sleep(config.heartbeat_interval)
    finally:
        bar.close()
    if config.retrain_top and not trials.gave_up:
        retrain_top(study, config, out)
    search_report(study, config)
    return study
