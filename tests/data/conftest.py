"""Shared generated data for the data tests (session-scoped: generated once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_emb.data.criteo import preprocess
from recsys_emb.data.synthetic import generate_criteo_like


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory) -> Path:
    """20,000 Criteo-like rows (scale 0.001), seed 7."""
    d = tmp_path_factory.mktemp("small_raw")
    generate_criteo_like(d, 20_000, scale=0.001, seed=7)
    return d


@pytest.fixture(scope="session")
def small_processed(small_raw, tmp_path_factory) -> Path:
    """``small_raw`` preprocessed into several shards per split (3,000 rows per shard)."""
    d = tmp_path_factory.mktemp("small_processed")
    preprocess(small_raw / "criteo_like.tsv", d, rows_per_shard=3000, row_group_rows=1000, chunk_bytes=256 << 10)
    return d
