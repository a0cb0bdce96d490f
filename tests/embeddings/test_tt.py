import pytest
import torch
from torch.func import functional_call

from family_helpers import (check_bytes, check_forward_and_gradients, check_oov_reads_its_own_parameters,
                            check_sequence_rows, check_state_dict_round_trip, layer_for)
from recsys_emb.embeddings.tt import TensorTrainEmbedding
from recsys_emb.errors import InvalidInputError, SpecError
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.spec_io import feature_from_dict
from recsys_emb.specs import FeatureSpec, TensorTrain

SPEC = TensorTrain(dim=8, ranks=(3, 2))


def materialise(c0, c1, c2, spec, cardinality):
    """The full table by one einsum over the cores (TT-Rec's definition), cut to ``cardinality`` rows."""
    (n1, n2, n3), (d1, d2, d3), (r1, r2) = spec.resolved_factors(cardinality), spec.resolved_dim_factors(), spec.ranks
    full = torch.einsum("iab,jbcd,kde->ijkace", c0.view(n1, d1, r1), c1.view(n2, r1, d2, r2), c2.view(n3, r2, d3))
    return full.reshape(n1 * n2 * n3, d1 * d2 * d3)[:cardinality]


def reference(layer):
    v = layer.variant("x")
    leaves = {f"variants.x.core{k}": getattr(v, f"core{k}").detach().clone().requires_grad_() for k in range(3)}
    return leaves, materialise(*leaves.values(), v.spec, 50)


def test_forward_and_gradients_equal_the_materialised_table():
    check_forward_and_gradients(SPEC, reference)


def test_unpooled_rows_equal_the_materialised_table():
    check_sequence_rows(SPEC, reference)


def oov_reference(layer):
    """The materialised table with the OOV id's row replaced by the parameter ``oov``."""
    leaves, table = reference(layer)
    leaves["variants.x.oov"] = layer.variant("x").oov.detach().clone().requires_grad_()
    return leaves, torch.cat([table[:OOV_SPEC.oov_id], leaves["variants.x.oov"].unsqueeze(0), table[OOV_SPEC.oov_id + 1:]])


OOV_SPEC = TensorTrain(dim=8, ranks=(3, 2), oov_id=49)


def test_the_oov_id_reads_a_row_of_its_own():
    check_oov_reads_its_own_parameters(OOV_SPEC, lambda layer: {
        "variants.x.core0": torch.zeros(4, 6, dtype=torch.bool), "variants.x.core1": torch.zeros(4, 12, dtype=torch.bool),
        "variants.x.core2": torch.zeros(4, 4, dtype=torch.bool), "variants.x.oov": torch.ones(8, dtype=torch.bool)})
    check_forward_and_gradients(OOV_SPEC, oov_reference)
    check_sequence_rows(OOV_SPEC, oov_reference)
    check_bytes(OOV_SPEC)


def test_training_rows_per_distinct_prefix_equal_eval_rows_per_id():
    v = TensorTrainEmbedding(FeatureSpec("x", OOV_SPEC, cardinality=50))
    ids = torch.tensor([0, 49, 5, 5, 17, 48, 0, 33, 16, 19])  # prefixes x // 4 repeat
    train_rows = v.rows_of(ids)
    torch.testing.assert_close(v.eval().rows_of(ids), train_rows, rtol=1e-6, atol=0)


@pytest.mark.parametrize("limit", ["batched", "per_middle_index"])
def test_both_first_products_equal_the_materialised_table(monkeypatch, limit):
    # per_middle_index: the product taken per distinct i2 (what a batch takes when the gathered copy of the
    # second core would pass GATHER_LIMIT); forward and gradients as the one batched product's
    import recsys_emb.embeddings.tt as tt

    monkeypatch.setattr(tt, "GATHER_LIMIT", 0 if limit == "per_middle_index" else 1 << 62)
    check_forward_and_gradients(SPEC, reference)
    check_forward_and_gradients(OOV_SPEC, oov_reference)
    v = TensorTrainEmbedding(FeatureSpec("x", OOV_SPEC, cardinality=50))
    ids = torch.tensor([0, 49, 5, 5, 17, 48, 0, 33, 16, 19])
    torch.testing.assert_close(v.rows_of(ids), v.eval().rows_of(ids), rtol=1e-6, atol=0)
    empty = v.train().pooled(torch.zeros(0, dtype=torch.long), torch.zeros(2, dtype=torch.long), 2)
    assert empty.shape == (2, 8) and not empty.any()


def test_gradcheck_of_the_pooled_lookup():
    v = TensorTrainEmbedding(FeatureSpec("x", TensorTrain(dim=4, ranks=(2, 3)), cardinality=20)).double()
    ids, lengths = torch.tensor([0, 19, 7, 7, 12]), torch.tensor([2, 0, 3])

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.v = v

        def forward(self, ids, lengths):
            return self.v.pooled(ids, lengths, 3)

    names = ("v.core0", "v.core1", "v.core2")
    cores = tuple(getattr(v, n[2:]).detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(lambda *c: functional_call(Pooled(), dict(zip(names, c)), (ids, lengths)), cores)


def test_default_factors_cover_the_vocabulary():
    assert SPEC.resolved_factors(50) == (4, 4, 4) and SPEC.resolved_dim_factors() == (2, 2, 2)
    assert TensorTrain(dim=16, ranks=(8, 8)).resolved_factors(1000) == (10, 10, 10)
    assert TensorTrain(dim=16, ranks=8).ranks == (8, 8)


def test_initial_table_has_the_full_tables_variance():
    torch.manual_seed(0)
    v = TensorTrainEmbedding(FeatureSpec("x", TensorTrain(dim=16, ranks=(16, 16)), cardinality=4096))
    assert abs(v.materialise().var().item() * 3 * 4096 - 1) < 0.15


def test_bytes_from_specs_equal_the_built_layer():
    check_bytes(SPEC)


def test_state_dict_round_trip():
    check_state_dict_round_trip(SPEC)


def test_ids_outside_the_vocabulary_name_the_feature():
    layer = layer_for(SPEC)
    with pytest.raises(InvalidInputError, match=r"feature 'x': ids \[50\] are outside \[0, 50\)"):
        layer(kjt_from_lists({"x": [[50]], "y": [[0]], "z": [[1]]}))


def test_a_layer_of_tt_features_only_is_refused():
    with pytest.raises(SpecError, match="read no TorchRec table"):
        EmbeddingLayer([FeatureSpec("x", SPEC, cardinality=50)])


@pytest.mark.parametrize("fields, message", [
    ({"dim": 8, "ranks": [2, 2, 2]}, r"TensorTrain.ranks=\(2, 2, 2\) must be 2 ints >= 1"),
    ({"dim": 8, "ranks": 0}, r"TensorTrain.ranks=\(0, 0\) must be 2 ints >= 1"),
    ({"dim": 8, "dim_factors": [2, 2, 4]}, r"TensorTrain.dim_factors=\(2, 2, 4\) multiply to 16, not dim=8"),
    ({"dim": 8, "factors": [2, 2, 2]}, r"feature 'C1': TensorTrain.factors=\(2, 2, 2\) address 8 rows, fewer than "
                                       r"cardinality=10"),
    ({"dim": 6}, r"TensorTrain.dim=6 must be a multiple of 4"),
])
def test_invalid_specs_are_refused_in_one_line(fields, message):
    with pytest.raises(SpecError, match=message) as e:
        feature_from_dict({"name": "C1", "cardinality": 10, "embedding": {"type": "tt", **fields}})
    assert "\n" not in str(e.value)
