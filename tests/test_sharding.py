"""Every variant under TorchRec DistributedModelParallel (one process, gloo, fused FBGEMM kernels)."""

import copy

import pytest
import torch

from recsys_emb.errors import ConfigError
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.sharding import plan_report, shard_model
from recsys_emb.tables import EmbeddingOptimizer
from recsys_emb.specs import (FeatureSpec, Full, Hashed, LowRank, ManagedCollision, MixedDimension, QuotientRemainder,
                              Robe, RobeArray, TensorTrain)

VARIANTS = {
    "full": Full(dim=8),
    "hashed": Hashed(dim=8, buckets=17),
    "multi_hash": Hashed(dim=8, buckets=17, num_hashes=2),
    "qr_mult": QuotientRemainder(dim=8, collisions=4),
    "qr_concat": QuotientRemainder(dim=16, collisions=4, op="concat"),
    "mixed_field": MixedDimension(8, boundaries=(), block_dims=(4,)),  # field-level, the preset default
    "mixed_blocks": MixedDimension(8, alpha=0.5, boundaries=(5, 20), block_dims=(8, 4, 4)),
    "lowrank": LowRank(dim=8, rank=4),
    "robe": Robe(RobeArray("robe", size=96), dim=8, block=8),
    "tt": TensorTrain(dim=8, ranks=(3, 2)),  # cores are dense parameters: replicated (DDP), not sharded
    # TorchRec's remap runs in the dense part (one process: several are refused, docs/embeddings.md)
    "mch": ManagedCollision(dim=8, zch_size=6),
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
    grads = {name.split("module.", 1)[-1]: p.grad for name, p in dmp.named_parameters() if p.grad is not None}
    for name, p in ref.named_parameters():
        if ".embedding_bags." in name:
            torch.testing.assert_close(dense(state[name]), p.detach() - lr * p.grad, rtol=1e-5, atol=1e-6)
        else:  # dense parameters (projections, probe weights, tensor-train cores): the same gradient
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # the same SGD step on the unsharded copy gives the same next forward
        for name, p in ref.named_parameters():
            if ".embedding_bags." in name:
                p -= lr * p.grad
    torch.testing.assert_close(dmp(kjt).values(), ref(kjt).values(), rtol=1e-5, atol=1e-5)


def test_wrong_sharding_type_names_table_and_allowed(single_process_group):
    layer = EmbeddingLayer([FeatureSpec("x", Full(dim=8), cardinality=10)])
    with pytest.raises(ConfigError, match=r"train.sharding_types: table 'x': sharding type\(s\) \['row_wise'\] are not "
                                          r"available on device 'cpu'; choose from \['table_wise', 'column_wise'"):
        shard_model(layer, sharding_types=["row_wise"])
    with pytest.raises(ConfigError, match=r"per_table_sharding names table 'nope'"):
        shard_model(layer, per_table_sharding={"nope": ["table_wise"]})


def test_optimizer_config_errors():
    with pytest.raises(ValueError, match="embedding optimizer 'lamb' is not one of"):
        EmbeddingOptimizer("lamb")
    with pytest.raises(ValueError, match="lr=0"):
        EmbeddingOptimizer("sgd", lr=0)


def test_init_tables_is_placement_independent(single_process_group):
    from recsys_emb.tables import init_tables

    specs = [FeatureSpec("x", Full(dim=8), cardinality=300), FeatureSpec("y", Full(dim=4), cardinality=9)]
    a, b = EmbeddingLayer(specs), EmbeddingLayer(specs)
    assert init_tables(a, seed=5) == ["x", "y"]
    init_tables(b, seed=5, chunk_elements=24)  # filled in row chunks of 3: same values
    for k, v in a.state_dict().items():
        if "embedding_bags" in k:
            torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0)
    w = a.state_dict()["ebc.embedding_bags.x.weight"]
    assert w.abs().max() <= 300 ** -0.5 and w.std() > 0.5 * 300 ** -0.5 / 3 ** 0.5  # U(-1/sqrt(R), 1/sqrt(R))
    scaled = EmbeddingLayer(specs)
    init_tables(scaled, seed=5, scale=0.25)  # one bound for every table: same draws, rescaled
    torch.testing.assert_close(scaled.state_dict()["ebc.embedding_bags.x.weight"], w * (0.25 * 300 ** 0.5))
    c = EmbeddingLayer(specs)
    init_tables(c, seed=6)
    assert not torch.equal(c.state_dict()["ebc.embedding_bags.x.weight"], w)
    dmp = shard_model(EmbeddingLayer(specs, device=torch.device("meta")), EmbeddingOptimizer("sgd", lr=0.1),
                      init_seed=5)
    torch.testing.assert_close(dense(dmp.state_dict()["ebc.embedding_bags.x.weight"]), w, rtol=0, atol=0)


def test_plan_model_reports_shards_and_bytes_per_rank():
    from recsys_emb.sharding import format_plan, plan_model, rank_bytes, table_shapes

    specs = [FeatureSpec("big", Full(dim=16), cardinality=1000), FeatureSpec("small", Full(dim=8), cardinality=10)]
    layer = EmbeddingLayer(specs, device=torch.device("meta"))
    plan = plan_model(layer, world_size=2, optimizer=EmbeddingOptimizer("rowwise_adagrad"),
                      per_table_sharding={"big": ["column_wise"]})
    report = plan_report(plan, table_shapes(layer), optimizer="rowwise_adagrad")
    by = {r["table"]: r for r in report}
    assert by["big"]["sharding_type"] == "column_wise" and by["small"]["sharding_type"] == "table_wise"
    assert sorted(s["rank"] for s in by["big"]["shards"]) == [0, 1]
    assert [(s["rows"], s["cols"]) for s in by["big"]["shards"]] == [(1000, 8), (1000, 8)]
    assert by["big"]["bytes"] == 2 * 4 * (1000 * 8 + 1000)  # weights + one adagrad float per row per shard
    assert sum(rank_bytes(report, 2)) == by["big"]["bytes"] + 4 * (10 * 8 + 10)
    text = format_plan(report, 2)
    assert "rank0:1000x8 rank1:1000x8" in text and "rank 1:" in text
    with pytest.raises(ValueError, match=r"table 'big': sharding type\(s\) \['row_wise'\] are not available"):
        plan_model(EmbeddingLayer(specs, device=torch.device("meta")), 2, per_table_sharding={"big": ["row_wise"]})


def test_fbgemm_bounds_check_is_off_only_where_the_layer_checks_ids(single_process_group):
    """A layer that validates ids (or hashes them into range) needs no second check per lookup in
    FBGEMM; a layer built with validate_ids=False and a plain TorchRec collection keep it."""
    from torchrec.distributed.types import BoundsCheckMode
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    from recsys_emb.errors import InvalidInputError
    from recsys_emb.sharding import _constraints, checked_tables

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.checked = EmbeddingLayer([FeatureSpec("a", Full(dim=8), cardinality=10),
                                           FeatureSpec("b", QuotientRemainder(dim=8, collisions=4), cardinality=10)])
            self.trusting = EmbeddingLayer([FeatureSpec("c", Full(dim=8), cardinality=10)], validate_ids=False)
            self.plain = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
                name="t_d", embedding_dim=8, num_embeddings=10, feature_names=["d"])])

    model = Model()
    assert sorted(checked_tables(model)) == ["a", "b@q", "b@r"]
    modes = {n: c.bounds_check_mode for n, c in _constraints(model, None, "fused", None, "cpu").items()}
    assert modes == {"a": BoundsCheckMode.NONE, "b@q": BoundsCheckMode.NONE, "b@r": BoundsCheckMode.NONE,
                     "c": None, "t_d": None}

    dmp = shard_model(EmbeddingLayer([FeatureSpec("a", Full(dim=8), cardinality=10)]), EmbeddingOptimizer("sgd", lr=0.1))
    tbes = [m._emb_module for lookup in dmp.module.ebc._lookups for m in lookup._emb_modules]
    assert [t.bounds_check_mode_int for t in tbes] == [BoundsCheckMode.NONE.value]
    with pytest.raises(InvalidInputError, match=r"'a'.*10"):  # the layer's own check still refuses a bad id
        dmp(kjt_from_lists({"a": [[3], [10]]}))


def test_planning_and_sharding_print_no_planner_warning(single_process_group, caplog):
    """The planner is built as TorchRec asks (topology factory, a fixed storage reservation), so neither a
    plan on meta for CPU or CUDA nor sharding a built or meta model warns; conftest's quieting of TorchRec
    is lifted here."""
    import logging
    import warnings

    from recsys_emb.sharding import plan_model

    specs = [FeatureSpec("a", Full(8), cardinality=100), FeatureSpec("b", Hashed(8, buckets=50))]
    caplog.set_level(logging.WARNING, logger="torchrec")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for device in ("cpu", "cuda"):
            plan_model(EmbeddingLayer(specs, device=torch.device("meta")), world_size=2, device_type=device)
        shard_model(EmbeddingLayer(specs), EmbeddingOptimizer("sgd", lr=0.1))
        shard_model(EmbeddingLayer(specs, device=torch.device("meta")), EmbeddingOptimizer("sgd", lr=0.1), init_seed=0)
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("torchrec") and r.levelno >= logging.WARNING]
    assert not [str(w.message) for w in caught if "torchrec/distributed/planner" in w.filename.replace("\\", "/")]
