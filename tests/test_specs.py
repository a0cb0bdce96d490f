import pytest

from recsys_emb.specs import FeatureSpec, Full, Hashed, QuotientRemainder, Unified, UnifiedTable, validate_feature_set
from recsys_emb.spec_io import dump_specs, load_specs, specs_from_dicts, specs_to_dicts


def test_round_trip_yaml(tmp_path):
    specs = [
        FeatureSpec("item", Full(dim=16), cardinality=1000),
        FeatureSpec("cand", Full(dim=16), cardinality=1000, shared_with="item"),
        FeatureSpec("C3", Hashed(dim=8, buckets=500, num_hashes=2, combiner="weighted"), pooling="mean"),
        FeatureSpec("C4", QuotientRemainder(dim=16, collisions=8, op="concat"), cardinality=10_000),
        FeatureSpec("C5", QuotientRemainder(dim=8, buckets=100), cardinality=10_000),
        FeatureSpec("C6", Hashed(dim=8, buckets=50, oov_id=9_999), cardinality=10_000),
        FeatureSpec("C7", Unified(UnifiedTable("u", rows=30, chunk_dim=8, reserved=1), oov_id=99, oov_row=30)),
        FeatureSpec("C8", Unified(UnifiedTable("u", rows=30, chunk_dim=8, reserved=1), chunks=2)),
    ]
    path = tmp_path / "features.yaml"
    dump_specs(specs, path)
    assert load_specs(path) == specs
    assert specs_from_dicts(specs_to_dicts(specs)) == specs


@pytest.mark.parametrize("make, match", [
    (lambda: Full(dim=6), r"Full\.dim=6 must be a multiple of 4.*use 4 or 8"),
    (lambda: Full(dim=0), r"Full\.dim=0 must be >= 1"),
    (lambda: Hashed(dim=8, buckets=0), r"Hashed\.buckets=0 must be >= 1"),
    (lambda: Hashed(dim=8, buckets=10, combiner="max"), r"combiner='max' must be one of"),
    (lambda: QuotientRemainder(dim=12, op="concat"), r"QuotientRemainder\.dim=12 must be a multiple of 8.*concat"),
    (lambda: QuotientRemainder(dim=8, op="max"), r"op='max' must be one of \('mult', 'add', 'concat'\)"),
    (lambda: QuotientRemainder(dim=8, collisions=4, buckets=3), "not both"),
    (lambda: QuotientRemainder(dim=8, collisions=1), r"collisions=1 must be >= 2"),
    (lambda: Hashed(dim=8, buckets=10, oov_id=-1), r"Hashed\.oov_id=-1 must be >= 0"),
    (lambda: Unified(UnifiedTable("u", rows=10, chunk_dim=8), oov_id=3), r"give oov_id \(3\) and oov_row \(None\) together"),
    (lambda: Unified(UnifiedTable("u", rows=10, chunk_dim=8, reserved=1), oov_id=3, oov_row=4),
     r"Unified\.oov_row=4 must be >= 10 and < 11 \(a reserved row of table 'u'"),
    (lambda: Unified(UnifiedTable("u", rows=10, chunk_dim=8, reserved=1), oov_id=3, oov_row=11),
     r"Unified\.oov_row=11 must be < 11: table 'u' has rows=10 and reserved=1; raise its reserved rows"),
    (lambda: UnifiedTable("u", rows=10, chunk_dim=8, reserved=-1), r"UnifiedTable\.reserved=-1 must be >= 0"),
])
def test_variant_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_feature_validation_names_the_feature():
    with pytest.raises(ValueError, match=r"feature 'C1'.*needs a cardinality"):
        FeatureSpec("C1", Full(dim=8))
    with pytest.raises(ValueError, match=r"feature 'C1': pooling='max'"):
        FeatureSpec("C1", Hashed(dim=8, buckets=4), pooling="max")
    with pytest.raises(ValueError, match=r"feature 'C1': cardinality=0"):
        FeatureSpec("C1", Hashed(dim=8, buckets=4), cardinality=0)
    with pytest.raises(ValueError, match="without '@'"):
        FeatureSpec("a@b", Hashed(dim=8, buckets=4))


def test_dict_errors_name_feature_and_key():
    with pytest.raises(ValueError, match=r"feature 'C2': Full\.dim=6 must be a multiple of 4"):
        specs_from_dicts([{"name": "C2", "cardinality": 10, "embedding": {"type": "full", "dim": 6}}])
    with pytest.raises(ValueError, match=r"feature 'C2': unknown key\(s\) \['bukets'\]"):
        specs_from_dicts([{"name": "C2", "embedding": {"type": "hashed", "dim": 8, "bukets": 6}}])
    with pytest.raises(ValueError, match=r"feature 'C2': embedding.type='nope' is not one of"):
        specs_from_dicts([{"name": "C2", "embedding": {"type": "nope"}}])
    with pytest.raises(ValueError, match=r"feature 'C2': unknown key\(s\) \['dim'\]"):
        specs_from_dicts([{"name": "C2", "dim": 8, "embedding": {"type": "hashed", "dim": 8, "buckets": 6}}])
    with pytest.raises(ValueError, match=r"feature 'C2': embedding type 'hashed'.*buckets"):
        specs_from_dicts([{"name": "C2", "embedding": {"type": "hashed", "dim": 8}}])


def test_feature_set_validation():
    a = FeatureSpec("a", Full(dim=8), cardinality=10)
    with pytest.raises(ValueError, match="appears twice"):
        validate_feature_set([a, a])
    with pytest.raises(ValueError, match=r"feature 'b': shared_with='zz' is not a feature"):
        validate_feature_set([a, FeatureSpec("b", Full(dim=8), cardinality=10, shared_with="zz")])
    with pytest.raises(ValueError, match="same embedding and cardinality"):
        validate_feature_set([a, FeatureSpec("b", Full(dim=8), cardinality=11, shared_with="a")])
    with pytest.raises(ValueError, match="point shared_with at 'a' directly"):
        validate_feature_set([a, FeatureSpec("b", Full(dim=8), cardinality=10, shared_with="a"),
                              FeatureSpec("c", Full(dim=8), cardinality=10, shared_with="b")])


def test_qr_modulus_and_tables():
    assert QuotientRemainder(dim=8).table_rows(100) == (10, 10)
    assert QuotientRemainder(dim=8).table_rows(101) == (10, 11)
    assert QuotientRemainder(dim=8, collisions=4).table_rows(10) == (3, 4)
    assert QuotientRemainder(dim=8, buckets=5).table_rows(100) == (5, 20)
    f = FeatureSpec("x", QuotientRemainder(dim=16, collisions=4, op="concat"), cardinality=10)
    assert [(t.name, t.rows, t.dim) for t in f.tables()] == [("x@q", 3, 8), ("x@r", 4, 8)]
    assert f.output_dim == 16


def test_oov_rows_add_to_the_tables():
    """A hashed OOV row is one more row of its table; a unified table's reserved rows follow its hashed rows."""
    assert [t.rows for t in FeatureSpec("a", Hashed(dim=8, buckets=50, oov_id=7)).tables()] == [51]
    assert [t.rows for t in FeatureSpec("a", Hashed(dim=8, buckets=50)).tables()] == [50]
    g = UnifiedTable("u", rows=30, chunk_dim=8, reserved=2)
    assert [t.rows for t in FeatureSpec("a", Unified(g, oov_id=7, oov_row=31)).tables()] == [32]
    assert g.params == 32 * 8 and g.to_dict() == {"name": "u", "rows": 30, "chunk_dim": 8, "reserved": 2}
    assert UnifiedTable("u", rows=30, chunk_dim=8).to_dict() == {"name": "u", "rows": 30, "chunk_dim": 8}
