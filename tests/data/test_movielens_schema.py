"""MovieLens through the schema reader (``preprocess --schema movielens``): the join-and-history step, then
the tabular path. Its output is the MovieLens reader's: the fingerprints below were taken from that reader
when it still built the tables itself, on ml-latest-small in ../shared/data, with ``min_count=5``,
``test_fraction=0.15``, ``valid_fraction=0.05`` (each split's columns and values, ``metadata.json`` but
its ``seconds`` and ``source``; and, under the pyarrow version that wrote them, each Parquet file's bytes)."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_emb.cli import main
from recsys_emb.data.movielens import default_movielens_dir

CONTENT = {"train": "96edc1520c46cc9ee50d", "valid": "be2cf450485e0d551d9f", "test": "4d6666d850f95cb05f4a",
           "metadata.json": "bbbe51f16819ff6c3cfe"}
FILE_BYTES = {"26.0.1": {"test/part-00000.parquet": "009283bc66d26e695d65",
                         "train/part-00000.parquet": "772accc49fb0a9c0350f",
                         "valid/part-00000.parquet": "5a4fddaa2d1a8335547f"}}

pytestmark = pytest.mark.skipif(not (default_movielens_dir() / "ratings.csv").is_file(),
                                reason="MovieLens ml-latest-small not found (set RECSYS_EMB_DATA_DIR)")


def _content(d):
    out = {}
    for s in ("train", "valid", "test"):
        t = pq.read_table(d / s)
        h = hashlib.sha256()
        for c in t.column_names:
            h.update(c.encode() + json.dumps(t.column(c).to_pylist()).encode())
        out[s] = h.hexdigest()[:20]
    meta = {k: v for k, v in json.loads((d / "metadata.json").read_text()).items() if k not in ("seconds", "source")}
    out["metadata.json"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
    return out


def test_preprocess_schema_movielens_writes_what_the_movielens_reader_wrote(tmp_path, capsys):
    out = tmp_path / "ml"
    args = ["preprocess", "--schema", "movielens", "--input", str(default_movielens_dir()), "--out", str(out),
            "--min-count", "5", "--test-fraction", "0.15", "--valid-fraction", "0.05"]
    assert main(args) == 0
    assert "100,836 rows" in capsys.readouterr().out
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["metadata.json", "test/part-00000.parquet", "train/part-00000.parquet", "valid/part-00000.parquet"]
    assert _content(out) == CONTENT
    want = FILE_BYTES.get(pa.__version__)
    if want is not None:  # Parquet's bytes name the writer's version: compared where it is the same
        assert {f: hashlib.sha256((out / f).read_bytes()).hexdigest()[:20] for f in want} == want
    assert main([*args, "--valid", str(tmp_path / "x.csv")]) == 2  # refused before anything is read
    err = capsys.readouterr().err
    assert err.startswith("error: --schema movielens reads one --input") and err.count("\n") == 1
