import pytest
import torch

from family_helpers import check_bytes, check_forward_and_gradients, check_sequence_rows, check_state_dict_round_trip
from recsys_emb.errors import SpecError
from recsys_emb.spec_io import feature_from_dict
from recsys_emb.specs import FeatureSpec, LowRank

SPEC = LowRank(dim=16, rank=4)


def reference(layer):
    a = layer.ebc.embedding_bags["x"].weight.detach().clone().requires_grad_()
    p = layer.variant("x").projection.weight.detach().clone().requires_grad_()
    return {"ebc.embedding_bags.x.weight": a, "variants.x.projection.weight": p}, a @ p.t()


def test_forward_and_gradients_equal_the_materialised_table():
    check_forward_and_gradients(SPEC, reference)


def test_unpooled_rows_equal_the_materialised_table():
    check_sequence_rows(SPEC, reference)


def test_below_min_rows_a_field_is_a_plain_table():
    f = FeatureSpec("x", LowRank(dim=16, rank=4, min_rows=51), cardinality=50)
    assert [(t.rows, t.dim) for t in f.tables()] == [(50, 16)] and f.embedding.dense_params(50) == 0
    check_forward_and_gradients(f.embedding, lambda layer: (
        {"ebc.embedding_bags.x.weight": (w := layer.ebc.embedding_bags["x"].weight.detach().clone().requires_grad_())}, w))


@pytest.mark.parametrize("spec", [SPEC, LowRank(dim=16, rank=4, min_rows=51)])
def test_bytes_from_specs_equal_the_built_layer(spec):
    check_bytes(spec)


def test_state_dict_round_trip():
    check_state_dict_round_trip(SPEC)


def test_initial_product_has_the_full_tables_variance():
    torch.manual_seed(0)
    from family_helpers import layer_for
    _, table = reference(layer_for(LowRank(dim=64, rank=32)))
    assert abs(table.var().item() * 3 * 50 - 1) < 0.15  # U(-1/sqrt(N), 1/sqrt(N)) has variance 1/(3N)


@pytest.mark.parametrize("fields, message", [
    ({"dim": 16, "rank": 6}, r"LowRank.rank=6 must be a multiple of 4"),
    ({"dim": 16, "rank": 16}, r"LowRank.rank=16 must be < dim=16"),
    ({"dim": 16, "rank": 4, "min_rows": -1}, r"LowRank.min_rows=-1 must be >= 0"),
    ({"dim": 16}, r"feature 'C1': embedding type 'lowrank'"),
])
def test_invalid_specs_are_refused_in_one_line(fields, message):
    with pytest.raises(SpecError, match=message) as e:
        feature_from_dict({"name": "C1", "cardinality": 10, "embedding": {"type": "lowrank", **fields}})
    assert "\n" not in str(e.value)
