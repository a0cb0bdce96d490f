"""Preprocessing a table under a schema: every column kind, every split kind, header / names, gzip,
Parquet and DataFrame input, bad lines under both policies, hashed vocabularies, and the output layout."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_emb.data.parquet import split_shards
from recsys_emb.data.tabular import preprocess_frame, preprocess_table
from recsys_emb.data.vocabulary import load_vocabulary
from recsys_emb.errors import BadLineError, ConfigError, DataError
from recsys_emb.hashing import hash_raw_value

SPEC = {"label": "click", "drop": ["id"], "dense": {"price": "log1p", "age": "standardize", "raw": "none"},
        "multi_valued": {"tags": "|"}, "sequence": {"hist": {"separator": "|", "max_len": 3}},
        "columns": {"site": {"min_count": 5}}}


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = rng.choice(["a", "b", "c", "rare1", "rare2"], n, p=[0.5, 0.3, 0.18, 0.01, 0.01])
    return pd.DataFrame({
        "id": np.arange(n),
        "click": (rng.random(n) < 0.3).astype(int),
        "hour": 14102100 + np.arange(n) // 30,
        "site": site,
        "device": rng.choice(["0a1b2c3d", "ffffffff", "12ab"], n),  # hex strings
        "app": rng.integers(0, 7, n),  # integers
        "price": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 100, n)),
        "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 10, n).round(1)),
        "raw": rng.normal(0, 1, n).round(3),
        "tags": ["|".join(rng.choice(["x", "y", "z"], k, replace=False)) for k in rng.integers(0, 3, n)],
        "hist": ["|".join(str(v) for v in rng.integers(0, 9, k)) for k in rng.integers(0, 6, n)],
    })


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("table")
    df = _frame()
    df.to_csv(d / "t.csv", index=False)
    return d / "t.csv", df


def _rank_ids(train: pd.Series, min_count: int = 1):
    vc = train.value_counts()
    keys = {v: hash_raw_value(str(v)) if str(v) != "" else -1 for v in vc.index}
    kept = sorted([v for v in vc.index if vc[v] >= min_count], key=lambda v: (-vc[v], keys[v]))
    return {v: i for i, v in enumerate(kept)}, len(kept)


def test_each_column_kind(table_csv, tmp_path):
    path, df = table_csv
    meta = preprocess_table(SPEC, path, tmp_path / "ds", workers=1)
    n_train = meta["rows"]["train"]
    assert meta["rows"] == {"total": 300, "train": 240, "valid": 30, "test": 30}
    assert meta["schema"]["dense"] == ["price", "age", "raw", "price_missing", "age_missing", "raw_missing"]
    assert meta["schema"]["sparse"] == ["hour", "site", "device", "app"]
    assert meta["schema"]["jagged"] == ["tags", "hist"]
    got = pd.concat([pq.read_table(tmp_path / "ds" / s).to_pandas() for s in ("train", "valid", "test")],
                    ignore_index=True)
    assert got["click"].tolist() == df["click"].tolist()
    train = df.iloc[:n_train]
    # Categorical: frequency-ranked over the training rows (ties by raw key), min_count -> the OOV id.
    for c, mc in (("site", 5), ("device", 1), ("app", 1), ("hour", 1)):
        ids, oov = _rank_ids(train[c].astype(str), mc)
        assert meta["oov_ids"][c] == oov and meta["vocab_sizes"][c] == oov + 1
        assert got[c].tolist() == [ids.get(str(v), oov) for v in df[c]], c
        assert meta["oov_rows"][c] == sum(str(v) not in ids for v in df[c]), c
    assert meta["oov_rows"]["site"] > 0 and meta["oov_rows_train"]["site"] > 0
    # Dense: transformed, missing = 0 and flagged; standardize with the training rows' mean and std.
    price = df["price"].to_numpy()
    np.testing.assert_allclose(got["price"], np.where(np.isnan(price), 0, np.log1p(price)), rtol=1e-6)
    assert got["price_missing"].tolist() == np.isnan(price).astype(float).tolist()
    age_train = train["age"].dropna()
    mean, std = age_train.mean(), age_train.std(ddof=0)
    np.testing.assert_allclose(meta["dense_stats"]["age"]["mean"], mean)
    want = np.where(df["age"].isna(), 0, (df["age"] - mean) / std)
    np.testing.assert_allclose(got["age"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["raw"], df["raw"], rtol=1e-6)
    # Multi-valued: a bag of ids per row (empty cell -> empty bag); sequence: the last max_len, in order.
    tag_ids, _ = _rank_ids(train["tags"].str.split("|").explode().replace("", np.nan).dropna())
    assert [list(x) for x in got["tags"]] == [[tag_ids[t] for t in s.split("|") if t] for s in df["tags"]]
    last3 = train["hist"].map(lambda s: [t for t in s.split("|") if t][-3:])  # counted as the model sees them
    hist_ids, _ = _rank_ids(last3.explode().dropna().astype(str))
    assert [list(x) for x in got["hist"]] == [[hist_ids[t] for t in s.split("|") if t][-3:] for s in df["hist"]]
    # The vocabulary is saved for new data, and the splits read back as listed.
    vocab = load_vocabulary(tmp_path / "ds")
    assert vocab["site"].lookup(np.array([hash_raw_value("a")]))[0] == 0
    assert sum(n for _, n in split_shards(tmp_path / "ds", "train")) == n_train


def test_vocab_hash_buckets_the_key(table_csv, tmp_path):
    path, df = table_csv
    spec = {**SPEC, "columns": {"device": {"vocab": "hash", "buckets": 5}}}
    meta = preprocess_table(spec, path, tmp_path / "ds", workers=1)
    got = pq.read_table(tmp_path / "ds" / "train").column("device").to_pylist()
    want = [(hash_raw_value(v) % (1 << 64)) % 5 for v in df["device"][:240]]
    assert got == want
    assert meta["vocab_sizes"]["device"] == 5 and "device" not in meta["oov_ids"]
    assert meta["hashed_fields"] == ["device"] and "device" not in load_vocabulary(tmp_path / "ds")


def _read_all(d):
    return {s: pq.read_table(d / s) for s in ("train", "valid", "test")}


def test_units_and_workers_give_the_same_output(table_csv, tmp_path):
    path, _ = table_csv
    preprocess_table(SPEC, path, tmp_path / "one", workers=1)
    preprocess_table(SPEC, path, tmp_path / "many", workers=2, unit_bytes=4000, rows_per_shard=50)
    a, b = _read_all(tmp_path / "one"), _read_all(tmp_path / "many")
    assert all(a[s].equals(b[s]) for s in a)
    assert (tmp_path / "one" / "vocab.npz").read_bytes() == (tmp_path / "many" / "vocab.npz").read_bytes()


def test_split_by_time_column(table_csv, tmp_path):
    path, df = table_csv
    spec = {**SPEC, "split": {"time_column": "hour", "valid": 14102108, "test": 14102109}}
    meta = preprocess_table(spec, path, tmp_path / "ds", workers=1)
    assert meta["split"] == "time"
    assert meta["rows"]["valid"] == int((df["hour"] == 14102108).sum())
    assert meta["rows"]["test"] == int((df["hour"] >= 14102109).sum())
    assert "hour" not in meta["schema"]["sparse"]
    spec = {**SPEC, "split": {"time_column": "hour", "valid": "14102108", "test": "14102109"}}
    assert preprocess_table(spec, path, tmp_path / "ds2", workers=1)["rows"] == meta["rows"]


def test_split_by_files_and_header_false_with_names_and_gzip(table_csv, tmp_path):
    path, df = table_csv
    lines = path.read_text().splitlines()
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress(("\n".join(lines[1:201]) + "\n").encode()))
    spec = {**SPEC, "header": False, "names": list(df.columns)}
    (tmp_path / "valid.csv").write_text("\n".join(lines[201:251]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(lines[251:]) + "\n")
    meta = preprocess_table(spec, tmp_path / "train.csv.gz", tmp_path / "a", workers=1,
                            valid=[tmp_path / "valid.csv"], test=[tmp_path / "test.csv"])
    assert meta["split"] == "files" and meta["rows"] == {"total": 300, "train": 200, "valid": 50, "test": 50}
    got = pq.read_table(tmp_path / "a" / "test").column("click").to_pylist()
    assert got == df["click"][250:].tolist()
    with pytest.raises(ConfigError, match="split either by files or by the schema's split"):
        preprocess_table({**spec, "split": {"valid": 0.2, "test": 0.1}}, tmp_path / "train.csv.gz", tmp_path / "b",
                         valid=[tmp_path / "valid.csv"])


def test_parquet_and_dataframe_inputs_match_csv(table_csv, tmp_path):
    path, df = table_csv
    preprocess_table(SPEC, path, tmp_path / "csv", workers=1)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "t.parquet")
    preprocess_table({**SPEC, "format": "parquet"}, tmp_path / "t.parquet", tmp_path / "pq", workers=1)
    preprocess_frame(df, SPEC, tmp_path / "df", workers=1)
    preprocess_frame(pa.Table.from_pandas(df, preserve_index=False), SPEC, tmp_path / "arrow", workers=1)
    ref = _read_all(tmp_path / "csv")
    for other in ("pq", "df", "arrow"):
        got = _read_all(tmp_path / other)
        for s in ref:
            assert got[s].equals(ref[s]), (other, s)
    meta = json.loads((tmp_path / "df" / "metadata.json").read_text())
    assert meta["inputs"] == ["<frame>"]


def _with_bad_lines(path, tmp_path):
    lines = path.read_text().splitlines()
    lines[10] = ",".join([lines[10].split(",")[0], "2"] + lines[10].split(",")[2:])  # label 2 at line 11
    fields = lines[20].split(",")
    fields[6] = "cheap"  # price (dense) at line 21
    lines[20] = ",".join(fields)
    lines[30] = lines[30] + ",extra"  # line 31: a column too many
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    return bad


def test_bad_lines_error_names_file_line_and_column(table_csv, tmp_path):
    bad = _with_bad_lines(table_csv[0], tmp_path)
    with pytest.raises(BadLineError, match=r"bad.csv:11: malformed line: label column 'click' not 0/1 \(value '2'\)"):
        preprocess_table(SPEC, bad, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
    lines = bad.read_text().splitlines()
    lines[10] = table_csv[0].read_text().splitlines()[10]
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadLineError, match=r"bad.csv:21: malformed line: non-numeric value in dense column "
                                           r"'price' \(value 'cheap'\)"):
        preprocess_table(SPEC, bad, tmp_path / "out", workers=2, unit_bytes=3000)  # line 21 is in a later unit


def test_bad_lines_skip_counts_them_with_line_numbers(table_csv, tmp_path):
    bad = _with_bad_lines(table_csv[0], tmp_path)
    meta = preprocess_table(SPEC, bad, tmp_path / "out", on_bad_line="skip", workers=2, unit_bytes=3000)
    assert meta["rows"]["total"] == 297
    ex = [(e["line"], e["reason"]) for e in meta["bad_lines"]["examples"]]
    assert {e["path"] for e in meta["bad_lines"]["examples"]} == {str(bad)}
    assert ex == [(11, "label column 'click' not 0/1"), (21, "non-numeric value in dense column 'price'"),
                  (31, "wrong column count (expected 11)")]


def test_missing_input_and_unknown_column(table_csv, tmp_path):
    with pytest.raises(DataError, match=r"input file '.*nope.csv' does not exist"):
        preprocess_table(SPEC, tmp_path / "nope.csv", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"dense.prize: no column 'prize'"):
        preprocess_table({**SPEC, "dense": {"prize": "none"}}, table_csv[0], tmp_path / "out")


def test_sequence_with_a_candidate_shares_its_vocabulary(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    df = pd.DataFrame({"y": (rng.random(n) < 0.4).astype(int), "item": rng.integers(0, 12, n).astype(str),
                       "user": rng.integers(0, 5, n).astype(str),
                       "hist": ["|".join(rng.integers(0, 15, k).astype(str)) for k in rng.integers(0, 6, n)]})
    spec = {"label": "y", "sequence": {"hist": {"max_len": 4, "candidate": "item"}}}
    meta = preprocess_frame(df, spec, tmp_path / "ds", workers=1)
    assert meta["item_pairs"] == [["item", "hist"]]
    assert meta["vocab_sizes"]["item"] == meta["vocab_sizes"]["hist"] and meta["oov_ids"]["item"] == meta["oov_ids"]["hist"]
    t = pq.read_table(tmp_path / "ds" / "train").to_pandas()
    train = df.iloc[:len(t)]
    values = pd.concat([train["item"], train["hist"].map(lambda s: [v for v in s.split("|") if v][-4:]).explode().dropna()])
    ids, _ = _rank_ids(values.astype(str))  # counted over both columns together
    assert t["item"].tolist() == [ids[v] for v in train["item"]]
    assert [list(x) for x in t["hist"]] == [[ids[v] for v in s.split("|") if v][-4:] for s in train["hist"]]
    with pytest.raises(ConfigError, match=r"sequence.hist.candidate='nope' is not a categorical column"):
        preprocess_frame(df, {"label": "y", "sequence": {"hist": {"candidate": "nope"}}}, tmp_path / "x")


def test_vocab_of_a_dataset_maps_new_rows_as_training_did(table_csv, tmp_path):
    path, df = table_csv
    preprocess_table(SPEC, path, tmp_path / "ds", workers=1)
    lines = path.read_text().splitlines(keepends=True)
    (tmp_path / "new.csv").write_text("".join(lines[:1] + lines[201:]))  # the last 100 rows, a "new day"
    meta = preprocess_table(SPEC, tmp_path / "new.csv", tmp_path / "new", workers=1, vocab=tmp_path / "ds")
    old = pd.concat([pq.read_table(tmp_path / "ds" / s).to_pandas() for s in ("train", "valid", "test")],
                    ignore_index=True).iloc[200:].reset_index(drop=True)
    new = pd.concat([pq.read_table(tmp_path / "new" / s).to_pandas() for s in ("train", "valid", "test")],
                    ignore_index=True)
    pd.testing.assert_frame_equal(new, old)  # the same ids and the same standardization
    assert meta["vocab_source"] == str((tmp_path / "ds").resolve())
    assert meta["vocab_sizes"] == json.loads((tmp_path / "ds" / "metadata.json").read_text())["vocab_sizes"]
    with pytest.raises(DataError, match=r"--vocab .*: neither a model directory"):
        preprocess_table(SPEC, tmp_path / "new.csv", tmp_path / "x", vocab=tmp_path)
