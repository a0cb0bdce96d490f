"""The built-in ``criteo`` schema: the schema reader writes the same Parquet shards, ``counts.npz`` and
``vocab.npz``, byte for byte, as the Criteo reader (one unit and several)."""

from __future__ import annotations

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
    b = preprocess_table(spec.__class__.from_dict({**spec.to_dict(), "min_count": 2}), tsv, tmp_path / "schema", **kw)
    files = sorted(p.relative_to(tmp_path / "criteo") for p in (tmp_path / "criteo").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "schema") for p in (tmp_path / "schema").rglob("*") if p.is_file())
    for f in files:
        if f.name != "metadata.json":
            assert (tmp_path / "criteo" / f).read_bytes() == (tmp_path / "schema" / f).read_bytes(), f
    for key in ("rows", "files", "vocab_sizes", "oov_ids", "oov_rows", "oov_rows_train"):
        assert a[key] == b[key], key
    sa, sb = a["schema"], json.loads((tmp_path / "schema" / "metadata.json").read_text())["schema"]
    assert {k: sa[k] for k in ("dense", "sparse", "label", "true_prob", "vocab_sizes")} == \
        {k: sb[k] for k in ("dense", "sparse", "label", "true_prob", "vocab_sizes")}


def test_criteo_schema_names_a_bad_hex_value(tmp_path):
    row = ["1"] + ["5"] * 13 + ["0a1b2c3d"] * 26
    bad = list(row)
    bad[20] = "xyz"  # C7
    (tmp_path / "d.tsv").write_text("\n".join("\t".join(r) for r in (row, row, bad, row)) + "\n")
    with pytest.raises(BadLineError, match=r"d.tsv:3: malformed line: non-hex value in column 'C7' \(value 'xyz'\)"):
        preprocess_table("criteo", tmp_path / "d.tsv", tmp_path / "out")
