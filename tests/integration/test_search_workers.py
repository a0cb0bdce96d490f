"""Search workers as real processes on one SQLite file: two share a study; one killed with SIGKILL mid-trial
leaves a study that another worker completes, the killed trial failed and retried with the same parameters."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from recsys_emb.search import normalize_storage_url
from search_helpers import make_tiny_data, trained_trials, write_configs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("search-data"))


def worker(config: Path, storage: str, study: str, n_trials: int, *extra: str) -> subprocess.Popen:
    """``recsys-emb search`` in a new process (the module form: works before cli.py registers it too)."""
    cmd = [sys.executable, "-m", "recsys_emb.cli", "search", "--config", str(config), "--storage", storage,
           "--study", study, "--n-trials", str(n_trials), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def check_two_workers_share(config: Path, storage: str, study_name: str, n_trials: int) -> optuna.Study:
    procs = [worker(config, storage, study_name, n_trials) for _ in range(2)]
    outs = [finish(p) for p in procs]
    study = optuna.load_study(study_name=study_name, storage=normalize_storage_url(storage))
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    done = trained_trials(study)
    assert len(done) == n_trials, outs
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials())
    workers = {t.user_attrs["worker"] for t in study.get_trials()}
    assert len(workers) == 2, f"one worker ran every trial: {workers}"
    return study


def test_two_workers_share_one_sqlite_study(tiny_data, tmp_path):
    # trials long enough (60 steps) that both workers get some, with a loose budget so all are trained
    config = write_configs(tmp_path, tiny_data, budget_bytes=10**9, train_overrides=["train.max_steps=60"],
                           pruner={"kind": "none"}, seed=None)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    check_two_workers_share(config, storage, "shared", n_trials=4)


def test_worker_killed_mid_trial_is_failed_and_retried(tiny_data, tmp_path):
    config = write_configs(tmp_path, tiny_data, budget_bytes=10**9, pruner={"kind": "none"})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # the first worker trains for ever (many epochs, no step limit) so that the kill lands mid-trial
    slow = worker(config, storage, "killed", 2, "--set", "train_overrides=[train.max_steps=100000, train.epochs=1000]")
    deadline = time.monotonic() + 90
    running = None
    while running is None:
        assert slow.poll() is None, slow.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the first worker never started a trial"
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
            # a trial has started training once its worker attribute is set (after every suggestion)
            running = next((t for t in study.get_trials(states=(TrialState.RUNNING,))
                            if "worker" in t.user_attrs), None)
        except KeyError:  # study not created yet
            pass
        time.sleep(0.3)
    time.sleep(2.0)  # a couple of heartbeats and some training
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait(timeout=30)
    assert slow.returncode == -signal.SIGKILL
    assert study.get_trials()[running.number].state == TrialState.RUNNING  # stuck until someone fails it

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
