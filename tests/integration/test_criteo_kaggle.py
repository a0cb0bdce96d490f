"""datasets/criteo.md's three commands on a file in the exact Kaggle ``train.txt`` format: preprocess,
train with configs/dlrm_criteo_kaggle.yaml (only the data path, the output directory and the cadence
changed for a few thousand rows), evaluate. Real processes, real files.

The file is written here: tab-separated, no header, a 0/1 label, 13 integer counts (empty = missing,
negative values as in I2), 26 categoricals of 8 lowercase hex digits (empty = missing, lines that end in
empty fields). Labels depend on C1, C2 and I1, so a model that reads the file right beats the constant
predictor."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_emb.baselines import constant_predictor, logistic_regression

ROOT = Path(__file__).resolve().parents[2]
ROWS = 6000


def write_kaggle_tsv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 60, size=26)
    pools = [np.array([f"{v:08x}" for v in rng.integers(0, 2**32, size=n)]) for n in sizes]
    picks = np.minimum(rng.zipf(1.6, size=(rows, 26)) - 1, sizes - 1)  # skewed, as real values are
    counts = rng.poisson(3, size=(rows, 13)).astype(str).astype(object)
    counts[rng.random((rows, 13)) < 0.2] = ""
    counts[:, 1] = rng.integers(-3, 40, size=rows).astype(str)  # I2 takes negative values in the real file
    cats = np.stack([pools[j][picks[:, j]] for j in range(26)], axis=1).astype(object)
    cats[rng.random((rows, 26)) < 0.1] = ""
    cats[rng.random(rows) < 0.3, -4:] = ""  # lines often end in empty fields
    i1 = np.array([int(c) if c else 0 for c in counts[:, 0]])
    effect = [rng.normal(0, 1.2, size=n) for n in sizes[:2]]
    logit = -1.2 + effect[0][picks[:, 0]] + effect[1][picks[:, 1]] + 0.3 * (i1 - 3)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    path.write_text("".join("\t".join([str(y), *c, *k]) + "\n" for y, c, k in zip(labels, counts, cats)))


def cli(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode == 0, f"recsys-emb {' '.join(args)}:\n{proc.stderr[-3000:]}"
    return proc


def test_three_commands_from_train_txt_to_test_metrics(tmp_path):
    raw = tmp_path / "train.txt"
    write_kaggle_tsv(raw, ROWS)
    data, run = tmp_path / "criteo", tmp_path / "run"
    cli("preprocess", "--input", str(raw), "--out", str(data), "--min-count", "4", "--on-bad-line", "skip")
    meta = json.loads((data / "metadata.json").read_text())
    assert meta["rows"]["total"] == ROWS and not meta.get("bad_lines", {}).get("count"), meta  # all well formed
    cli("train", "--config", str(ROOT / "configs" / "dlrm_criteo_kaggle.yaml"), "--set", f"data.path={data}",
        "--set", f"train.out_dir={run}", "--set", "data.batch_size=256", "--set", "data.eval_batch_size=2048",
        "--set", "train.epochs=3", "--set", "train.eval_every=10", "--set", "train.checkpoint_every=10",
        "--set", "train.log_every=10", "--set", "optim.dense_warmup_steps=5", "--set", "train.progress=false")
    summary = json.loads((run / "summary.json").read_text())
    scores = json.loads(cli("evaluate", "--checkpoint", str(run), "--split", "test").stdout)
    # the best checkpoint (by valid log loss) is what the summary reports and what evaluate scores
    assert scores["auc"] == pytest.approx(summary["test"]["auc"], abs=1e-6)
    assert scores["logloss"] == pytest.approx(summary["test"]["logloss"], abs=1e-6)
    assert len(list((run / "checkpoints").glob("step_*"))) <= 2 + 1  # keep_last 2, plus the best one
    constant = constant_predictor(data, "test")
    lr = logistic_regression(data, "test")
    assert scores["logloss"] < constant.logloss, (scores, constant)
    assert scores["auc"] > 0.65 and scores["auc"] >= lr.auc - 0.03, (scores, lr)
