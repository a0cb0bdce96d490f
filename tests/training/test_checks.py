"""Settings checked against the data before training: ``eval_every: auto`` validates once per epoch on
small data, a batch that gives no training step is refused (the command line's side:
tests/cli/test_train_checks.py), and the settings that would silently do nothing (a validation cadence
longer than the run, a compression that compresses no field, an epoch of one or two steps) are warned
about, naming the setting."""

import json
import logging

import pytest

from recsys_emb.config import RunConfig, config_from_dict
from recsys_emb.errors import ConfigError
from recsys_emb.training import prepare_data, train
from recsys_emb.training.checks import check_steps_per_epoch, settings_warnings, suggested_batch_size

TRAIN_ROWS = 1600  # 2,000 generated rows: 80% train, 10% valid, 10% test


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("checks") / "cl"
    prepare_data(config_from_dict({"data": {"path": str(path), "generate": {
        "kind": "criteo-like", "rows": 2000, "scale": 0.001, "seed": 0}}}))
    assert json.loads((path / "metadata.json").read_text())["rows"]["train"] == TRAIN_ROWS
    return path


def run_dict(data, out, batch_size=256, **train):
    return {"name": "checks", "seed": 0, "data": {"path": str(data), "batch_size": batch_size, "eval_batch_size": 4096},
            "model": {"kind": "dlrm", "bottom_mlp": [8], "top_mlp": [8]},
            "embeddings": {"variant": "full", "dim": 8},
            "train": {"log_every": 0, "progress": False, "out_dir": str(out), **train}}


def metric_rows(out, split):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("split") == split]


def test_auto_validates_at_the_end_of_each_epoch(data, tmp_path):
    # 1,600 rows in batches of 256: 6 steps per epoch (the last partial batch dropped); no early stopping,
    # so all three epochs run: one validation at each epoch's end (the last is also the final model's: logged once)
    s = train(config_from_dict(run_dict(data, tmp_path, epochs=3, early_stopping=None)))
    assert s["steps"] == 18
    assert [r["step"] for r in metric_rows(tmp_path, "valid")] == [6, 12, 18]


def test_the_refusal_names_shards_and_processes():
    cfg = RunConfig()
    check_steps_per_epoch(cfg, 1, [5000])  # a step: nothing to say
    with pytest.raises(ConfigError, match=r"5,000 rows in 2 shards \(the largest 3,000 rows.*at most 3,000"):
        check_steps_per_epoch(cfg, 0, [3000, 2000])
    with pytest.raises(ConfigError, match=r"shared by 2 processes.*at most 2,500"):
        check_steps_per_epoch(cfg, 0, [5000], world_size=2)


def test_suggested_batch_sizes():
    assert [suggested_batch_size(n) for n in (6400, 5000, 1600, 40, 39, 0)] == [256, 128, 64, 2, 1, 1]
    assert all(n // suggested_batch_size(n) >= 20 for n in (6400, 5000, 1600, 40))


def test_settings_that_do_nothing_are_warned_about_by_the_trainer(data, tmp_path, caplog):
    # a batch of 1,024 over 1,600 rows: one step per epoch; validation every 2,000 steps of a 2-step run;
    # compression 16 while every field of this data has fewer than 1,024 ids
    cfg = run_dict(data, tmp_path, batch_size=1024, epochs=2, eval_every=2000)
    cfg["embeddings"] = {"variant": "hashed", "dim": 8, "compression": 16}
    with caplog.at_level(logging.WARNING, logger="recsys_emb.training"):
        train(config_from_dict(cfg))
    lines = [r.getMessage() for r in caplog.records if r.name == "recsys_emb.training.checks"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("data.batch_size=1024 makes 1 training step(s) per epoch over 1,600 training rows")
    assert "--set data.batch_size=64" in lines[0]
    assert lines[1].startswith("train.eval_every=2000 but the run trains 2 steps: it never validates before its end")
    assert "train.eval_every: auto" in lines[1]
    assert lines[2].startswith("embeddings.compression=16 changes nothing: every field has fewer ids than "
                               "embeddings.min_rows=1024")
    assert all("\n" not in line for line in lines)


def test_no_warning_where_the_settings_act():
    cfg = config_from_dict({"data": {"path": "d", "batch_size": 256},
                            "embeddings": {"variant": "hashed", "compression": 16, "min_rows": 100},
                            "train": {"eval_every": 25}})
    assert settings_warnings(cfg, steps_per_epoch=25, total_steps=250, train_rows=6400,
                             cardinalities={"a": 211, "b": 17}) == []
    cfg.train.eval_every = "auto"
    cfg.embeddings.min_rows = 1024
    cfg.embeddings.variant = "full"  # full tables ignore compression: nothing to warn about
    assert settings_warnings(cfg, steps_per_epoch=3, total_steps=3, train_rows=800, cardinalities={"a": 211}) == []


def test_compression_warning_names_the_largest_field_and_a_min_rows_that_compresses():
    cfg = config_from_dict({"data": {"path": "d"}, "embeddings": {"variant": "unified", "compression": 16}})
    (line,) = settings_warnings(cfg, 25, 250, 6400, cardinalities={"C1": 17, "C24": 211})
    assert "(the largest, C24, has 211)" in line and "--set embeddings.min_rows=128" in line
    # a field under min_rows with an override is sized by the override, not by compression
    cfg.embeddings.overrides = {"C24": {"type": "hashed", "dim": 16, "buckets": 10}}
    assert "the largest, C1, has 17" in settings_warnings(cfg, 25, 250, 6400, cardinalities={"C1": 17, "C24": 211})[0]
