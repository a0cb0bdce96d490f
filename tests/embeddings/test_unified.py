import pytest
import torch
import yaml

from recsys_emb.hashing import bucket_matrix, seed_from_name, seed_keys
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.memory import memory_from_module, memory_from_specs
from recsys_emb.specs import FeatureSpec, Full, Unified, UnifiedTable, validate_feature_set
from recsys_emb.spec_io import dump_specs, load_specs, specs_from_dicts

U = UnifiedTable("shared", rows=1000, chunk_dim=8)


def rows_of(layer, name, ids):
    salts = layer.variants[name].salts
    return bucket_matrix(torch.as_tensor(ids), seed_keys(salts), layer.variants[name].spec.group.rows)


def test_salts_come_from_group_feature_and_chunk():
    f = FeatureSpec("a", Unified(U, chunks=2))
    assert f.embedding.salts == (seed_from_name("shared", "a", 0), seed_from_name("shared", "a", 1))


def test_same_raw_id_in_two_features_lands_on_different_rows_at_birthday_rate():
    layer = EmbeddingLayer([FeatureSpec("a", Unified(U)), FeatureSpec("b", Unified(U))])
    ids = torch.randint(-2**62, 2**62, (400_000,), generator=torch.Generator().manual_seed(0))
    ra, rb = rows_of(layer, "a", ids)[:, 0], rows_of(layer, "b", ids)[:, 0]
    rate = (ra == rb).double().mean().item()
    assert abs(rate - 1 / U.rows) < 0.1 / U.rows, rate  # independent salts: P(same row) = 1/rows


def test_occupancy_matches_birthday_estimate():
    layer = EmbeddingLayer([FeatureSpec("a", Unified(U))])
    k = 1500
    ids = torch.randint(0, 2**40, (k,), generator=torch.Generator().manual_seed(1))
    used = rows_of(layer, "a", ids)[:, 0].unique().numel()
    expected = U.rows * (1 - (1 - 1 / U.rows) ** k)  # distinct rows hit by k random ids
    assert abs(used - expected) < 0.1 * expected


def test_chunks_concatenate_and_match_reference():
    torch.manual_seed(0)
    layer = EmbeddingLayer([FeatureSpec("a", Unified(U, chunks=3)), FeatureSpec("c", Full(dim=4), cardinality=5),
                            FeatureSpec("b", Unified(U, chunks=1), pooling="mean")])
    assert layer.embedding_dims == {"a": 24, "c": 4, "b": 8}
    assert [t.name for t in layer.table_defs] == ["shared", "c"]
    bags = {"a": [[3, -9], [12]], "c": [[1], [2]], "b": [[3, 4], []]}
    out = layer(kjt_from_lists(bags)).to_dict()
    w = layer.ebc.embedding_bags["shared"].weight.detach()
    ra = rows_of(layer, "a", [3, -9, 12])
    expect_a0 = torch.cat([w[ra[0, j]] + w[ra[1, j]] for j in range(3)])
    torch.testing.assert_close(out["a"][0], expect_a0)
    torch.testing.assert_close(out["a"][1], torch.cat([w[ra[2, j]] for j in range(3)]))
    rb = rows_of(layer, "b", [3, 4])
    torch.testing.assert_close(out["b"][0], (w[rb[0, 0]] + w[rb[1, 0]]) / 2)
    assert out["b"][1].abs().sum() == 0


def test_state_round_trips_with_salts(tmp_path):
    specs = [FeatureSpec("a", Unified(U, chunks=2)), FeatureSpec("b", Unified(U))]
    a = EmbeddingLayer(specs)
    state = a.state_dict()
    assert torch.equal(state["variants.a.salts"], torch.tensor(specs[0].embedding.salts))
    path = tmp_path / "f.yaml"
    dump_specs(specs, path)
    loaded = load_specs(path)
    assert loaded == specs
    b = EmbeddingLayer(loaded)
    b.load_state_dict(state)
    kjt = kjt_from_lists({"a": [[1], [2, 3]], "b": [[4], [5]]})
    torch.testing.assert_close(a(kjt).values(), b(kjt).values(), rtol=0, atol=0)


def test_yaml_unified_tables_section():
    text = """
unified_tables: [{name: shared, rows: 1000, chunk_dim: 8}]
features:
  - {name: a, embedding: {type: unified, group: shared, chunks: 2}}
  - {name: b, embedding: {type: unified, group: shared}}
"""
    data = yaml.safe_load(text)
    specs = specs_from_dicts(data["features"], data["unified_tables"])
    assert specs[0].embedding.group == U and specs[0].output_dim == 16
    with pytest.raises(ValueError, match=r"feature 'a': embedding.group='nope' is not a defined unified table"):
        specs_from_dicts([{"name": "a", "embedding": {"type": "unified", "group": "nope"}}], data["unified_tables"])


def test_group_validation():
    with pytest.raises(ValueError, match="one table needs one definition"):
        validate_feature_set([FeatureSpec("a", Unified(U)), FeatureSpec("b", Unified(UnifiedTable("shared", 10, 8)))])
    with pytest.raises(ValueError, match="also a feature name"):
        validate_feature_set([FeatureSpec("shared", Unified(U))])
    with pytest.raises(ValueError, match=r"UnifiedTable.chunk_dim=6 must be a multiple of 4"):
        UnifiedTable("u", 10, 6)


def test_memory_counts_the_shared_table_once():
    specs = [FeatureSpec("a", Unified(U, chunks=2)), FeatureSpec("b", Unified(U)),
             FeatureSpec("c", Full(dim=4), cardinality=10)]
    m = memory_from_specs(specs)
    assert m.params == 1000 * 8 + 40
    assert m.per_feature_params == {"a": 0, "b": 0, "c": 40, "shared": 8000}
    mm = memory_from_module(EmbeddingLayer(specs))
    assert mm.tables == m.tables and mm.per_feature_params == m.per_feature_params
