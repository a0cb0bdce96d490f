"""Trial accounting of a search: how many trained trials a study holds, and the Optuna callback that stops a
worker's ``study.optimize`` once the study is full (as ``optuna.study.MaxTrialsCallback``, counting only
trials that trained).

A trial is *trained* when it is COMPLETE, or PRUNED on its validation AUC. Trials the objective stops
before training do not count: over budget (user attribute ``over_budget``) or surplus (``surplus``: the
study was already full when the trial was numbered). RUNNING trials are counted apart, since a RUNNING
trial may still turn out over budget or die with its worker.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from recsys_emb.errors import ConfigError

__all__ = ["TrialCounts", "MaxTrainedTrialsCallback", "trained"]

logger = logging.getLogger(__name__)


def trained(trial: Any) -> bool:
    """Whether a finished (COMPLETE or PRUNED) trial trained: not stopped over budget or as surplus."""
    return not (trial.user_attrs.get("over_budget") or trial.user_attrs.get("surplus"))


class TrialCounts(NamedTuple):
    """Trials of a study by what they count for.

    Attributes:
        trained: finished trials that trained (COMPLETE, or PRUNED on AUC).
        running: RUNNING trials (trained if they finish, unless they turn out over budget or surplus,
            or their worker dies).
        untrained: PRUNED over budget or surplus.
    """

    trained: int
    running: int
    untrained: int


class MaxTrainedTrialsCallback:
    """Stop ``study.optimize`` once the study holds ``n_trials`` trained trials, running ones included, or once
    this worker has seen ``max_over_budget`` over-budget trials (a space almost entirely over budget).

    The same object tells the objective, once a new trial is numbered, whether the study was already full
    (:meth:`surplus`): trials are numbered atomically by the storage, so of two workers that both saw
    ``n_trials - 1`` and each started a trial, exactly the later-numbered one is surplus and is not trained.
    Together the two keep a study at exactly ``n_trials`` trained trials.

    Stopping on RUNNING trials is not the end of a search: a RUNNING trial may still die with its worker.
    :func:`~recsys_emb.search.search` therefore ends only when :meth:`count` says ``trained >= n_trials``.

    Args:
        n_trials: trained trials the study is to hold, all workers together.
        max_over_budget: over-budget trials this callback's worker tolerates before it stops.

    Example (an objective whose odd draws are "over budget"):
        >>> import optuna
        >>> def objective(trial):
        ...     x = trial.suggest_int("x", 0, 9)
        ...     if x % 2:
        ...         trial.set_user_attr("over_budget", True)
        ...         raise optuna.TrialPruned()
        ...     return float(x)
        >>> stop = MaxTrainedTrialsCallback(n_trials=3)
        >>> study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
        >>> study.optimize(objective, callbacks=[stop])  # no n_trials: the callback stops it
        >>> counts = stop.count(study)
        >>> counts.trained, counts.running, counts.untrained == len(study.trials) - 3
        (3, 0, True)
    """

    def __init__(self, n_trials: int, max_over_budget: int = 1000) -> None:
        if n_trials < 1:
            raise ConfigError(f"n_trials={n_trials} is not allowed; a study holds at least 1 trained trial")
        self.n_trials = int(n_trials)
        self.max_over_budget = int(max_over_budget)
        self.over_budget_seen = 0

    def count(self, study: Any) -> TrialCounts:
        """The study's :class:`TrialCounts`, read from the storage."""
        from optuna.trial import TrialState

        done = running = untrained = 0
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            if t.state == TrialState.RUNNING:
                running += 1
            elif t.state == TrialState.PRUNED and not trained(t):
                untrained += 1
            else:
                done += 1
        return TrialCounts(done, running, untrained)

    def full(self, study: Any) -> bool:
        """Trained trials plus RUNNING ones reach ``n_trials``: starting another trial would be too many."""
        c = self.count(study)
        return c.trained + c.running >= self.n_trials

    @property
    def gave_up(self) -> bool:
        """This worker has seen ``max_over_budget`` over-budget trials."""
        return self.over_budget_seen >= self.max_over_budget

    def surplus(self, trial: Any) -> bool:
        """Whether ``n_trials`` trials numbered below ``trial`` trained or are RUNNING (a RUNNING trial not yet
        known to be over budget counts: if it turns out over budget, a worker starts another trial)."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        below = sum(1 for t in trial.study.get_trials(deepcopy=False, states=states)
                    if t.number < trial.number and trained(t))
        return below >= self.n_trials

    def __call__(self, study: Any, trial: Any) -> None:
        if trial.user_attrs.get("over_budget"):
            self.over_budget_seen += 1
            if self.gave_up:
                logger.warning("stopping: %d over-budget trials in this worker (max_over_budget_trials); the space "
                               "is mostly over budget", self.over_budget_seen)
                study.stop()
                return
        if self.full(study):
            study.stop()
