"""The training recipe: early stopping keeps and reports the best model, retention keeps exactly the
checkpoints it promises (and resume still works with them), the dense learning-rate schedule follows
its formula, dropout leaves parameter names alone."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_emb.config import OptimConfig, config_from_dict
from recsys_emb.training import FAULT_KILL_ENV, train
from generated_data import criteo_like_dir
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return criteo_like_dir(tmp_path_factory.mktemp("recipe"), rows=4000, seed=3)


def overfitting(data, out, **train):
    """Big tables, a high learning rate and many epochs over 3,200 rows: the valid log loss falls, then rises."""
    return {
        "name": "of", "seed": 0, "data": {"path": str(data), "batch_size": 64, "eval_batch_size": 4096},
        "model": {"kind": "dlrm", "bottom_mlp": [32, 16], "top_mlp": [64]},
        "embeddings": {"variant": "full", "dim": 16, "min_rows": 1},
        "optim": {"embedding_lr": 0.3, "dense_lr": 0.01},
        "train": {"epochs": 12, "eval_every": 25, "log_every": 25, "progress": False, "out_dir": str(out),
                  "early_stopping": {"monitor": "logloss", "patience": 2}, **train}}


def rows(out, split):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("split") == split]


def test_early_stopping_stops_and_reports_the_best_model(data, tmp_path):
    out = tmp_path / "run"
    summary = train(config_from_dict(overfitting(data, out)))
    evals = rows(out, "valid")  # one row per evaluation: the summary's (the restored best model) is not repeated
    assert len({r["step"] for r in evals}) == len(evals)
    best = min(evals, key=lambda r: r["logloss"])
    assert summary["stopped_early"] and summary["model_step"] == best["step"]
    after = [r for r in evals if r["step"] > best["step"]]
    assert len(after) == 2 and all(r["logloss"] >= best["logloss"] for r in after)  # patience 2
    assert summary["steps"] == after[-1]["step"] < 12 * 50
    # the restored model is the best one: the same valid metrics as when it was evaluated
    assert summary["valid"]["logloss"] == pytest.approx(best["logloss"], abs=1e-9)
    assert summary["valid"]["auc"] == pytest.approx(best["auc"], abs=1e-9)
    kept = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert kept == [f"step_{best['step']:08d}", f"step_{summary['steps']:08d}"]  # keep_last 2: best and last


def test_without_early_stopping_the_last_model_is_reported(data, tmp_path):
    cfg = overfitting(data, tmp_path / "run", epochs=2, early_stopping=None)
    summary = train(config_from_dict(cfg))
    assert not summary["stopped_early"] and summary["model_step"] == summary["steps"] == 100


def test_retention_keeps_the_newest_and_the_best(data, tmp_path):
    out = tmp_path / "run"
    summary = train(config_from_dict(overfitting(data, out, keep_last=1, checkpoint_every=10)))
    kept = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert kept == sorted({f"step_{summary['model_step']:08d}", f"step_{summary['steps']:08d}"})
    assert (out / "checkpoints" / "latest").read_text() == f"step_{summary['steps']:08d}"
    everything = train(config_from_dict(overfitting(data, tmp_path / "all", keep_last=None, checkpoint_every=50)))
    assert len(list((tmp_path / "all" / "checkpoints").glob("step_*"))) >= everything["steps"] // 50


def test_resume_with_early_stopping_and_retention_is_exact(data, tmp_path):
    cfg = overfitting(data, tmp_path / "x", keep_last=1, checkpoint_every=30)
    cfg["data"]["id_dropout"] = {"C1": 0.2, "C3": 0.3}  # drawn per batch: the resumed run must draw the same
    whole = train(config_from_dict({**cfg, "train": {**cfg["train"], "out_dir": str(tmp_path / "whole")}}))
    path = tmp_path / "killed.yaml"
    path.write_text(json.dumps({**cfg, "train": {**cfg["train"], "out_dir": str(tmp_path / "killed")}}))
    env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", FAULT_KILL_ENV: str(whole["steps"] - 20)}
    killed = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "train", "--config", str(path)], env=env,
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    again = {**cfg, "train": {**cfg["train"], "out_dir": str(tmp_path / "killed")}}
    resumed = train(config_from_dict(again), resume=True)
    for key in ("steps", "model_step", "stopped_early"):
        assert resumed[key] == whole[key]
    for split in ("valid", "test"):
        assert resumed[split]["logloss"] == pytest.approx(whole[split]["logloss"], abs=1e-6)


def test_the_dense_learning_rate_follows_the_schedule(data, tmp_path):
    cfg = config_from_dict({**overfitting(data, tmp_path / "run", epochs=1, early_stopping=None, log_every=1),
                            "optim": {"dense_lr": 0.01, "dense_warmup_steps": 10, "dense_decay": "cosine",
                                      "dense_final_lr_ratio": 0.1}})
    summary = train(cfg)
    logged = {r["step"]: r["dense_lr"] for r in rows(tmp_path / "run", "train")}
    assert len(logged) == summary["steps"] == 50
    for step, lr in logged.items():  # the lr of the step that ended at `step` (0-based index step - 1)
        assert lr == pytest.approx(0.01 * cfg.optim.dense_lr_factor(step - 1, 50), rel=1e-12)
    assert logged[1] == pytest.approx(0.001) and logged[10] == pytest.approx(0.01) and logged[50] == pytest.approx(0.001)


def test_schedule_factors_by_hand():
    o = OptimConfig(dense_warmup_steps=4, dense_decay="cosine", dense_final_lr_ratio=0.2)
    assert [o.dense_lr_factor(s, 9) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert o.dense_lr_factor(4, 9) == 1.0 and o.dense_lr_factor(8, 9) == pytest.approx(0.2)
    assert o.dense_lr_factor(6, 9) == pytest.approx(0.2 + 0.8 * 0.5)
    assert OptimConfig().dense_lr_factor(123, 200) == 1.0


def test_embedding_l2_enters_the_loss(data, tmp_path):
    plain = train(config_from_dict(overfitting(data, tmp_path / "a", epochs=1, early_stopping=None)))
    cfg = overfitting(data, tmp_path / "b", epochs=1, early_stopping=None)
    cfg["optim"] = {**cfg["optim"], "embedding_l2": 1e-3}
    penalised = train(config_from_dict(cfg))
    assert penalised["train_loss"] != plain["train_loss"]  # the same data order and init: only the penalty differs
