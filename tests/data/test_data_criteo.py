"""Criteo TSV reader and preprocessing: counts, categorify, transforms, splits, malformed lines."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_emb.data.criteo import (
    CAT_COLUMNS,
    CRITEO_KAGGLE_CARDINALITIES,
    INT_COLUMNS,
    TSV_COLUMNS,
    BadLineError,
    ReadReport,
    iter_criteo_tsv,
    load_counts,
    load_vocabulary,
    preprocess,
)


def _read_pandas(path):
    return pd.read_csv(path, sep="\t", header=None, names=TSV_COLUMNS, dtype=str, keep_default_na=False)


def test_schema_constants():
    assert len(CRITEO_KAGGLE_CARDINALITIES) == 26 and CRITEO_KAGGLE_CARDINALITIES[2] == 10131227
    assert CAT_COLUMNS[0] == "C1" and INT_COLUMNS[-1] == "I13" and len(TSV_COLUMNS) == 40


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


def _bad_file(small_raw, tmp_path, compress=False):
    lines = (small_raw / "criteo_like.tsv").read_text().splitlines()[:3000]
    good = lines[0].split("\t")
    bad = {
        101: "\t".join(good[:30]),                                  # wrong column count
        502: "\t".join(good[:14] + ["zz12ab34"] + good[15:]),       # non-hex categorical
        1203: "\t".join(good[:3] + ["3.5"] + good[4:]),             # non-integer count
        1999: "\t".join(["2"] + good[1:]),                          # bad label
        2500: "",                                                   # empty line
    }
    for ln, text in bad.items():
        lines[ln - 1] = text
    data = ("\n".join(lines)).encode()  # no final newline: the last line must still be read
    path = tmp_path / ("bad.tsv.gz" if compress else "bad.tsv")
    path.write_bytes(gzip.compress(data) if compress else data)
    np.save(tmp_path / "bad.true_prob.npy", np.load(small_raw / "criteo_like.true_prob.npy")[:3000])
    return path, bad


@pytest.mark.parametrize("compress", [False, True])
def test_malformed_lines_error_mode_names_the_line(small_raw, tmp_path, compress):
    path, bad = _bad_file(small_raw, tmp_path, compress)
    with pytest.raises(BadLineError, match=rf"{path.name}:101: malformed line: wrong column count"):
        preprocess(path, tmp_path / "out", chunk_bytes=50_000)
    with pytest.raises(BadLineError, match=":101:"):
        list(iter_criteo_tsv(path, chunk_bytes=7_000))


@pytest.mark.parametrize("chunk_bytes", [7_000, 1 << 20])
def test_malformed_lines_skip_mode_counts_and_reports(small_raw, tmp_path, chunk_bytes):
    path, bad = _bad_file(small_raw, tmp_path)
    report = ReadReport()
    rows = sum(len(c) for c in iter_criteo_tsv(path, chunk_bytes=chunk_bytes, on_bad_line="skip", report=report))
    assert rows == report.rows == 3000 - len(bad)
    assert report.bad_lines == len(bad)
    assert sorted(b.line for b in report.examples) == sorted(bad)
    reasons = {b.line: b.reason for b in report.examples}
    assert reasons[101].startswith("wrong column count") and reasons[2500].startswith("wrong column count")
    assert reasons[502] == "non-hex C1" and reasons[1203] == "non-integer I3" and reasons[1999] == "label not 0/1"
    meta = preprocess(path, tmp_path / "out", on_bad_line="skip", chunk_bytes=chunk_bytes)
    assert meta["rows"]["total"] == 3000 - len(bad) and meta["bad_lines"]["bad_lines"] == len(bad)
    assert sorted(e["line"] for e in meta["bad_lines"]["examples"]) == sorted(bad)
    # The true probabilities stay aligned with the lines that were kept.
    truth = np.load(small_raw / "criteo_like.true_prob.npy")[:3000]
    kept = np.setdiff1d(np.arange(1, 3001), list(bad)) - 1
    got = np.concatenate([pq.read_table(tmp_path / "out" / s)["true_prob"].to_numpy() for s in ("train", "valid", "test")])
    assert np.array_equal(got, truth[kept])


def test_lines_longer_than_the_chunk_and_blocks_agree(small_raw, tmp_path):
    path = tmp_path / "head.tsv"
    path.write_text("\n".join((small_raw / "criteo_like.tsv").read_text().splitlines()[:400]) + "\n")
    whole = list(iter_criteo_tsv(path, chunk_bytes=1 << 30))
    tiny = list(iter_criteo_tsv(path, chunk_bytes=100))  # smaller than one line
    assert len(whole) == 1 and len(tiny) > 100
    assert np.array_equal(np.concatenate([c.cats for c in tiny], axis=1), whole[0].cats)
    assert np.array_equal(np.concatenate([c.ints for c in tiny]), whole[0].ints)
    assert np.array_equal(np.concatenate([c.lines for c in tiny]), np.arange(1, 401))


def test_missing_flags_and_vocab_from_all(small_raw, tmp_path):
    meta = preprocess(small_raw / "criteo_like.tsv", tmp_path / "p", vocab_from="all", missing_flags=True)
    t = pq.read_table(tmp_path / "p" / "test")
    df = _read_pandas(small_raw / "criteo_like.tsv").iloc[-2000:]
    assert np.array_equal(t["M1"].to_numpy(), (df["I1"] == "").to_numpy().astype(np.int8))
    assert meta["oov_rows_train"]["C3"] == 0  # every value is in an all-rows vocabulary at min_count 1
    with pytest.raises(ValueError, match="on_bad_line"):
        list(iter_criteo_tsv(small_raw / "criteo_like.tsv", on_bad_line="ignore"))
    with pytest.raises(FileNotFoundError):
        preprocess(tmp_path / "nope*.tsv", tmp_path / "q")
