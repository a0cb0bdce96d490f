"""Processed dataset directories are never mixed or half written.

A second preprocess into a used folder once left the first run's extra shards in place and training read
them (issue 13, item 1); now it is refused, ``overwrite=True`` replaces the folder whole, readers take exactly
the shards metadata.json lists and refuse a folder that disagrees with it, and a preprocess killed while
writing leaves nothing at its destination.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recsys_emb.data.batches import ParquetBatches
from recsys_emb.data.criteo import preprocess
from recsys_emb.data.metrics import ceiling_from_dir
from recsys_emb.data.parquet import ShardedParquetWriter, split_files, split_shards, write_metadata
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.errors import DataError
from waiting import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    """20,000 Criteo-like rows: 16,000 train rows, i.e. 6 train shards at 3,000 rows per shard."""
    return generate_criteo_like(tmp_path_factory.mktemp("raw") / "raw", 20_000, scale=0.001, seed=11).tsv


def _tree(d: Path):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _same_dataset(a: Path, b: Path) -> None:
    """The same files with the same bytes; metadata.json equal but for the run time."""
    assert _tree(a) == _tree(b)
    for rel in _tree(a):
        if (a / rel).is_file() and rel != "metadata.json":
            assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
    ma, mb = (json.loads((d / "metadata.json").read_text()) for d in (a, b))
    ma.pop("seconds"), mb.pop("seconds")
    assert ma == mb


def _rows_read(d: Path, split: str = "train") -> int:
    return sum(b.batch_size for b in ParquetBatches(d, split, batch_size=1000))


def test_second_preprocess_into_a_used_folder_is_refused_and_overwrite_replaces_it_whole(tsv, tmp_path):
    out = tmp_path / "processed"
    preprocess(tsv, out, rows_per_shard=3000)
    assert len(split_files(out, "train")) == 6
    before = {rel: (out / rel).stat().st_mtime_ns for rel in _tree(out)}

    # Fewer, larger shards the second time: before, shards 2..5 of the first run stayed and training read
    # 28,000 "train" rows from two vocabularies.
    with pytest.raises(DataError, match=r"processed is not empty.*overwrite=True \(--overwrite\)"):
        preprocess(tsv, out, rows_per_shard=8000, min_count=2)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in _tree(out)} == before  # untouched

    preprocess(tsv, out, rows_per_shard=8000, min_count=2, overwrite=True)
    fresh = preprocess(tsv, tmp_path / "fresh", rows_per_shard=8000, min_count=2)
    _same_dataset(out, tmp_path / "fresh")
    assert len(split_files(out, "train")) == 2
    assert _rows_read(out) == fresh["rows"]["train"] == 16_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_readers_refuse_shards_that_disagree_with_metadata(tsv, tmp_path):
    out = tmp_path / "p"
    preprocess(tsv, out, rows_per_shard=3000)
    train = out / "train"

    shutil.copy(train / "part-00000.parquet", train / "part-00006.parquet")  # a stray shard placed by hand
    for read in (lambda: split_files(out, "train"), lambda: ParquetBatches(out, "train")):
        with pytest.raises(DataError, match=r"part-00006\.parquet is not listed in .*metadata\.json.*--overwrite") as e:
            read()
        assert "\n" not in str(e.value) and str(out) in str(e.value)
    (train / "part-00006.parquet").unlink()
    assert _rows_read(out) == 16_000

    shutil.copy(train / "part-00005.parquet", train / "part-00001.parquet")  # 1,000 rows where 3,000 were
    with pytest.raises(DataError, match=r"part-00001\.parquet has 1000 rows, .*metadata\.json lists 3000"):
        ParquetBatches(out, "train")

    (train / "part-00001.parquet").unlink()
    with pytest.raises(DataError, match=r"part-00001\.parquet is missing"):
        ParquetBatches(out, "train")

    shutil.copy(out / "test" / "part-00000.parquet", out / "valid" / "part-00001.parquet")
    with pytest.raises(DataError, match=r"valid.part-00001\.parquet is not listed"):
        ceiling_from_dir(out, split="valid")


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from recsys_emb.data.criteo import preprocess

    def tick(phase, rows):
        if phase == "write" and rows >= 7000:  # two shards of 3,000 rows written, a third open
            print("writing", flush=True)
            time.sleep(600)

    kw = {"overwrite": True} if sys.argv[3] == "overwrite" else {}
    preprocess(sys.argv[1], sys.argv[2], rows_per_shard=3000, chunk_bytes=200_000, progress=tick, **kw)
""")


def _kill_while_writing(tsv: Path, out: Path, overwrite: bool) -> None:
    def shards():
        return {q: q.stat().st_mtime_ns for q in out.parent.rglob("part-*.parquet")}

    before = shards()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tsv), str(out),
                             "overwrite" if overwrite else "no"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the child is mid-write (or has died)
        assert line.strip() == "writing", proc.communicate(timeout=HANG_GUARD_S)[1]
        written = [q for q, t in shards().items() if before.get(q) != t]
        assert len(written) >= 2, f"not mid-write: {written}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def test_a_shard_with_more_rows_than_listed_is_refused_when_no_split_total_is_given(tmp_path):
    # metadata.json lists each shard's rows but no "rows" totals: only the per-shard count catches a
    # shard that grew (rows that no split was meant to hold would be read as training data)
    import pyarrow as pa
    import pyarrow.parquet as pq

    w = ShardedParquetWriter(tmp_path / "train", rows_per_shard=2)
    w.write(pa.table({"x": [1, 2, 3]}))
    write_metadata(tmp_path, {"files": {"train": [{"name": n, "rows": r} for n, r in w.close()]}})
    assert [n for _, n in split_shards(tmp_path, "train")] == [2, 1]
    pq.write_table(pa.table({"x": [3, 4]}), tmp_path / "train" / "part-00001.parquet")  # 2 rows, 1 listed
    with pytest.raises(DataError, match=r"part-00001\.parquet has 2 rows, but .*metadata\.json lists 1") as e:
        split_shards(tmp_path, "train")
    assert "\n" not in str(e.value)


def test_killed_preprocess_leaves_no_partial_output(tsv, tmp_path):
    out = tmp_path / "processed"
    _kill_while_writing(tsv, out, overwrite=False)
    assert not out.exists()  # before: out/train held the shards written so far, and no metadata.json
    meta = preprocess(tsv, out, rows_per_shard=3000)  # the destination is free; the dead run's temporary goes
    assert _rows_read(out) == meta["rows"]["train"] == 16_000
    assert [p.name for p in tmp_path.iterdir()] == ["processed"]


def test_killed_overwrite_keeps_the_previous_dataset(tsv, tmp_path):
    out = tmp_path / "processed"
    preprocess(tsv, out, rows_per_shard=8000, min_count=3)
    shutil.copytree(out, tmp_path / "copy")
    _kill_while_writing(tsv, out, overwrite=True)
    _same_dataset(out, tmp_path / "copy")
    assert _rows_read(out) == 16_000


def _movielens_present() -> bool:
    from recsys_emb.data.movielens import default_movielens_dir

    return (default_movielens_dir() / "ratings.csv").is_file()


def _write(kind: str, out: Path, **kw):
    if kind == "criteo-like":
        return generate_criteo_like(out, 3000, scale=0.001, seed=1, **kw)
    if kind == "sequences":
        from recsys_emb.data.sequences import SequenceConfig, generate_sequences

        return generate_sequences(out, 2000, config=SequenceConfig(users=100, items=500, categories=20, max_len=8),
                                  rows_per_shard=500, **kw)
    if not _movielens_present():
        pytest.skip("MovieLens ml-latest-small not found (set RECSYS_EMB_DATA_DIR)")
    from recsys_emb.data.movielens import prepare_movielens

    return prepare_movielens(out, max_len=5, **kw)


@pytest.mark.parametrize("kind", ["criteo-like", "sequences", "movielens"])
def test_every_writer_refuses_a_used_folder_and_overwrite_replaces_it_whole(kind, tmp_path):
    out = tmp_path / "d"
    _write(kind, out)
    (out / "leftover.tmp").write_text("from an earlier run")
    with pytest.raises(DataError, match=r"d is not empty.*overwrite=True"):
        _write(kind, out)
    (out / "leftover.tmp").unlink()
    _write(kind, out, overwrite=True)
    _write(kind, tmp_path / "fresh")
    assert _tree(out) == _tree(tmp_path / "fresh")
    for rel in _tree(out):
        if rel.endswith((".parquet", ".tsv", ".npy")):
            assert filecmp.cmp(out / rel, tmp_path / "fresh" / rel, shallow=False), rel


@pytest.mark.parametrize("kind", ["criteo-like", "sequences"])
def test_overwrite_never_deletes_a_folder_it_did_not_write(kind, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"notes\.txt"):
        _write(kind, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me" and _tree(mine) == ["notes.txt"]
