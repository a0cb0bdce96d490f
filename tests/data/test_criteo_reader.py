"""Criteo TSV reader: malformed lines (error and skip modes, plain and gzip), lines longer than a block."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_emb.data.criteo import BadLineError, ReadReport, iter_criteo_tsv, preprocess


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


@pytest.mark.parametrize("chunk_bytes", [7_000, 1 << 20])
def test_the_label_column_is_optional_per_file(small_raw, tmp_path, chunk_bytes):
    lines = (small_raw / "criteo_like.tsv").read_text().splitlines()[:300]
    unlabelled = [ln.split("\t", 1)[1] for ln in lines]
    unlabelled[100] = lines[100]  # a labelled line in an unlabelled file has one column too many
    (tmp_path / "test_day.tsv").write_text("\n".join(unlabelled) + "\n")
    (tmp_path / "train_day.tsv").write_text("\n".join(lines) + "\n")
    report = ReadReport()
    chunks = list(iter_criteo_tsv([tmp_path / "test_day.tsv", tmp_path / "train_day.tsv"], chunk_bytes=chunk_bytes,
                                  on_bad_line="skip", report=report, label="optional"))
    test = [c for c in chunks if c.path.endswith("test_day.tsv")]
    train = [c for c in chunks if c.path.endswith("train_day.tsv")]
    assert [(b.line, b.reason) for b in report.examples] == [(101, "wrong column count (expected 39)")]
    assert all((c.labels == -1).all() for c in test) and all(((c.labels == 0) | (c.labels == 1)).all() for c in train)
    cats_test = np.concatenate([c.cats for c in test], axis=1)
    cats_train = np.concatenate([c.cats for c in train], axis=1)
    keep = np.r_[0:100, 101:300]
    np.testing.assert_array_equal(cats_test, cats_train[:, keep])
    np.testing.assert_array_equal(np.concatenate([c.lines for c in test]), keep + 1)
    with pytest.raises(BadLineError, match=r"test_day.tsv:1: malformed line: wrong column count \(expected 40\)"):
        list(iter_criteo_tsv(tmp_path / "test_day.tsv"))


def test_counts_beyond_int64_are_named_apart_from_non_integers(small_raw, tmp_path):
    good = (small_raw / "criteo_like.tsv").read_text().splitlines()[0].split("\t")
    counts = {1: str(2 ** 63 - 1), 2: str(2 ** 70), 3: "abc", 4: str(-(2 ** 63))}  # line -> I1
    lines = ["\t".join(good[:1] + [v] + good[2:]) for v in counts.values()]
    (tmp_path / "t.tsv").write_text("\n".join(lines) + "\n")
    report = ReadReport()
    chunks = list(iter_criteo_tsv(tmp_path / "t.tsv", on_bad_line="skip", report=report))
    # before: 2**70 was a "non-integer I1", and 2**63 - 1 too once another value of its block was bad
    assert {b.line: b.reason for b in report.examples} == {2: "I1 out of the int64 range", 3: "non-integer I1"}
    assert [int(v) for c in chunks for v in c.ints[:, 0]] == [2 ** 63 - 1, -(2 ** 63)]
    with pytest.raises(BadLineError, match=rf"t.tsv:2: malformed line: I1 out of the int64 range \(value '{2**70}'\)"):
        list(iter_criteo_tsv(tmp_path / "t.tsv"))
