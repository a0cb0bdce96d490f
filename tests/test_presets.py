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
