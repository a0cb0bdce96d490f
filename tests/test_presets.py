import pytest

from recsys_emb.memory import memory_from_specs
from recsys_emb.presets import VARIANTS, VariantPreset, feature_specs
from recsys_emb.specs import Full, Hashed, MixedDimension, QuotientRemainder, Unified

CARDS = {"small": 100, "big": 100_000, "huge": 1_000_000, "hist": 100_000}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_with_shared_history(variant):
    specs = feature_specs(CARDS, VariantPreset(variant, dim=16, compression=4), poolings={"hist": "none", "big": "none"},
                          shared={"hist": "big"})
    by = {s.name: s for s in specs}
    assert isinstance(by["small"].embedding, Unified if variant == "unified" else Full)
    assert by["hist"].embedding == by["big"].embedding and by["hist"].shared_with == "big"
    kinds = {"full": Full, "hashed": Hashed, "multi_hash": Hashed, "qr": QuotientRemainder,
             "mixed": MixedDimension, "unified": Unified}
    assert isinstance(by["huge"].embedding, kinds[variant])


@pytest.mark.parametrize("variant", ["hashed", "multi_hash", "qr", "unified"])
def test_compression_sets_the_budget(variant):
    full = memory_from_specs(feature_specs(CARDS, VariantPreset("full", dim=16))).params
    comp = memory_from_specs(feature_specs(CARDS, VariantPreset(variant, dim=16, compression=10))).params
    assert 0.09 < comp / full < 0.12


def test_per_field_dims_and_overrides():
    specs = feature_specs(CARDS, VariantPreset("hashed", dim=16, dims={"big": 8},
                                               overrides={"huge": {"type": "qr", "dim": 32, "collisions": 10}}))
    by = {s.name: s for s in specs}
    assert by["big"].output_dim == 8 and isinstance(by["huge"].embedding, QuotientRemainder)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['nope'\]"):
        feature_specs(CARDS, VariantPreset("full", dims={"nope": 8}))
    with pytest.raises(ValueError, match="embeddings.variant='x' must be one of"):
        VariantPreset("x")


def test_one_block_is_field_level_mixed_dimension():
    """num_blocks=1: DLRM's md_solver form -- each large field one table, its dim by the field-level
    rule, projected to the common dim; a field at the full dim is a plain table."""
    from recsys_emb.specs import mixed_field_dims, resolve_frequencies, specs_from_dicts, specs_to_dicts

    cards = {"small": 100, "mid": 20_000, "big": 100_000, "huge": 1_000_000}
    specs = feature_specs(cards, VariantPreset("mixed", dim=32, alpha=0.3, num_blocks=1))
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
               for s in feature_specs(cards, VariantPreset("mixed", dim=32, alpha=0.0, num_blocks=1)))
