"""The built-in ``criteo`` schema: the schema reader writes the same Parquet shards, ``counts.npz`` and
``vocab.npz``, byte for byte, and the same ``metadata.json`` (all but the run's seconds) as the Criteo reader
(one unit and several)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from recsys_emb.data.criteo import preprocess
from recsys_emb.data.tabular import load_table_spec, preprocess_table
from recsys_emb.errors import BadLineError


@pytest.mark.parametrize("kw", [{"workers": 1}, {"workers": 2, "unit_bytes": 200_000, "rows_per_shard": 1500}])
def test_criteo_schema_output_is_byte_identical_to_the_criteo_reader(small_raw, tmp_path, kw):
    tsv = small_raw / "criteo_like.tsv"
    a = preprocess(tsv, tmp_path / "criteo", min_count=2, **kw)
    spec = load_table_spec("criteo")
    b = preprocess_table(dataclasses.replace(spec, min_count=2), tsv, tmp_path / "schema", **kw)
    files = sorted(p.relative_to(tmp_path / "criteo") for p in (tmp_path / "criteo").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "schema") for p in (tmp_path / "schema").rglob("*") if p.is_file())
    for f in files:
        if f.name != "metadata.json":
            assert (tmp_path / "criteo" / f).read_bytes() == (tmp_path / "schema" / f).read_bytes(), f
    ma, mb = (json.loads((tmp_path / d / "metadata.json").read_text()) for d in ("criteo", "schema"))
    assert list(ma) == list(mb)
    assert {k: v for k, v in ma.items() if k != "seconds"} == {k: v for k, v in mb.items() if k != "seconds"}
    assert (a["schema"], a["vocab_sizes"]) == (b["schema"], b["vocab_sizes"])


def test_criteo_schema_with_a_vocabulary_maps_a_new_day_as_the_criteo_reader_does(small_raw, tmp_path):
    tsv = small_raw / "criteo_like.tsv"
    preprocess(tsv, tmp_path / "day0", min_count=2, workers=1)
    a = preprocess(tsv, tmp_path / "criteo", vocab=tmp_path / "day0", workers=1)
    b = preprocess_table("criteo", tsv, tmp_path / "schema", vocab=tmp_path / "day0", workers=1)
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert b["vocab_source"] == str((tmp_path / "day0").resolve())


def test_criteo_dataset_key_needs_the_builtin_columns(tmp_path):
    from recsys_emb.data.tabular import TableSpec
    from recsys_emb.errors import ConfigError

    d = {**load_table_spec("criteo").to_dict(), "label": "I1", "dense": {}}
    with pytest.raises(ConfigError, match=r"schema: label differs from the built-in criteo schema's"):
        preprocess_table(TableSpec.from_dict(d), tmp_path / "none.tsv", tmp_path / "out")


def test_criteo_schema_names_a_bad_hex_value(tmp_path):
    row = ["1"] + ["5"] * 13 + ["0a1b2c3d"] * 26
    bad = list(row)
    bad[20] = "xyz"  # C7
    (tmp_path / "d.tsv").write_text("\n".join("\t".join(r) for r in (row, row, bad, row)) + "\n")
    with pytest.raises(BadLineError, match=r"d.tsv:3: malformed line: non-hex value in column 'C7' \(value 'xyz'\)"):
        preprocess_table("criteo", tmp_path / "d.tsv", tmp_path / "out")
