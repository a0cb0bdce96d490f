"""Every variant under TorchRec DistributedModelParallel (one process, gloo, fused FBGEMM kernels)."""

import copy

import pytest
import torch

from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.sharding import EmbeddingOptimizer, plan_report, shard_model
from recsys_emb.specs import FeatureSpec, Full, Hashed, QuotientRemainder

VARIANTS = {
    "full": Full(dim=8),
    "hashed": Hashed(dim=8, buckets=17),
    "multi_hash": Hashed(dim=8, buckets=17, num_hashes=2),
    "qr_mult": QuotientRemainder(dim=8, collisions=4),
    "qr_concat": QuotientRemainder(dim=16, collisions=4, op="concat"),
}


def dense(t):
    if hasattr(t, "local_shards"):
        shards = t.local_shards()
        return shards[0].tensor if len(shards) == 1 else torch.cat([s.tensor for s in shards])
    return t


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sharded_forward_and_fused_update_equal_unsharded(variant, single_process_group):
    torch.manual_seed(0)
    specs = [FeatureSpec("x", VARIANTS[variant], cardinality=50),
             FeatureSpec("y", Full(dim=4), cardinality=9, pooling="mean"),
             FeatureSpec("z", VARIANTS[variant], cardinality=50, shared_with="x")]
    layer = EmbeddingLayer(specs)
    ref = copy.deepcopy(layer)
    kjt = kjt_from_lists({"x": [[1], [2, 49], [7]], "y": [[0, 8], [], [3]], "z": [[1], [], [30]]})
    lr = 0.1
    dmp = shard_model(layer, EmbeddingOptimizer("sgd", lr=lr))
    assert {r["sharding_type"] for r in plan_report(dmp)} == {"table_wise"}
    out = dmp(kjt).values()
    expected = ref(kjt).values()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    upstream = torch.randn_like(expected)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    state = dmp.state_dict()
    for name, p in ref.named_parameters():
        if ".embedding_bags." in name:
            torch.testing.assert_close(dense(state[name]), p.detach() - lr * p.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the same SGD step on the unsharded copy gives the same next forward
        for name, p in ref.named_parameters():
            if ".embedding_bags." in name:
                p -= lr * p.grad
    torch.testing.assert_close(dmp(kjt).values(), ref(kjt).values(), rtol=1e-5, atol=1e-5)


def test_wrong_sharding_type_names_table_and_allowed(single_process_group):
    layer = EmbeddingLayer([FeatureSpec("x", Full(dim=8), cardinality=10)])
    with pytest.raises(ValueError, match=r"table 'x': sharding type\(s\) \['row_wise'\] are not available on "
                                         r"device 'cpu'; allowed there: \['table_wise', 'column_wise'"):
        shard_model(layer, sharding_types=["row_wise"])
    with pytest.raises(ValueError, match=r"names table 'nope'"):
        shard_model(layer, per_table_sharding={"nope": ["table_wise"]})


def test_optimizer_config_errors():
    with pytest.raises(ValueError, match="embedding optimizer 'lamb' is not one of"):
        EmbeddingOptimizer("lamb")
    with pytest.raises(ValueError, match="lr=0"):
        EmbeddingOptimizer("sgd", lr=0)
