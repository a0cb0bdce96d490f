import dataclasses

import pytest

from recsys_emb.errors import ConfigError
from recsys_emb.memory import memory_from_specs
from recsys_emb.presets import VARIANTS, VariantPreset, feature_specs, with_oov_rows
from recsys_emb.specs import (Full, Hashed, LowRank, ManagedCollision, MixedDimension, QuotientRemainder, Robe, TensorTrain, Unified,
                              UnifiedTable)

CARDS = {"small": 100, "big": 100_000, "huge": 1_000_000, "hist": 100_000}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_with_shared_history(variant):
    specs = feature_specs(CARDS, VariantPreset(variant, dim=16, compression=4), poolings={"hist": "none", "big": "none"},
                          shared={"hist": "big"})
    by = {s.name: s for s in specs}
    shared_group = {"unified": Unified, "robe": Robe}
    assert isinstance(by["small"].embedding, shared_group.get(variant, Full))
    assert by["hist"].embedding == by["big"].embedding and by["hist"].shared_with == "big"
    kinds = {"full": Full, "hashed": Hashed, "multi_hash": Hashed, "qr": QuotientRemainder,
             "mixed": MixedDimension, "unified": Unified, "lowrank": LowRank, "tt": TensorTrain, "robe": Robe,
             "mch": ManagedCollision}
    assert isinstance(by["huge"].embedding, kinds[variant])


@pytest.mark.parametrize("variant,knobs", [("hashed", {}), ("multi_hash", {}), ("qr", {}), ("qr", {"qr_op": "mult"}),
                                           ("qr", {"qr_op": "add"}), ("unified", {})])
def test_compression_sets_the_budget(variant, knobs):
    """compression is a bytes ratio for every variant and QR op (concat: twice the rows at half width)."""
    full = memory_from_specs(feature_specs(CARDS, VariantPreset("full", dim=16))).params
    comp = memory_from_specs(feature_specs(CARDS, VariantPreset(variant, dim=16, compression=10, options=knobs))).params
    assert 0.09 < comp / full < 0.12


@pytest.mark.parametrize("variant,compression", [("lowrank", 2), ("lowrank", 3.5), ("tt", 10), ("tt", 1000),
                                                 ("robe", 10), ("robe", 1000)])
def test_compression_sets_the_budget_of_the_factorised_families(variant, compression):
    """Low rank, tensor train and ROBE keep about 1/compression of the large fields' bytes, the small field its
    full bytes (in ROBE's shared array too); low rank's rank is rounded to a multiple of 4 (1/3.5 gives rank 4
    of 16), the tensor-train rank down."""
    small = CARDS["small"] * 16
    want = (sum(CARDS.values()) * 16 - small) / compression + small
    got = memory_from_specs(feature_specs(CARDS, VariantPreset(variant, dim=16, compression=compression))).params
    assert 0.8 * want < got < 1.01 * want, (got, want)


def test_qr_defaults_to_concat_with_twice_the_quotient_rows():
    huge = {s.name: s for s in feature_specs(CARDS, VariantPreset("qr", dim=16, compression=4))}["huge"]
    assert huge.embedding.op == "concat"
    assert [(t.rows, t.dim) for t in huge.tables()] == [(500_000, 8), (2, 8)]
    mult = {s.name: s for s in feature_specs(CARDS, VariantPreset("qr", dim=16, compression=4, options={"qr_op": "mult"}))}["huge"]
    assert [(t.rows, t.dim) for t in mult.tables()] == [(250_000, 16), (4, 16)]
    # below compression 2, concat cannot keep more rows than ids: half the bytes at most
    one = {s.name: s for s in feature_specs(CARDS, VariantPreset("qr", dim=16, compression=1))}["huge"]
    assert [(t.rows, t.dim) for t in one.tables()] == [(1_000_000, 8), (1, 8)]


def test_mixed_defaults_to_the_field_level_form():
    specs = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset("mixed", dim=16))}
    assert specs["huge"].block_dims is not None and len(specs["huge"].block_dims) == 1
    blocks = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset("mixed", dim=16, options={"num_blocks": 4}))}
    assert blocks["huge"].num_blocks == 4


def test_per_field_dims_and_overrides():
    specs = feature_specs(CARDS, VariantPreset("hashed", dim=16, dims={"big": 8},
                                               overrides={"huge": {"type": "qr", "dim": 32, "collisions": 10}}))
    by = {s.name: s for s in specs}
    assert by["big"].output_dim == 8 and isinstance(by["huge"].embedding, QuotientRemainder)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['nope'\]"):
        feature_specs(CARDS, VariantPreset("full", dims={"nope": 8}))
    with pytest.raises(ValueError, match=r"embeddings.variant='x' is not allowed; choose one of \['full'"):
        VariantPreset("x")


def test_one_block_is_field_level_mixed_dimension():
    """num_blocks=1: DLRM's md_solver form -- each large field one table, its dim by the field-level
    rule, projected to the common dim; a field at the full dim is a plain table."""
    from recsys_emb.mixed_dims import mixed_field_dims, resolve_frequencies
    from recsys_emb.spec_io import specs_from_dicts, specs_to_dicts

    cards = {"small": 100, "mid": 20_000, "big": 100_000, "huge": 1_000_000}
    specs = feature_specs(cards, VariantPreset("mixed", dim=32, options={"alpha": 0.3, "num_blocks": 1}))
    by = {s.name: s for s in specs}
    dims = dict(zip(["mid", "big", "huge"], mixed_field_dims([20_000, 100_000, 1_000_000], 32, 0.3)))
    assert isinstance(by["small"].embedding, Full) and isinstance(by["mid"].embedding, Full)  # smallest large: full dim
    for f in ("big", "huge"):
        assert [(t.rows, t.dim) for t in by[f].tables()] == [(cards[f], dims[f])] and dims[f] < 32
        assert by[f].output_dim == 32
    assert memory_from_specs(specs).params == 100 * 32 + 20_000 * 32 + sum(
        cards[f] * dims[f] + dims[f] * 32 for f in ("big", "huge"))  # tables + projections
    # the data's frequency counts do not move explicit dims, and the specs survive a round trip
    assert resolve_frequencies(specs, {"huge": [1.0] * 1_000_000}) == specs
    assert specs_from_dicts(specs_to_dicts(specs)) == specs
    assert all(isinstance(s.embedding, Full)
               for s in feature_specs(cards, VariantPreset("mixed", dim=32, options={"alpha": 0.0, "num_blocks": 1})))


OOV = {"small": 99, "big": 99_999, "huge": 999_999}  # "hist" reads big's tables, so big's OOV id


@pytest.mark.parametrize("variant", ["hashed", "multi_hash"])
def test_a_hashed_field_reads_its_oov_id_from_a_row_of_its_own(variant):
    plain = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset(variant), shared={"hist": "big"})}
    specs = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset(variant), shared={"hist": "big"},
                                                         oov_ids=OOV)}
    for f in ("big", "huge"):
        assert specs[f] == dataclasses.replace(plain[f], oov_id=OOV[f])
        assert specs[f].tables(f, CARDS[f])[0].rows == plain[f].buckets + 1
    assert specs["hist"] == specs["big"]          # the sharing field reads the owner's table and OOV row
    assert specs["small"] == plain["small"] == Full(16)  # a full table already has its OOV row
    off = feature_specs(CARDS, VariantPreset(variant, oov_row=False), shared={"hist": "big"}, oov_ids=OOV)
    assert {s.name: s.embedding for s in off} == plain


def test_a_unified_table_reserves_one_row_per_field_with_an_oov_id():
    specs = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset("unified"), shared={"hist": "big"},
                                                         oov_ids={"small": 99, "huge": 999_999})}
    plain = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset("unified"), shared={"hist": "big"})}
    group = specs["small"].group
    assert group == dataclasses.replace(plain["small"].group, reserved=2)
    assert {f: (s.group, s.oov_id, s.oov_row) for f, s in specs.items()} == {
        "small": (group, 99, group.rows), "big": (group, None, None), "huge": (group, 999_999, group.rows + 1),
        "hist": (group, None, None)}
    assert [s.salts for s in specs.values()] == [s.salts for s in plain.values()]  # the same hashed rows otherwise
    assert memory_from_specs(list(feature_specs(CARDS, VariantPreset("unified"), oov_ids=OOV))).params == \
        memory_from_specs(list(feature_specs(CARDS, VariantPreset("unified")))).params + 3 * 16


def test_tt_robe_and_lowrank_fields_read_their_oov_id_from_parameters_of_their_own():
    """TT: one more dim-float row per field with an OOV id; ROBE: dim / 4 reserved rows of the array per such
    field, after its hashed rows; low rank: unchanged (the OOV id is in range: its own row of the table)."""
    oov = {"small": 99, "huge": 999_999}
    tt, tt_plain = ({s.name: s.embedding for s in feature_specs(CARDS, VariantPreset("tt"), shared={"hist": "big"},
                                                                 oov_ids=o)} for o in (oov, None))
    assert tt["huge"] == dataclasses.replace(tt_plain["huge"], oov_id=999_999) and tt["big"] == tt_plain["big"]
    assert tt["small"] == Full(16)  # a small field stays a full table: its OOV id already has a row
    robe = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset("robe"), shared={"hist": "big"},
                                                         oov_ids=oov)}
    plain = {s.name: s.embedding for s in feature_specs(CARDS, VariantPreset("robe"), shared={"hist": "big"})}
    group = robe["small"].group
    assert group == dataclasses.replace(plain["small"].group, reserved=2 * 16 // 4)
    assert {f: (s.group, s.oov_id, s.oov_row) for f, s in robe.items()} == {
        "small": (group, 99, group.rows), "big": (group, None, None), "huge": (group, 999_999, group.rows + 4),
        "hist": (group, None, None)}
    for variant, extra in (("tt", 16), ("robe", 2 * 16), ("lowrank", 0)):
        with_oov, without = (memory_from_specs(list(feature_specs(CARDS, VariantPreset(variant), oov_ids=o))).params
                             for o in (oov, None))
        assert with_oov == without + extra, variant


def test_oov_rows_keep_what_a_spec_already_says():
    given = {"a": Hashed(dim=8, buckets=10, oov_id=3),
             "b": Unified(UnifiedTable("u", rows=10, chunk_dim=8, reserved=1), oov_id=5, oov_row=10),
             "c": QuotientRemainder(dim=8, collisions=4)}
    assert with_oov_rows(given, {"a": 7, "b": 7, "c": 7}, {"a": 8, "b": 8, "c": 8}) == given


@pytest.mark.parametrize("oov", [100, -1, 2.0, True])
def test_an_oov_id_outside_the_vocabulary_is_refused(oov):
    with pytest.raises(ConfigError, match=r"field 'small': OOV id .* must be an int in \[0, 100\) .*metadata.json's oov_ids"):
        feature_specs({"small": 100, "big": 10_000}, VariantPreset("hashed", min_rows=10), oov_ids={"small": oov})
