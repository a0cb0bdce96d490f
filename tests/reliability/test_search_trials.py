"""A search never ends with fewer trained trials than asked: a worker SIGKILLed mid-trial and restarted at
once, while its killed trial is still RUNNING in the storage (its heartbeat not yet stale), must not count
that trial as one that will finish. Real worker processes on a real SQLite storage.

No wall-clock guess decides a test here: the grace period is an hour, so the restarted worker finds the
killed trial alive however slowly it starts; once it logs that it waits for that trial, the test ages the
trial's heartbeat in the storage (what an hour without a heartbeat would show) and the worker fails and
retries it at its next poll."""

import os
import signal

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search_helpers import (backdate_heartbeat, finish, make_tiny_data, read_until, trained_trials, wait_for_trial,
                            worker, write_configs)

GRACE = 3600
"""Seconds without a heartbeat before a RUNNING trial is stale: far longer than any start-up, so that the
restarted worker opens the study while the killed trial still looks alive (the test then ages it)."""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("search-data"))


def test_worker_restarted_right_after_a_kill_ends_with_all_trials(tiny_data, tmp_path):
    # trials of 60 steps: long enough to be caught RUNNING; no pruning, a loose budget: every trial trains
    config = write_configs(tmp_path, tiny_data, budget_bytes=10**9, pruner={"kind": "none"}, seed=None,
                           train_overrides=["train.max_steps=60", "train.eval_every=20"],
                           heartbeat_interval=1, grace_period=GRACE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = worker(config, storage, "restart", 2)

    def second_trial_training(trials):
        # a trial trains once its worker attribute is set (after its bytes are counted)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
        return running[0] if done and running else None

    try:
        killed = wait_for_trial(storage, "restart", "one trial complete and a second one training",
                                second_trial_training, procs=[first])
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
    first.communicate()
    study = optuna.load_study(study_name="restart", storage=storage)
    assert study.get_trials()[killed.number].state == TrialState.RUNNING  # looks alive for GRACE seconds

    restarted = worker(config, storage, "restart", 2, verbose=True)
    try:
        # the handshake: the restarted worker counts the killed trial as running and waits for it
        before = read_until(restarted, "waiting for 1 running trial")
        assert f"[{killed.number}]" in before.splitlines()[-1], before[-2000:]
        backdate_heartbeat(storage, "restart", killed.number)
        out = before + finish(restarted)
    finally:
        restarted.kill()

    study = optuna.load_study(study_name="restart", storage=storage)
    trials = study.get_trials()
    trained = [t for t in trained_trials(study) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(trained) == 2, [(t.number, t.state.name, t.user_attrs.get("worker")) for t in trials]
    assert trials[killed.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["worker"].endswith(f":{restarted.pid}"), retry.user_attrs
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert "Traceback" not in out, out[-3000:]

    # best.yaml and trials.csv come from both trained trials
    out_dir = tmp_path / "runs" / "restart"
    best = max(trained, key=lambda t: t.value)
    header = (out_dir / "best.yaml").read_text().splitlines()[0]
    assert header.startswith(f"# Best trial {best.number} of study 'restart'"), header
    best_cfg = yaml.safe_load((out_dir / "best.yaml").read_text())
    assert best_cfg["embeddings"]["dims"] == best.user_attrs["embeddings"]["dims"]
    assert len((out_dir / "trials.csv").read_text().strip().splitlines()) == len(trials) + 1


def test_running_trial_that_never_beat_is_failed_and_retried(tiny_data, tmp_path):
    # a worker killed between creating its trial and the trial's first heartbeat leaves a RUNNING trial
    # with no heartbeat, which Optuna's staleness rule alone never fails
    import warnings

    from recsys_emb.search import load_search_config, open_study

    config = write_configs(tmp_path, tiny_data, budget_bytes=10**9, pruner={"kind": "none"},
                           heartbeat_interval=1, grace_period=2)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Heartbeat of storage is supposed to be used with optimize"
        orphan = open_study(load_search_config(config), storage, "orphan").ask()

    # the worker watches the orphan RUNNING for a grace period (2 s by its own clock), records a heartbeat
    # for it, and fails it once that heartbeat is a grace period old: the outcome depends on no timing
    # (a slower machine only waits longer), and no live worker's trial can go stale meanwhile
    finish(worker(config, storage, "orphan", 1))

    study = optuna.load_study(study_name="orphan", storage=storage)
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == orphan.number)
    assert retry.state == TrialState.COMPLETE
    assert [t.number for t in trained_trials(study) if t.state == TrialState.COMPLETE] == [retry.number]
    assert (tmp_path / "runs" / "orphan" / "best.yaml").exists()
