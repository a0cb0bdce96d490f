"""Search workers as real processes on one SQLite file: two share a study; one killed with SIGKILL mid-trial
leaves a study that another worker completes, the killed trial failed and retried with the same parameters.

The tests wait on what the storage shows (a trial training, owned by a given worker through its ``worker``
user attribute), never on a fixed sleep, and fail as soon as the worker they wait on exits (a hang guard,
tests/waiting.py, bounds the rest). The grace period of tests/configs/search_tiny.yaml is an hour, so no
live worker's trial goes stale on a loaded machine; a killed worker's trial is made stale by ageing its
heartbeat in the storage.
"""

import os
import signal

import optuna
import pytest
from optuna.trial import TrialState

from recsys_emb.search import normalize_storage_url
from recsys_emb.training import FAULT_HOLD_ENV
from search_helpers import backdate_heartbeat, finish, make_tiny_data, trained_trials, wait_for_trial, worker, write_configs


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("search-data"))


def owned_by(proc, trial) -> bool:
    """The trial is (or was) trained by ``proc``: its worker attribute, set once training starts, names it."""
    return trial.user_attrs.get("worker", "").endswith(f":{proc.pid}") and not trial.user_attrs.get("surplus")


def training_trial_of(proc):
    """For :func:`wait_for_trial`: a RUNNING trial that ``proc`` trains."""
    return lambda trials: next((t for t in trials if owned_by(proc, t) and t.state == TrialState.RUNNING), None)


def check_two_workers_share(config, storage: str, study_name: str, n_trials: int, tmp_path) -> optuna.Study:
    # The first worker is held after step 1 of its first trial until the second worker trains a trial
    # of its own: both train, however fast one of them starts.
    storage = normalize_storage_url(storage)
    release = tmp_path / "release-first-worker"
    first = worker(config, storage, study_name, n_trials, env={FAULT_HOLD_ENV: f"1:{release}"})
    try:
        wait_for_trial(storage, study_name, "a trial of the first worker training", training_trial_of(first),
                       procs=[first])
        second = worker(config, storage, study_name, n_trials)
        try:
            wait_for_trial(storage, study_name, "a trial of the second worker training", training_trial_of(second),
                           procs=[second])
            release.touch()
            outs = [finish(first), finish(second)]
        finally:
            second.kill()
    finally:
        first.kill()
    study = optuna.load_study(study_name=study_name, storage=storage)
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    done = trained_trials(study)
    assert len(done) == n_trials, outs
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials())
    pids = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in done}
    assert pids == {first.pid, second.pid}, f"trained trials by pids {pids}; workers {first.pid}, {second.pid}"
    return study


def test_two_workers_share_one_sqlite_study(tiny_data, tmp_path):
    # trials of 60 steps, with a loose budget so that all are trained
    config = write_configs(tmp_path, tiny_data, budget_bytes=10**9, train_overrides=["train.max_steps=60"],
                           pruner={"kind": "none"}, seed=None)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    check_two_workers_share(config, storage, "shared", n_trials=4, tmp_path=tmp_path)


def test_worker_killed_mid_trial_is_failed_and_retried(tiny_data, tmp_path):
    config = write_configs(tmp_path, tiny_data, budget_bytes=10**9, pruner={"kind": "none"})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # the first worker trains for ever (many epochs, no step limit) so that the kill lands mid-trial
    slow = worker(config, storage, "killed", 2, "--set", "train_overrides=[train.max_steps=100000, train.epochs=1000]")
    try:
        # mid-trial: training, and it has evaluated at least once (train.eval_every=10 steps)
        running = wait_for_trial(storage, "killed", "a trial of the slow worker reporting a valid AUC",
                                 lambda ts: next((t for t in ts if owned_by(slow, t) and t.state == TrialState.RUNNING
                                                  and t.intermediate_values), None),
                                 procs=[slow])
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait()
    finally:
        slow.kill()
    assert slow.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="killed", storage=storage)
    assert study.get_trials()[running.number].state == TrialState.RUNNING  # stuck until someone fails it
    backdate_heartbeat(storage, "killed", running.number)  # as it reads once the grace period has passed

    finish(worker(config, storage, "killed", 2))
    study = optuna.load_study(study_name="killed", storage=storage)
    trials = study.get_trials()
    failed = trials[running.number]
    assert failed.state == TrialState.FAIL and failed.params
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == 1
    retry = retries[0]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == running.number
    assert retry.state == TrialState.COMPLETE and retry.params == failed.params
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    assert (tmp_path / "runs" / "killed" / "best.yaml").exists()
