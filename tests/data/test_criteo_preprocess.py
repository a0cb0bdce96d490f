"""Criteo preprocessing: counts, categorify, transforms, splits, missing flags, vocabulary from all rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_emb.errors import DataError
from recsys_emb.data.criteo import (
    INT_COLUMNS,
    TSV_COLUMNS,
    iter_criteo_tsv,
    load_counts,
    load_vocabulary,
    preprocess,
)


def _read_pandas(path):
    return pd.read_csv(path, sep="\t", header=None, names=TSV_COLUMNS, dtype=str, keep_default_na=False)


def test_counts_and_ids_equal_pandas_value_counts(small_raw, tmp_path):
    out = tmp_path / "p"
    meta = preprocess(small_raw / "criteo_like.tsv", out, min_count=3, chunk_bytes=100_000)
    df = _read_pandas(small_raw / "criteo_like.tsv")
    n_train = meta["rows"]["train"]
    assert n_train == 16_000
    train = df.iloc[:n_train]
    counts = load_counts(out)
    vocab = load_vocabulary(out)
    got = pq.read_table(out / "train")
    for c in ["C1", "C3", "C9", "C20", "C26"]:
        vc = train[c].value_counts()
        kept = vc[vc >= 3]
        # Same counts by rank; the OOV slot counts every rarer row; vocab size = kept + 1.
        assert counts[c][:-1].tolist() == sorted(kept.tolist(), reverse=True)
        assert counts[c][-1] == int(vc[vc < 3].sum())
        assert meta["vocab_sizes"][c] == len(kept) + 1 and meta["oov_ids"][c] == len(kept)
        # Each row's id: the rank of its raw value (count desc, raw value asc; empty = -1); rare -> OOV.
        raw = np.array([int(v, 16) if v else -1 for v in kept.index])
        order = np.lexsort((raw, -kept.to_numpy()))
        expected_id = {kept.index[i]: r for r, i in enumerate(order)}
        want = train[c].map(lambda v: expected_id.get(v, len(kept))).to_numpy()
        assert np.array_equal(got[c].to_numpy(), want)
        assert np.array_equal(vocab[c].lookup(np.array(raw)), np.array([expected_id[k] for k in kept.index]))
        if len(kept) > 1:
            assert vc.iloc[0] == counts[c][0]  # id 0 is the most frequent value


def test_dense_transform_and_time_split(small_raw, small_processed):
    df = _read_pandas(small_raw / "criteo_like.tsv")
    meta = json.loads((small_processed / "metadata.json").read_text())
    assert meta["rows"] == {"total": 20_000, "train": 16_000, "valid": 2_000, "test": 2_000}
    test = pq.read_table(small_processed / "test")
    tail = df.iloc[-2000:]
    for c in INT_COLUMNS:
        raw = pd.to_numeric(tail[c].replace("", "0")).to_numpy()
        assert np.allclose(test[c].to_numpy(), np.log1p(np.maximum(raw, 0)), atol=1e-6)
    assert np.array_equal(test["label"].to_numpy(), tail["label"].astype(int).to_numpy())
    assert len(list((small_processed / "train").glob("part-*.parquet"))) == 6  # 16,000 rows / 3,000 per shard


def test_missing_flags_and_vocab_from_all(small_raw, tmp_path):
    meta = preprocess(small_raw / "criteo_like.tsv", tmp_path / "p", vocab_from="all", missing_flags=True,
                      min_count=1)
    t = pq.read_table(tmp_path / "p" / "test")
    df = _read_pandas(small_raw / "criteo_like.tsv").iloc[-2000:]
    assert np.array_equal(t["M1"].to_numpy(), (df["I1"] == "").to_numpy().astype(np.int8))
    # the flags are dense inputs of a model trained on the data (before: written, never read)
    assert meta["schema"]["dense"] == [f"I{i}" for i in range(1, 14)] + [f"M{i}" for i in range(1, 14)]
    assert meta["oov_rows_train"]["C3"] == 0  # every value is in an all-rows vocabulary at min_count 1
    with pytest.raises(ValueError, match="on_bad_line"):
        list(iter_criteo_tsv(small_raw / "criteo_like.tsv", on_bad_line="ignore"))
    with pytest.raises(FileNotFoundError):
        preprocess(tmp_path / "nope*.tsv", tmp_path / "q")


def test_a_new_day_maps_through_an_existing_vocabulary(small_raw, small_processed, tmp_path):
    lines = (small_raw / "criteo_like.tsv").read_text().splitlines()[-2000:]  # the test split of small_processed
    (tmp_path / "day.tsv").write_text("\n".join(lines) + "\n")
    # several units on 2 workers: the OOV counts of the units add up
    meta = preprocess(tmp_path / "day.tsv", tmp_path / "day", vocab=small_processed, test_fraction=0.5,
                      valid_fraction=0.0, min_count=1000,  # min_count is unused with a vocabulary
                      workers=2, unit_bytes=40_000)
    assert meta["vocab_source"] == str(small_processed.resolve())
    old = json.loads((small_processed / "metadata.json").read_text())
    assert meta["vocab_sizes"] == old["vocab_sizes"] and meta["oov_ids"] == old["oov_ids"]
    new = pq.read_table([*sorted((tmp_path / "day" / "train").glob("*.parquet")),
                         *sorted((tmp_path / "day" / "test").glob("*.parquet"))])
    ref = pq.read_table(sorted((small_processed / "test").glob("*.parquet")))
    for c in ("C1", "C3", "C26", "I2"):
        np.testing.assert_array_equal(new.column(c).to_numpy(), ref.column(c).to_numpy())
    for c in ("C3", "C12"):
        assert meta["oov_rows"][c] == int((ref.column(c).to_numpy() == old["oov_ids"][c]).sum()) > 0


def test_a_vocabulary_directory_without_one_is_refused(small_raw, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"counts.npz not found: .*empty holds no vocabulary"):
        preprocess(small_raw / "criteo_like.tsv", tmp_path / "out", vocab=tmp_path / "empty")
    assert not (tmp_path / "out").exists()
