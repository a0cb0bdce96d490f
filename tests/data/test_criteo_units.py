"""Parallel preprocess: work units cut at line starts, the same output for any number of workers (byte for
byte), the same as one unit per file (counts, vocabulary, rows, bad-line report), and errors that name the
same line."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_emb.data.criteo import BadLineError, preprocess
from recsys_emb.data.criteo.reader import CriteoChunk
from recsys_emb.data.criteo.units import ValueCounts, load_chunk, plan_units, save_chunk, scan_unit

UNIT = 60_000  # bytes: each plain input below is cut into several units


@pytest.fixture(scope="module")
def inputs(small_raw, tmp_path_factory):
    """Three days: plain with malformed lines (no final newline), gzip, plain with CRLF line ends."""
    d = tmp_path_factory.mktemp("days")
    lines = (small_raw / "criteo_like.tsv").read_text().splitlines()
    good = lines[0].split("\t")
    day0 = lines[:1500]
    for ln, text in {7: "\t".join(good[:30]), 300: "\t".join(good[:14] + ["zz12ab34"] + good[15:]),
                     301: "", 899: "\t".join(["2"] + good[1:]), 1400: "\t".join(good[:3] + ["3.5"] + good[4:])}.items():
        day0[ln - 1] = text
    (d / "day_0").write_bytes("\n".join(day0).encode())
    (d / "day_1.gz").write_bytes(gzip.compress(("\n".join(lines[1500:2500]) + "\n").encode()))
    (d / "day_2").write_bytes(("\r\n".join(lines[2500:4000]) + "\r\n").encode())
    return d


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_units_cut_at_line_starts_and_cover_the_file(inputs):
    path = inputs / "day_2"
    units = plan_units([path], unit_bytes=UNIT)
    assert len(units) >= 4 and [u.index for u in units] == list(range(len(units)))
    data = path.read_bytes()
    assert units[0].start == 0 and units[-1].end is None
    assert all(a.end == b.start and data[b.start - 1:b.start] == b"\n" for a, b in zip(units, units[1:]))
    scans = [scan_unit(u) for u in units]
    assert sum(s.rows for s in scans) == 1500 and sum(s.lines for s in scans) == 1500
    assert plan_units([inputs / "day_1.gz"], unit_bytes=UNIT)[0].byte_range is None  # one unit: gzip


def test_workers_give_the_same_bytes(inputs, tmp_path):
    """1 and 2 workers, and a ProcessPoolExecutor's map, over 3 inputs (bad lines, gzip, CRLF) cut into ~12
    units: every output file equal."""
    kw = dict(on_bad_line="skip", unit_bytes=UNIT, rows_per_shard=700, row_group_rows=300, min_count=2)
    one = preprocess(inputs, tmp_path / "one", workers=1, **kw)
    two = preprocess(inputs, tmp_path / "two", workers=2, **kw)
    with ProcessPoolExecutor(2) as engine:  # another engine over the same per-unit functions
        other = preprocess(inputs, tmp_path / "other", map_units=engine.map, **kw)
    # passes 2 and 3 parsing the text again instead of reading pass 1's parsed rows: the same bytes
    parsed = preprocess(inputs, tmp_path / "parsed", workers=2, parse_cache=False, **kw)
    assert len(plan_units(sorted(inputs.iterdir()), unit_bytes=UNIT)) >= 8
    a = _files(tmp_path / "one")
    assert any(k.endswith(".parquet") for k in a)
    assert not any(".parse-cache" in k for k in a)
    for b in (_files(tmp_path / "two"), _files(tmp_path / "other"), _files(tmp_path / "parsed")):
        assert sorted(a) == sorted(b)
        for name in a:
            if name != "metadata.json":
                assert a[name] == b[name], name
    for meta in (one, two, other, parsed):
        meta.pop("seconds")
    assert one == two == other == parsed
    assert one["inputs"] == [str(inputs / n) for n in ("day_0", "day_1.gz", "day_2")]
    assert one["bad_lines"]["bad_lines"] == 5 and one["rows"]["total"] == 3995


def test_units_equal_one_unit_per_file(inputs, tmp_path):
    """Cutting files into units changes the shard layout only: counts, vocabulary, rows and the bad-line
    report (with each line's number in its file) are those of whole files."""
    kw = dict(on_bad_line="skip", rows_per_shard=700, min_count=2, workers=2)
    cut = preprocess(inputs, tmp_path / "cut", unit_bytes=UNIT, **kw)
    whole = preprocess(inputs, tmp_path / "whole", **kw)
    for name in ("counts.npz", "vocab.npz"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    for split in ("train", "valid", "test"):
        t_cut = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "cut" / split).glob("*.parquet"))])
        t_whole = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "whole" / split).glob("*.parquet"))])
        assert t_cut.equals(t_whole), split
    key = lambda e: (e["path"], e["line"])  # noqa: E731
    bc, bw = cut["bad_lines"], whole["bad_lines"]
    assert sorted(bc["examples"], key=key) == sorted(bw["examples"], key=key)
    assert [e["line"] for e in sorted(bc["examples"], key=key)] == [7, 300, 301, 899, 1400]
    assert bc["by_reason"] == bw["by_reason"] and cut["rows"] == whole["rows"]
    assert len(cut["files"]["train"]) > len(whole["files"]["train"])


def test_error_names_the_line_in_its_file(inputs, tmp_path):
    """A malformed line in a later unit is named with its number in the file, as one process names it."""
    lines = (inputs / "day_2").read_bytes().split(b"\r\n")
    lines[1234] = b"1\t2"
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"\r\n".join(lines))
    for workers in (1, 2):
        with pytest.raises(BadLineError, match=r"bad\.tsv:1235: malformed line: wrong column count"):
            preprocess([inputs / "day_1.gz", bad], tmp_path / f"o{workers}", unit_bytes=UNIT, workers=workers)
        assert not (tmp_path / f"o{workers}").exists()


def test_value_counts_subtract_refuses_values_it_lacks():
    a, b = ValueCounts(1), ValueCounts(1)
    a.add_values(0, np.array([1, 2, 2]))
    b.add_values(0, np.array([3]))
    with pytest.raises(ValueError, match="lack"):
        a.subtract(b)
    b = ValueCounts(1)
    b.add_values(0, np.array([1, 1]))
    with pytest.raises(ValueError, match="exceed"):
        a.subtract(b)


def test_metadata_lists_shards_in_time_order(inputs, tmp_path):
    meta = preprocess(inputs, tmp_path / "o", on_bad_line="skip", unit_bytes=UNIT, rows_per_shard=700, workers=1)
    on_disk = json.loads((tmp_path / "o" / "metadata.json").read_text())
    names = [f["name"] for f in on_disk["files"]["train"]]
    assert names == [f"part-{k:05d}.parquet" for k in range(len(names))]
    label = np.concatenate([pq.read_table(tmp_path / "o" / "train" / n, columns=["label"])["label"].to_numpy()
                            for n in names])
    assert len(label) == meta["rows"]["train"]
    assert not list((tmp_path / "o").rglob(".unit-*")) and not (tmp_path / "o" / ".vocab-arrays").exists()


def test_parse_cache_gives_the_bytes_of_parsing_again(small_raw, tmp_path):
    """With the generator's true_prob side file (read by line number), a split inside a unit (pass 2
    reads part of one), one worker: the cached run writes the files of the uncached one, and leaves no
    cache behind."""
    kw = dict(unit_bytes=300_000, rows_per_shard=4000, workers=1)
    on = preprocess(small_raw / "criteo_like.tsv", tmp_path / "on", parse_cache=True, **kw)
    off = preprocess(small_raw / "criteo_like.tsv", tmp_path / "off", parse_cache=False, **kw)
    assert len(plan_units([small_raw / "criteo_like.tsv"], unit_bytes=300_000)) >= 5
    a, b = _files(tmp_path / "on"), _files(tmp_path / "off")
    assert sorted(a) == sorted(b) and not any("cache" in k for k in a)
    assert all(a[k] == b[k] for k in a if k != "metadata.json")
    assert "true_prob" in pq.read_schema(tmp_path / "on" / "test" / "part-00000.parquet").names
    on.pop("seconds"), off.pop("seconds")
    assert on == off


def test_saved_chunks_load_equal_including_values_too_wide_for_the_narrow_form(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    cats = rng.integers(-1, 2**32 - 1, size=(26, n))
    ints = rng.integers(-5, 2**31 - 1, size=(n, 13))
    base = CriteoChunk(rng.integers(0, 2, n).astype(np.int8), ints, rng.random((n, 13)) < 0.3, cats,
                       np.arange(1000, 1000 + 2 * n, 2, dtype=np.int64), "x.tsv")
    wide_cats = cats.copy()
    wide_cats[3, 7] = 2**32 - 1  # "ffffffff": value + 1 no longer fits 32 bits
    wide_ints = ints.copy()
    wide_ints[4, 2] = 2**40
    for k, chunk in enumerate([base, CriteoChunk(base.labels, wide_ints, base.int_missing, wide_cats, base.lines, "x.tsv")]):
        save_chunk(tmp_path / f"c{k}.npz", chunk)
        back = load_chunk(tmp_path / f"c{k}.npz", "x.tsv")
        for name in ("labels", "ints", "int_missing", "cats", "lines"):
            x, y = getattr(chunk, name), getattr(back, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), (k, name)
    assert (tmp_path / "c0.npz").stat().st_size < (tmp_path / "c1.npz").stat().st_size


def test_parse_cache_is_off_when_the_disk_lacks_room(small_raw, tmp_path, monkeypatch, caplog):
    import importlib
    import logging
    import shutil as _shutil

    pp_module = importlib.import_module("recsys_emb.data.criteo.preprocess")  # the module, not the function
    real = _shutil.disk_usage
    monkeypatch.setattr(pp_module.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))  # a full disk cannot be made here for real
    with caplog.at_level(logging.INFO, logger="recsys_emb.data.criteo.preprocess"):
        meta = preprocess(small_raw / "criteo_like.tsv", tmp_path / "o", workers=1)
    assert meta["rows"]["total"] == 20_000
    assert any("parse cache off" in r.getMessage() and "GB free" in r.getMessage() for r in caplog.records)


def test_a_unit_written_again_after_its_cache_is_gone_parses_the_text(small_raw, tmp_path):
    """An engine that retries a finished write (the first one deleted the unit's cache) gets the same
    shards from the text."""
    from recsys_emb.data.criteo.units import save_vocab_arrays, write_unit
    from recsys_emb.data.vocabulary import Vocabulary

    (unit,) = plan_units([small_raw / "criteo_like.tsv"])
    scan = scan_unit(unit, cache_dir=tmp_path / "cache")
    assert scan.cache is not None and len(list((tmp_path / "cache").rglob("chunk-*.npz"))) >= 1
    vocabs = [Vocabulary.from_counts(scan.counts.keys[j], scan.counts.counts[j], 1) for j in range(26)]
    save_vocab_arrays(tmp_path / "vocab", vocabs)
    kw = dict(first_line=1, first_row=0, bounds=(16_000, 18_000, 20_000), vocab_dir=tmp_path / "vocab")
    first = write_unit(unit, out_dir=tmp_path / "a", cache=scan.cache, **kw)
    assert not (tmp_path / "cache" / "unit-000000").exists()  # deleted once written
    again = write_unit(unit, out_dir=tmp_path / "b", cache=scan.cache, **kw)
    assert first == again and set(first.shards) == {"train", "valid", "test"}
    for shards in first.shards.values():
        for rel, _ in shards:
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
