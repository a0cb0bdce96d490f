import pytest
import torch

from family_helpers import (check_bytes, check_forward_and_gradients, check_oov_reads_its_own_parameters,
                            check_sequence_rows, check_state_dict_round_trip)
from recsys_emb.embeddings.robe import robe_seeds
from recsys_emb.errors import SpecError
from recsys_emb.hashing import hash_to_buckets
from recsys_emb.spec_io import feature_from_dict, specs_from_dicts
from recsys_emb.specs import FeatureSpec, Robe, RobeArray

ARRAY = RobeArray("robe", size=96)
SPECS = {"blocks_in_id": Robe(ARRAY, dim=16, block=8), "ids_in_block": Robe(ARRAY, dim=8, block=32)}


def reference(layer):
    """Element ``j`` of id ``x``'s row: ``M[(4 * start + e) mod size]``, the ROBE-Z formula written per element
    (the OOV id: the floats from ``4 * oov_row`` on)."""
    spec = layer.variant("x").spec
    m = layer.ebc.embedding_bags["robe"].weight.detach().clone().requires_grad_()
    flat, size, d, z = m.view(-1), spec.group.size, spec.dim, spec.block
    seeds = robe_seeds("robe", "x", max(1, d // z))
    rows = []
    for x in range(50):
        if x == spec.oov_id:
            rows.append(flat[4 * spec.oov_row:4 * spec.oov_row + d])
            continue
        idx = []
        for j in range(d):
            if z <= d:
                start, e = int(hash_to_buckets(torch.tensor([x]), seeds[j // z], size // 4)), j % z
            else:
                c = z // d
                start, e = int(hash_to_buckets(torch.tensor([x // c]), seeds[0], size // 4)), (x % c) * d + j
            idx.append((4 * start + e) % size)
        rows.append(flat[idx])
    return {"ebc.embedding_bags.robe.weight": m}, torch.stack(rows)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_forward_and_gradients_equal_the_materialised_table(case):
    check_forward_and_gradients(SPECS[case], reference)


OOV_ARRAY = RobeArray("robe", size=96, reserved=5)  # one field's 4 rows at dim 16, and one more
OOV_SPECS = {"blocks_in_id": Robe(OOV_ARRAY, dim=16, block=8, oov_id=49, oov_row=25),
             "ids_in_block": Robe(OOV_ARRAY, dim=8, block=32, oov_id=49, oov_row=24)}


@pytest.mark.parametrize("case", sorted(OOV_SPECS))
def test_the_oov_id_reads_reserved_rows_of_its_own(case):
    spec = OOV_SPECS[case]
    rows = torch.zeros(OOV_ARRAY.total_rows, 4, dtype=torch.bool)
    rows[spec.oov_row:spec.oov_row + spec.dim // 4] = True
    check_oov_reads_its_own_parameters(spec, lambda layer: {"ebc.embedding_bags.robe.weight": rows})
    check_forward_and_gradients(spec, reference)
    check_bytes(spec)


def test_oov_rows_outside_the_reserved_rows_are_refused():
    with pytest.raises(SpecError, match=r"Robe.oov_row=27 with dim=16 reads rows up to 30, past array 'robe'.s 29 "
                                        r"rows \(rows=24, reserved=5\); raise its reserved rows"):
        Robe(OOV_ARRAY, dim=16, block=8, oov_id=49, oov_row=27)
    with pytest.raises(SpecError, match=r"Robe.oov_row=23 must be >= 24"):
        Robe(OOV_ARRAY, dim=16, block=8, oov_id=49, oov_row=23)
    with pytest.raises(SpecError, match=r"give oov_id \(49\) and oov_row \(None\) together"):
        Robe(OOV_ARRAY, dim=16, block=8, oov_id=49)


def test_unpooled_rows_equal_the_materialised_table():
    check_sequence_rows(SPECS["blocks_in_id"], reference)


def test_ids_of_one_block_read_consecutive_floats():
    spec = SPECS["ids_in_block"]  # 4 ids per block of 32 floats
    _, table = reference(__import__("family_helpers").layer_for(spec))
    m = table.detach()
    flat = torch.cat([m[4], m[5], m[6], m[7]])
    assert flat.numel() == 32 and torch.equal(flat[8:16], m[5])


def test_bytes_from_specs_equal_the_built_layer():
    check_bytes(SPECS["blocks_in_id"])


def test_state_dict_round_trip():
    check_state_dict_round_trip(SPECS["blocks_in_id"])


def test_negative_and_huge_ids_read_valid_rows():
    from family_helpers import layer_for
    v = layer_for(SPECS["ids_in_block"]).variant("x")
    rows = v.rows_of(torch.tensor([-1, -2**63, 2**63 - 1, 5]))
    assert bool(((rows >= 0) & (rows < ARRAY.rows)).all())


def test_two_features_share_one_array_and_two_definitions_are_refused():
    specs = specs_from_dicts([
        {"name": "a", "embedding": {"type": "robe", "group": {"name": "robe", "size": 96}, "dim": 8, "block": 8}},
        {"name": "b", "embedding": {"type": "robe", "group": {"name": "robe", "size": 96}, "dim": 16}}])
    assert {t.name for s in specs for t in s.tables()} == {"robe"}
    with pytest.raises(SpecError, match=r"feature 'b': ROBE array 'robe' is .*one table needs one definition"):
        specs_from_dicts([
            {"name": "a", "embedding": {"type": "robe", "group": {"name": "robe", "size": 96}, "dim": 8}},
            {"name": "b", "embedding": {"type": "robe", "group": {"name": "robe", "size": 64}, "dim": 8}}])


@pytest.mark.parametrize("fields, message", [
    ({"group": {"name": "r", "size": 90}, "dim": 8}, r"RobeArray.size=90 must be a multiple of 4"),
    ({"group": {"name": "r", "size": 96}, "dim": 16, "block": 12}, r"Robe.block=12 must divide dim=16 or be a multiple"),
    ({"group": {"name": "r", "size": 96}, "dim": 8, "block": 128}, r"Robe.block=128 must be <= the array's size=96"),
    ({"group": {"name": "r"}, "dim": 8}, r"feature 'C1': embedding.group \(a ROBE array \{name, size\}\)"),
    ({"group": "r", "dim": 8}, r"Robe.group='r' must be a RobeArray"),
])
def test_invalid_specs_are_refused_in_one_line(fields, message):
    with pytest.raises(SpecError, match=message) as e:
        feature_from_dict({"name": "C1", "embedding": {"type": "robe", **fields}})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec", [SPECS["blocks_in_id"], OOV_SPECS["blocks_in_id"]])
def test_spec_dict_round_trip(spec):
    f = FeatureSpec("C1", spec)
    assert feature_from_dict(f.to_dict()) == f
