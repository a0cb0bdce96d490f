"""`make demo` as a new user runs it, on tiny settings: after a demo training killed mid-way (the training
command of the target, killed on its own: the target's first command has nothing to leave behind), then
twice in a row, each time exit 0 and no warning (real make, real processes)."""

import os
import subprocess
import sys
from pathlib import Path

from recsys_emb.training import FAULT_KILL_ENV
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


def train_sets(tmp_path):
    return [f"data.path={tmp_path / 'data'}", "data.generate={kind: criteo-like, rows: 3000, scale: 0.001, seed: 0}",
            "data.batch_size=256", "train.checkpoint_every=4", f"train.out_dir={tmp_path / 'run'}",
            "embeddings.min_rows=128"]  # the tiny data's fields are all under the default: compression acts


def make_demo(tmp_path, env=None):
    train = train_sets(tmp_path)
    # -o: the venv stamp is taken as up to date (the test never installs anything)
    args = ["make", "--no-print-directory", "-o", f"{VENV}/.installed", "demo", f"VENV={VENV}",
            "DEMO_ARGS=--cap 1000 --batch 64", "DEMO_TRAIN_ARGS=" + " ".join(f"--set '{s}'" for s in train)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def test_make_demo_runs_after_an_interrupted_run_and_twice_in_a_row(tmp_path):
    assert (VENV / "bin" / "recsys-emb").exists(), f"{VENV} has no recsys-emb (pip install -e .)"
    # the target's training command (Makefile: `recsys-emb train --config configs/demo.yaml --overwrite`),
    # killed after step 5: a stale lock, checkpoints, metrics and no summary are left behind
    killed = subprocess.run([str(VENV / "bin" / "recsys-emb"), "train", "--config", "configs/demo.yaml", "--overwrite",
                             *sum((["--set", s] for s in train_sets(tmp_path)), [])], cwd=ROOT, capture_output=True,
                            text=True, timeout=HANG_GUARD_S, env={**os.environ, FAULT_KILL_ENV: "5"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (tmp_path / "run" / ".lock").read_text().startswith("pid ")
    assert not (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / "checkpoints").exists()
    for attempt in range(2):
        done = make_demo(tmp_path)
        assert done.returncode == 0, f"run {attempt + 1}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        assert "test  AUC" in done.stdout and "unified" in done.stdout
        assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / ".lock").read_text() == ""
        if attempt == 0:  # one line: the lock of the killed run, taken over
            (line,) = done.stderr.splitlines()
            assert "taking over the lock left by pid" in line, done.stderr[-3000:]
        else:  # no warning, no log line
            assert done.stderr == "", done.stderr[-3000:]
