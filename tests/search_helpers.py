"""Shared by the search tests (tests/search/, tests/integration/test_search_*.py, tests/reliability/
test_search_trials.py): the tiny train + search configs, their generated data, and the few functions of
the training side the tests call."""

from pathlib import Path

import yaml

from recsys_emb.config import config_from_dict, load_config  # noqa: F401 (re-exported for the tests)
from recsys_emb.data.parquet import TableSchema  # noqa: F401
from recsys_emb.memory import memory_from_specs  # noqa: F401
from recsys_emb.training import build_features, prepare_data, train  # noqa: F401

from waiting import HANG_GUARD_S, wait_until

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


def finish(proc, hang_guard: float = HANG_GUARD_S) -> str:
    """Wait for a worker to exit; its output. Fails naming the exit code, with the output's tail; a worker
    still running after ``hang_guard`` seconds (a hang guard, :mod:`waiting`) is killed and reported."""
    import subprocess

    try:
        out, _ = proc.communicate(timeout=hang_guard)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"hang guard: worker {proc.pid} still running after {hang_guard:.0f} s:\n"
                             f"{out[-4000:]}") from None
    assert proc.returncode == 0, f"worker {proc.pid} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def read_until(proc, marker: str) -> str:
    """A handshake on a worker's output pipe: read its lines until one contains ``marker``; the lines read.
    Fails, with what it printed, if the worker ends (its pipe closes) before printing it."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
    proc.wait()
    raise AssertionError(f"worker {proc.pid} exited ({proc.returncode}) without printing {marker!r}:\n"
                         f"{''.join(lines)[-4000:]}")


def wait_for_trial(storage: str, study_name: str, what: str, found, procs=()):
    """Poll the storage until ``found(trials)`` returns a trial (not None); return it.

    Fails with ``what`` in the message as soon as one of ``procs`` exits (or after the hang guard)."""
    import optuna

    # one storage (one connection pool) for the whole wait: a study loaded from the URL at every poll
    # opens a new pool each time, and a long wait on a loaded machine ran PostgreSQL out of connections
    store = optuna.storages.RDBStorage(storage)

    def poll():
        try:
            return found(optuna.load_study(study_name=study_name, storage=store).get_trials())
        except KeyError:  # the study is not created yet
            return None

    try:
        return wait_until(poll, f"{what} in {storage} (study {study_name!r})", procs, poll_s=0.2)
    finally:
        store.engine.dispose()


def backdate_heartbeat(storage: str, study_name: str, number: int) -> None:
    """Make trial ``number`` look like a dead worker's: its last heartbeat set to 2000-01-01 in the storage,
    as it reads once ``grace_period`` has passed since its worker was killed, without waiting for that.
    A trial that never beat gets the old heartbeat too."""
    import datetime

    import optuna
    from optuna.storages._rdb import models

    store = optuna.storages.RDBStorage(storage)
    try:
        trial_id = store.get_trial_id_from_study_id_trial_number(store.get_study_id_from_name(study_name), number)
        store.record_heartbeat(trial_id)  # the row exists from here on
        table = models.TrialHeartbeatModel.__table__
        with store.engine.begin() as conn:
            done = conn.execute(table.update().where(table.c.trial_id == trial_id)
                                .values(heartbeat=datetime.datetime(2000, 1, 1)))
        assert done.rowcount == 1, f"no heartbeat row for trial {number} of {study_name!r}"
    finally:
        store.engine.dispose()


def figure_panels(path, panels: int):
    """A report figure read back: its (height, width) in pixels and, for each of its ``panels`` side-by-side
    panels, the set of its pixels' colours (``"#rrggbb"``)."""
    import matplotlib.image
    import numpy as np

    img = (matplotlib.image.imread(path)[..., :3] * 255).round().astype(int)
    h, w, _ = img.shape
    cols = [img[:, k * w // panels:(k + 1) * w // panels].reshape(-1, 3) for k in range(panels)]
    return (h, w), [{"#%02x%02x%02x" % tuple(c) for c in np.unique(p, axis=0)} for p in cols]


C0, C3 = "#1f77b4", "#d62728"
"""matplotlib's default first colour (the trials' points) and fourth (the best-so-far line, the Pareto front)."""
