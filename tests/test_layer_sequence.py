"""SequenceEmbeddingLayer: unpooled rows for every variant, equal to the pooled layer's per-id rows."""

import random

import pytest
import torch

from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, kjt_from_lists
from recsys_emb.memory import memory_from_module, memory_from_specs
from recsys_emb.specs import FeatureSpec, Full, Hashed, MixedDimension, QuotientRemainder, Unified, UnifiedTable

U = UnifiedTable("u", rows=64, chunk_dim=4)
VARIANTS = {
    "full": Full(dim=8),
    "hashed": Hashed(dim=8, buckets=13),
    "multi_hash": Hashed(dim=8, buckets=13, num_hashes=3),
    "multi_hash_weighted": Hashed(dim=8, buckets=13, num_hashes=2, combiner="weighted"),
    "qr_mult": QuotientRemainder(dim=8, collisions=4),
    "qr_concat": QuotientRemainder(dim=8, collisions=4, op="concat"),
    "mixed": MixedDimension(base_dim=8, alpha=0.5, boundaries=(4, 12), block_dims=(8, 4, 4)),
    "mixed_field": MixedDimension(base_dim=8, boundaries=(), block_dims=(4,)),  # the preset default form
    "unified": Unified(U, chunks=2),
}


def copy_state(seq, pooled):
    """Load the pooled layer's parameters into the sequence layer (same table names)."""
    tables = {}
    for name, p in pooled.named_parameters():
        if ".embedding_bags." in name:
            tables[name.split(".")[-2]] = p
    with torch.no_grad():
        for name, p in seq.named_parameters():
            if ".embeddings." in name:
                p.copy_(tables[name.split(".")[-2]])
            else:
                p.copy_(dict(pooled.named_parameters())[name])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sequence_rows_equal_pooled_rows_before_pooling(variant):
    torch.manual_seed(0)
    spec = VARIANTS[variant]
    pooled = EmbeddingLayer([FeatureSpec("x", spec, cardinality=40)])
    seq = SequenceEmbeddingLayer([FeatureSpec("x", spec, cardinality=40, pooling="none")])
    copy_state(seq, pooled)
    rng = random.Random(0)
    bags = [[rng.randrange(40) for _ in range(rng.randint(0, 4))] for _ in range(10)]
    out = seq(kjt_from_lists({"x": bags}))["x"]
    assert out.lengths().tolist() == [len(b) for b in bags]
    flat = [i for b in bags for i in b]
    # Each id alone in its bag: the pooled layer's output is exactly that id's row.
    per_id = pooled(kjt_from_lists({"x": [[i] for i in flat]})).values()
    torch.testing.assert_close(out.values(), per_id, rtol=1e-5, atol=1e-6)
    if variant != "qr_mult":  # every other combine is linear, so summing the rows gives the pooled bag
        sums = torch.stack([out.values()[o:o + n].sum(0) for o, n in
                            zip([sum(len(b) for b in bags[:k]) for k in range(len(bags))], map(len, bags))])
        torch.testing.assert_close(sums, pooled(kjt_from_lists({"x": bags})).values(), rtol=1e-5, atol=1e-5)


def test_history_and_candidate_share_the_item_table_across_dims():
    specs = [
        FeatureSpec("item", Full(dim=8), cardinality=50, pooling="none"),
        FeatureSpec("history", Full(dim=8), cardinality=50, pooling="none", shared_with="item"),
        FeatureSpec("cat", MixedDimension(base_dim=8, alpha=1.0, boundaries=(2,), block_dims=(8, 4)),
                    cardinality=10, pooling="none"),
        FeatureSpec("hist_cat", MixedDimension(base_dim=8, alpha=1.0, boundaries=(2,), block_dims=(8, 4)),
                    cardinality=10, pooling="none", shared_with="cat"),
    ]
    layer = SequenceEmbeddingLayer(specs)
    assert sorted(layer.ecs) == ["d4", "d8"]  # one TorchRec EmbeddingCollection per table dimension
    out = layer(kjt_from_lists({"item": [[3], [4]], "history": [[1, 3], []], "cat": [[0], [7]],
                                "hist_cat": [[7, 0], [1]]}))
    assert list(out) == ["item", "history", "cat", "hist_cat"]
    torch.testing.assert_close(out["item"].values()[0], out["history"].values()[1])
    torch.testing.assert_close(out["cat"].values()[1], out["hist_cat"].values()[0])
    torch.testing.assert_close(out["cat"].values()[0], out["hist_cat"].values()[1])
    a, b = memory_from_specs(specs), memory_from_module(layer)
    assert a.tables == b.tables and a.params == b.params


def test_pooling_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"feature 'x': pooling='sum' is not served by SequenceEmbeddingLayer"):
        SequenceEmbeddingLayer([FeatureSpec("x", Full(dim=4), cardinality=3)])
    with pytest.raises(ValueError, match=r"feature 'x': pooling='none' is not served by EmbeddingLayer"):
        EmbeddingLayer([FeatureSpec("x", Full(dim=4), cardinality=3, pooling="none")])


def test_sequence_bad_ids_name_the_feature():
    layer = SequenceEmbeddingLayer([FeatureSpec("hist", Full(dim=4), cardinality=3, pooling="none")])
    with pytest.raises(ValueError, match=r"feature 'hist'.*: 7"):
        layer(kjt_from_lists({"hist": [[1, 7]]}))
