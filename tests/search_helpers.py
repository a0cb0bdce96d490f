"""Shared by the search tests (tests/search/, tests/integration/test_search_*.py, tests/reliability/
test_search_trials.py): the tiny train + search configs, their generated data, and the few functions of
the training side the tests call."""

from pathlib import Path

import yaml

from recsys_emb.config import config_from_dict, load_config  # noqa: F401 (re-exported for the tests)
from recsys_emb.data.parquet import TableSchema  # noqa: F401
from recsys_emb.memory import memory_from_specs  # noqa: F401
from recsys_emb.training import build_features, prepare_data, train  # noqa: F401

CONFIGS = Path(__file__).parent / "configs"


def write_configs(dst: Path, data_path: Path, **search_over) -> Path:
    """The tiny train + search configs in ``dst``, reading the (shared) generated data at ``data_path``."""
    dst.mkdir(parents=True, exist_ok=True)
    train = yaml.safe_load((CONFIGS / "search_tiny_train.yaml").read_text())
    train["data"]["path"] = str(data_path)
    (dst / "train.yaml").write_text(yaml.safe_dump(train))
    cfg = yaml.safe_load((CONFIGS / "search_tiny.yaml").read_text())
    cfg.update(base_config="train.yaml", out_root=str(dst / "runs"), **search_over)
    (dst / "search.yaml").write_text(yaml.safe_dump(cfg))
    return dst / "search.yaml"


def make_tiny_data(parent: Path) -> Path:
    """Generate the tiny search dataset under ``parent``; returns its directory."""
    path = parent / "criteo-like-tiny"
    train = yaml.safe_load((CONFIGS / "search_tiny_train.yaml").read_text())
    train["data"]["path"] = str(path)
    prepare_data(config_from_dict(train))
    return path


def trained_trials(study):
    """Trials that trained: not over budget, and not a surplus trial stopped because the study was full."""
    return [t for t in study.get_trials() if not (t.user_attrs.get("over_budget") or t.user_attrs.get("surplus"))]


# ---------------------------------------------------------------------------------------- worker processes
REPO = Path(__file__).resolve().parents[1]


def worker(config: Path, storage: str, study: str, n_trials: int, *extra: str, verbose: bool = False,
           env: dict = None):
    """``recsys-emb search`` in a new process (module form), output on a pipe; ``verbose``: INFO logs;
    ``env``: added to the environment (e.g. a fault injection)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "recsys_emb.cli", *(["-v"] if verbose else []), "search", "--config", str(config),
           "--storage", storage, "--study", study, "--n-trials", str(n_trials), *extra]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout: float = 300) -> str:
    """Wait for a worker; its output. Fails naming the exit code or the timeout, with the output's tail."""
    import subprocess

    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"worker {proc.pid} still running after {timeout:.0f} s:\n{out[-4000:]}") from None
    assert proc.returncode == 0, f"worker {proc.pid} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def wait_for_trial(storage: str, study_name: str, what: str, found, procs=(), timeout: float = 240):
    """Poll the storage until ``found(trials)`` returns a trial (not None); return it.

    Fails with ``what`` in the message after ``timeout`` seconds, or as soon as one of ``procs`` exits."""
    import time

    import optuna

    # one storage (one connection pool) for the whole wait: a study loaded from the URL at every poll
    # opens a new pool each time, and a long wait on a loaded machine ran PostgreSQL out of connections
    store = optuna.storages.RDBStorage(storage)
    deadline = time.monotonic() + timeout
    try:
        while True:
            for p in procs:
                if p.poll() is not None:
                    raise AssertionError(f"worker {p.pid} exited ({p.returncode}) before {what}:\n"
                                         f"{p.communicate()[0][-3000:]}")
            try:
                hit = found(optuna.load_study(study_name=study_name, storage=store).get_trials())
            except KeyError:  # the study is not created yet
                hit = None
            if hit is not None:
                return hit
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:.0f} s for {what} in {storage} (study {study_name!r})")
            time.sleep(0.2)
    finally:
        store.engine.dispose()
