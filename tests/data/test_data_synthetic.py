"""Criteo-like generator: determinism, the real schema and its quirks, the ceiling vs. a linear model."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from recsys_emb.data.criteo import CAT_COLUMNS, preprocess
from recsys_emb.data.metrics import ceiling_from_dir
from recsys_emb.data.synthetic import CriteoLikeConfig, CriteoLikeWorld, generate_criteo_like, scaled_cardinalities


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_criteo_like(tmp_path / "a", 5000, scale=0.001, seed=3)
    b = generate_criteo_like(tmp_path / "b", 5000, scale=0.001, seed=3)
    c = generate_criteo_like(tmp_path / "c", 5000, scale=0.001, seed=4)
    assert a.tsv.read_bytes() == b.tsv.read_bytes()
    assert np.array_equal(np.load(a.true_prob), np.load(b.true_prob))
    assert a.tsv.read_bytes() != c.tsv.read_bytes()


def test_rows_have_the_kaggle_schema_and_its_quirks(small_raw):
    lines = (small_raw / "criteo_like.tsv").read_text().splitlines()
    assert len(lines) == 20_000
    fields = [ln.split("\t") for ln in lines]
    assert {len(f) for f in fields} == {40}
    labels = np.array([int(f[0]) for f in fields])
    assert set(labels.tolist()) == {0, 1}
    assert np.array_equal(labels, np.load(small_raw / "criteo_like.labels.npy"))
    cats = [c for f in fields for c in f[14:]]
    assert all(c == "" or (len(c) == 8 and int(c, 16) >= 0) for c in cats)
    i2 = [f[2] for f in fields]
    assert any(v.startswith("-") for v in i2), "negative counts in I2 (a real Criteo quirk)"
    assert any(f[1] == "" for f in fields), "missing integer values"
    assert any(ln.endswith("\t\t") for ln in lines), "trailing empty categoricals"
    assert 0.22 < labels.mean() < 0.28


def test_cardinalities_scale_and_world_is_pure():
    assert scaled_cardinalities(1.0)[2] == 10131227
    assert scaled_cardinalities(0.01)[8] == 3  # tiny fields keep their real size
    w1 = CriteoLikeWorld(CriteoLikeConfig(scale=0.001, seed=5))
    w2 = CriteoLikeWorld(CriteoLikeConfig(scale=0.001, seed=5))
    r1, r2 = w1.sample_block(2, 500), w2.sample_block(2, 500)
    assert np.array_equal(r1["true_prob"], r2["true_prob"]) and np.array_equal(r1["ranks"], r2["ranks"])
    assert (r1["ranks"] < np.array(w1.cardinalities)[:, None]).all()


def test_gzip_output_equals_plain(tmp_path):
    plain = generate_criteo_like(tmp_path / "p", 3000, scale=0.001, seed=2)
    gz = generate_criteo_like(tmp_path / "g", 3000, scale=0.001, seed=2, gzip=True)
    assert gz.tsv.name.endswith(".gz")
    assert gzip.decompress(gz.tsv.read_bytes()) == plain.tsv.read_bytes()
    meta = preprocess(gz.tsv, tmp_path / "gp", test_fraction=0.2)
    assert meta["rows"]["total"] == 3000 and meta["schema"]["true_prob"] == "true_prob"


def test_reader_parses_generated_rows_and_keeps_truth_aligned(small_raw, small_processed):
    truth = np.load(small_raw / "criteo_like.true_prob.npy")
    labels = np.load(small_raw / "criteo_like.labels.npy")
    got_p, got_y = [], []
    for split in ("train", "valid", "test"):
        t = pq.read_table(small_processed / split)
        got_p.append(t["true_prob"].to_numpy())
        got_y.append(t["label"].to_numpy())
    assert np.array_equal(np.concatenate(got_p), truth)  # time order kept, nothing dropped
    assert np.array_equal(np.concatenate(got_y), labels)


def _one_hot(table, offsets):
    n = table.num_rows
    cols = np.stack([table[c].to_numpy() + offsets[j] for j, c in enumerate(CAT_COLUMNS)], axis=1)
    return sp.csr_matrix((np.ones(cols.size), cols.ravel(), np.arange(0, cols.size + 1, len(CAT_COLUMNS))),
                         shape=(n, offsets[-1]))


def test_ceiling_is_high_and_logistic_regression_lands_between(tmp_path):
    g = generate_criteo_like(tmp_path / "raw", 200_000, scale=0.01, seed=0)
    meta = preprocess(g.tsv, tmp_path / "p", chunk_bytes=16 << 20)
    c = ceiling_from_dir(tmp_path / "p")
    assert c.rows == 20_000
    assert c.auc > 0.75 and c.expected_auc > 0.75
    assert 0.3 < c.logloss < 0.55
    offsets = np.cumsum([0] + [meta["vocab_sizes"][k] for k in CAT_COLUMNS])
    tr, te = pq.read_table(tmp_path / "p" / "train"), pq.read_table(tmp_path / "p" / "test")
    lr = LogisticRegression(C=0.5, max_iter=60, tol=1e-3).fit(_one_hot(tr, offsets), tr["label"].to_numpy())
    auc = roc_auc_score(te["label"].to_numpy(), lr.predict_proba(_one_hot(te, offsets))[:, 1])
    assert 0.6 < auc < c.auc - 0.03, (auc, c)
