import pytest

from recsys_emb.specs import FeatureSpec, Full, Hashed, QuotientRemainder, validate_feature_set
from recsys_emb.spec_io import dump_specs, load_specs, specs_from_dicts, specs_to_dicts


def test_round_trip_yaml(tmp_path):
    specs = [
        FeatureSpec("item", Full(dim=16), cardinality=1000),
        FeatureSpec("cand", Full(dim=16), cardinality=1000, shared_with="item"),
        FeatureSpec("C3", Hashed(dim=8, buckets=500, num_hashes=2, combiner="weighted"), pooling="mean"),
        FeatureSpec("C4", QuotientRemainder(dim=16, collisions=8, op="concat"), cardinality=10_000),
        FeatureSpec("C5", QuotientRemainder(dim=8, buckets=100), cardinality=10_000),
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
