"""Every command of a new user's first hour, run as a user runs it (real processes, from a directory outside the
checkout, configs by their documented names), says nothing on stderr when it succeeds: no warning of
ours or of torch / TorchRec, no INFO line without -v. The in-process tests cannot see this
(tests/conftest.py silences UserWarnings)."""

import math
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_emb.training import FAULT_KILL_ENV
from waiting import HANG_GUARD_S

TRAIN = ["--config", "configs/demo.yaml", "--set", "data.path=data", "--set", "data.batch_size=256",
         "--set", "train.checkpoint_every=3",
         # the tiny data's fields have a few hundred ids, all under the default embeddings.min_rows (the
         # trainer rightly warns that compression would change nothing): a smaller one keeps it acting
         "--set", "embeddings.min_rows=128"]


def cli(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def quiet(cwd, *args, env=None):
    """stdout of a command that succeeds with nothing on stderr."""
    proc = cli(cwd, *args, env=env)
    assert proc.returncode == 0, f"recsys-emb {' '.join(args)}\n{proc.stderr[-3000:]}"
    assert proc.stderr == "", f"recsys-emb {' '.join(args)} wrote to stderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


def labels(path):
    return np.concatenate([pq.read_table(f, columns=["label"]).column("label").to_numpy() for f in
                           sorted(path.glob("*.parquet"))]).astype(np.float64)


def test_a_first_hour_of_commands_prints_no_warning(tmp_path):
    quiet(tmp_path, "generate", "criteo-like", "--rows", "3000", "--scale", "0.001", "--out", "raw")
    quiet(tmp_path, "preprocess", "--input", "raw/criteo_like.tsv", "--out", "data")
    assert "test  AUC" in quiet(tmp_path, "train", *TRAIN, "--set", "train.out_dir=run")
    assert '"auc"' in quiet(tmp_path, "evaluate", "--checkpoint", "run")
    quiet(tmp_path, "export", "--checkpoint", "run", "--out", "model")
    quiet(tmp_path, "predict", "--model", "model", "--input", "raw/criteo_like.tsv", "--out", "scores.parquet")
    assert "demo " in quiet(tmp_path, "config", "list")

    # the baselines, the constant predictor's log loss checked against the label rates directly
    out = quiet(tmp_path, "baseline", "--data", "data")
    row = next(line for line in out.splitlines() if line.startswith("constant predictor")).split()
    rate = labels(tmp_path / "data" / "train").mean()
    for split, value in (("valid", row[3]), ("test", row[5])):
        p = labels(tmp_path / "data" / split).mean()
        assert float(value) == pytest.approx(-(p * math.log(rate) + (1 - p) * math.log(1 - rate)), abs=1e-4)

    # a resume loads TorchRec's sharded state through DCP (ShardedTensor warnings) and, killed after its
    # last checkpoint, once saved that checkpoint again (DCP's overwrite warning): only the taken-over
    # lock of the killed run is worth a line
    killed = cli(tmp_path, "train", *TRAIN, "--set", "train.out_dir=run2", env={FAULT_KILL_ENV: "9"})
    assert killed.returncode == -9 and (tmp_path / "run2" / "checkpoints" / "step_00000009").is_dir()
    resumed = cli(tmp_path, "train", *TRAIN, "--set", "train.out_dir=run2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (line,) = resumed.stderr.splitlines()
    assert line.startswith("WARNING recsys_emb.training.rundir: run2: taking over the lock left by pid "), line
