"""Schema files: every key validated with one-line errors naming the key; resolution against real columns."""

from __future__ import annotations

import pytest

from recsys_emb.data.tabular import TableSpec, load_table_spec
from recsys_emb.errors import ConfigError


def test_resolve_rest_keeps_file_order_and_leaves_out_named_columns():
    spec = TableSpec.from_dict({"label": "click", "drop": ["id"], "dense": {"price": "log1p"},
                                "multi_valued": {"tags": "|"}, "sequence": {"hist": {"max_len": 5}}})
    r = spec.resolve(["id", "click", "z", "tags", "a", "price", "hist"])
    assert r.categorical == ("z", "a")
    assert r.dense == ("price",) and r.dense_flags == ("price_missing",)
    assert r.id_fields == ("z", "a", "tags", "hist")
    assert spec.sequence["hist"].separator == "|" and spec.sequence["hist"].max_len == 5


def test_time_column_is_not_a_feature_unless_listed():
    spec = TableSpec.from_dict({"label": "y", "split": {"time_column": "t", "valid": 5, "test": 9}})
    assert spec.resolve(["y", "t", "a"]).categorical == ("a",)
    spec = TableSpec.from_dict({"label": "y", "categorical": ["t", "a"],
                                "split": {"time_column": "t", "valid": "2024-02", "test": "2024-03"}})
    assert spec.resolve(["y", "t", "a"]).categorical == ("t", "a")


@pytest.mark.parametrize("doc, match", [
    ({"lable": "y"}, r"schema .*s.yaml: lable is not a schema key"),
    ({"format": "xlsx"}, r"format='xlsx' is not allowed"),
    ({"dense": {"p": "log"}}, r"dense.p='log' is not allowed"),
    ({"label": "y", "drop": ["y"]}, r"drop: column 'y' is named twice \(also under label\)"),
    ({"categorical": ["a"], "dense": {"a": "none"}}, r"dense.a: column 'a' is named twice"),
    ({"header": False}, r"names is required with header: false"),
    ({"header": False, "names": ["a", "a"]}, r"names: \['a'\] appear twice"),
    ({"split": {"valid": 0.6, "test": 0.5}}, r"split: valid \+ test"),
    ({"split": {"time_column": "t", "valid": 5, "test": "x"}}, r"both numbers or both strings"),
    ({"split": {"when": "t"}}, r"split.when is not allowed"),
    ({"sequence": {"h": {"max_len": 0}}}, r"sequence.h.max_len=0 must be >= 1"),
    ({"columns": {"a": {"vocab": "hash"}}}, r"columns.a.buckets must be >= 1 with vocab: hash"),
    ({"columns": {"a": "hash"}}, r"columns.a: write \{vocab: hash, buckets: N\}"),
    ({"min_count": "2"}, r"min_count='2' must be an int"),
    ({"drop": "id"}, r"drop='id' must be a list of column names"),
])
def test_bad_schema_is_one_line_naming_the_key(tmp_path, doc, match):
    import yaml

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=match) as e:
        load_table_spec(p)
    assert "\n" not in str(e.value)


def test_unknown_column_names_the_key_and_the_columns():
    spec = TableSpec.from_dict({"label": "click", "dense": {"prize": "none"}}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"schema s.yaml: dense.prize: no column 'prize' in the columns of "
                                          r"d.csv \(click, price\)"):
        spec.resolve(["click", "price"], where="d.csv")
    with pytest.raises(ConfigError, match=r"label: no column 'click'"):
        TableSpec.from_dict({"label": "click"}).resolve(["y", "a"])


def test_missing_schema_file(tmp_path):
    with pytest.raises(ConfigError, match=r"schema file .*nope.yaml' does not exist"):
        load_table_spec(tmp_path / "nope.yaml")
