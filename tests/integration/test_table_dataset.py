"""A raw Avazu-shaped CSV to scores, as datasets/your-data.md walks it: ``generate avazu-like``, ``preprocess
--schema configs/schemas/avazu.yaml``, ``train --config configs/dlrm.yaml`` (a compressing variant chosen
with ``--set``), the baselines on the same dataset, and ``predict`` on the raw CSV. Real files, the real
training loop; the scores of the raw test rows equal the eager model's on the processed test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The steps of the walk-through as the library functions the commands call (``predict`` runs through
    the command line below)."""
    from recsys_emb.config import load_config
    from recsys_emb.data.avazu_like import generate_avazu_like
    from recsys_emb.data.tabular import preprocess_table
    from recsys_emb.training import train

    d = tmp_path_factory.mktemp("table")
    g = generate_avazu_like(d / "raw", rows=4000)
    preprocess_table(ROOT / "configs" / "schemas" / "avazu.yaml", g.csv, d / "data", workers=1)
    cfg = load_config(ROOT / "configs" / "dlrm.yaml", [
        f"data.path={d / 'data'}", "embeddings.variant=hashed", "embeddings.min_rows=64", "data.batch_size=256",
        f"train.out_dir={d / 'run'}", "train.progress=false", "train.log_every=0"])
    summary = train(cfg)
    return d, summary


def test_dlrm_config_trains_on_a_schema_dataset_with_every_field_from_metadata(run):
    d, summary = run
    meta = json.loads((d / "data" / "metadata.json").read_text())
    assert meta["dataset"] == "table" and meta["schema"]["true_prob"] == "true_prob"
    assert meta["split"] == "time" and meta["rows"]["test"] == 400  # the last of 10 days
    assert meta["schema"]["sparse"] == ["C1", "banner_pos", "site_id", "site_domain", "site_category",
                                        "app_id", "app_domain", "app_category", "device_id", "device_ip",
                                        "device_model", "device_type", "device_conn_type", "C14", "C15", "C16",
                                        "C17", "C18", "C19", "C20", "C21"]
    assert meta["vocab_sizes"]["device_ip"] == 1_000_000 and "device_ip" in meta["hashed_fields"]
    assert summary["embedding_bytes"] < summary["full_table_bytes"]  # hashed: the large fields compressed
    assert summary["test"]["auc"] > 0.5


def test_a_criteo_dlrm_config_trains_on_a_schema_dataset(run):
    """A config written for Criteo names no field: on Avazu-shaped data it takes every field from metadata."""
    from recsys_emb.config import load_config
    from recsys_emb.training import train

    d, _ = run
    config = "dlrm_criteo_like_mixed.yaml"
    cfg = load_config(ROOT / "configs" / config, [
        f"data.path={d / 'data'}", "data.batch_size=256", "train.max_steps=2", "train.eval_every=0",
        "train.checkpoint_every=0", f"train.out_dir={d / config}", "train.progress=false", "train.log_every=0"])
    summary = train(cfg)
    assert summary["embedding_params"] > 0 and 0.0 <= summary["test"]["auc"] <= 1.0


def test_baselines_on_a_schema_dataset(run):
    from recsys_emb.baselines import baselines

    rows = baselines(run[0] / "data", c_grid=(1.0,))
    assert rows["constant"].auc == pytest.approx(0.5)
    assert 0.5 < rows["logistic_regression"].auc < 1.0


def test_predict_on_the_raw_csv_equals_the_model_on_processed_rows(run):
    from recsys_emb.data.batches import batch_from_table
    from recsys_emb.model_dir import load_model
    from recsys_emb.scoring import score_batch, score_frame

    run = run[0]
    raw = run / "raw" / "avazu_like.csv"
    from recsys_emb.cli import main

    assert main(["predict", "--model", str(run / "run"), "--input", str(raw), "--out", str(run / "scores.parquet")]) == 0
    scores = pq.read_table(run / "scores.parquet").to_pandas()
    assert len(scores) == 4000 and scores["line"].tolist() == list(range(2, 4002))
    model = load_model(run / "run")
    test = pq.read_table(run / "data" / "test")
    logits = score_batch(model, batch_from_table(test, model.schema))
    np.testing.assert_allclose(scores["logit"].to_numpy()[-400:], logits, rtol=1e-5, atol=1e-6)
    assert scores["label"].tolist()[-400:] == test.column("click").to_pylist()
    # The same rows as a DataFrame in the raw column names, without the label column.
    df = pd.read_csv(raw, dtype=str, keep_default_na=False).iloc[-400:].drop(columns=["click"])
    p = score_frame(model, df)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-5, atol=1e-6)
