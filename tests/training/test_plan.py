"""`recsys-emb plan` from published cardinalities: no data, no GPU, a CUDA topology with a memory cap."""

from __future__ import annotations

import json

import pytest

from recsys_emb.cli import main
from recsys_emb.config import load_config
from recsys_emb.data.criteo import CRITEO_1TB_CARDINALITIES, CRITEO_KAGGLE_CARDINALITIES
from recsys_emb.errors import ConfigError
from recsys_emb.training import plan_run

KAGGLE = "configs/dlrm_criteo_kaggle.yaml"  # data.path data/criteo does not exist here: never read


def test_cardinality_presets_are_the_published_totals():
    assert sum(CRITEO_KAGGLE_CARDINALITIES) == 33_762_577 and len(CRITEO_KAGGLE_CARDINALITIES) == 26
    assert sum(CRITEO_1TB_CARDINALITIES) == 882_774_559 and len(CRITEO_1TB_CARDINALITIES) == 26


def test_plan_full_kaggle_tables_on_two_gpus(capsys):
    """Full tables, dim 16, table-wise on 2 GPUs of 80 GB: every id's 16 floats + 1 Adagrad float."""
    assert main(["plan", "--config", KAGGLE, "--cardinalities", "kaggle", "--world-size", "2", "--device", "cuda",
                 "--hbm-gb", "80", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["fits"] and rep["device"] == "cuda" and rep["hbm_bytes"] == 80 * 10**9
    assert len(rep["rank_bytes"]) == 2 and min(rep["rank_bytes"]) > 0
    assert sum(rep["rank_bytes"]) == 4 * (16 + 1) * sum(CRITEO_KAGGLE_CARDINALITIES)
    assert {t["sharding_type"] for t in rep["tables"]} == {"table_wise"}
    assert main(["plan", "--config", KAGGLE, "--cardinalities", "kaggle", "--world-size", "2", "--device", "cuda",
                 "--hbm-gb", "80"]) == 0
    out = capsys.readouterr().out
    assert "kaggle cardinalities" in out and "C3 " in out and "(fits)" in out


def test_plan_that_does_not_fit_says_so(capsys):
    """1TB at dim 128 is ~450 GB of tables: 2 GPUs of 80 GB cannot hold it, row-wise or not."""
    cfg = load_config(KAGGLE, ["embeddings.dim=128", "train.sharding_types=[table_wise,row_wise]"])
    out = plan_run(cfg, 2, "cuda", cardinalities="1tb", hbm_gb=80)
    assert not out["fits"] and out["error"] and out["rank_bytes"] == []
    assert main(["plan", "--config", KAGGLE, "--cardinalities", "1tb", "--world-size", "2", "--device", "cuda",
                 "--hbm-gb", "80", "--set", "embeddings.dim=128"]) == 1
    assert "does not fit" in capsys.readouterr().out


def test_plan_row_wise_cuts_the_largest_tables_across_ranks():
    cfg = load_config(KAGGLE, ["embeddings.variant=qr", "train.sharding_types=[row_wise]"])
    out = plan_run(cfg, 4, "cuda", cardinalities="kaggle", hbm_gb=80)
    assert out["fits"] and {t["sharding_type"] for t in out["tables"]} == {"row_wise"}
    assert all(len(t["shards"]) == 4 for t in out["tables"])


def test_unknown_preset_and_bad_memory_are_config_errors():
    cfg = load_config(KAGGLE)
    with pytest.raises(ConfigError, match="not a preset; choose one of"):
        plan_run(cfg, 2, "cuda", cardinalities="avazu")
    with pytest.raises(ConfigError, match="hbm_gb=0 must be > 0"):
        plan_run(cfg, 2, "cuda", cardinalities="kaggle", hbm_gb=0)
