"""The default initialisation rule (recsys_emb.specs.init_bounds, docs/embeddings.md "Initialisation"):
every table a variant owns starts as TorchRec's U(+-1/sqrt(rows)); a table shared by several features
(unified) starts as the per-field full tables it replaces, sqrt(mean_f 1/cardinality_f), whichever path
fills it (TorchRec's own init, init_tables under DistributedModelParallel, the table-batched kernel)."""

import math

import pytest
import torch

from recsys_emb.layer import EmbeddingLayer
from recsys_emb.sharding import shard_model
from recsys_emb.specs import FeatureSpec, Full, Unified, UnifiedTable, init_bounds
from recsys_emb.tables import EmbeddingOptimizer, TableBatched, init_tables
from variant_cases import SHARED, small_variants

CARDS = {"a": 7, "b": 300, "c": 5000}


def unified_layer(rows=4096, device=None):
    g = UnifiedTable("u", rows=rows, chunk_dim=8)
    return EmbeddingLayer([FeatureSpec(n, Unified(g, chunks=2), cardinality=c) for n, c in CARDS.items()], device=device)


def expected_unified_bound():
    return math.sqrt(sum(1 / c for c in CARDS.values()) / len(CARDS))  # the RMS of 1/sqrt(7), 1/sqrt(300), ...


def table_weights(module):
    out = {}
    for key, value in module.state_dict().items():
        if key.endswith(".weight") and ("embedding_bags." in key or "embeddings." in key):
            if hasattr(value, "local_shards"):  # a ShardedTensor of one process
                value = value.local_shards()[0].tensor
            out[key.split(".")[-2]] = value.detach()
    return out


@pytest.mark.parametrize("variant", sorted(small_variants()))
def test_every_variant_gets_the_documented_bound(variant):
    specs = small_variants()[variant]
    layer = EmbeddingLayer(specs)
    bounds = {t.name: t.bound for t in layer.table_defs}
    for t in layer.table_defs:
        if variant == "unified":
            # x and z share the table; neither has a cardinality, so each counts as one of its rows
            assert t.bound == pytest.approx(SHARED.total_rows ** -0.5)
        else:
            assert t.bound == pytest.approx(t.rows ** -0.5), t
    assert bounds == pytest.approx(init_bounds(specs))
    # TorchRec's own init (an unsharded collection) draws within the bound, and uses most of it
    for name, w in table_weights(layer).items():
        assert w.abs().max() <= bounds[name] + 1e-7
        assert w.abs().max() > 0.5 * bounds[name]


def test_a_unified_table_starts_as_the_per_field_tables_it_replaces(single_process_group):
    want = expected_unified_bound()
    layer = unified_layer()
    assert [t.bound for t in layer.table_defs] == [pytest.approx(want)]
    # the bound does not depend on the shared table's size (TorchRec's default would: 1/sqrt(rows))
    assert unified_layer(rows=1 << 16).table_defs[0].bound == pytest.approx(want)
    # one feature alone in a unified table of rows = its cardinality: the bound of its own full table
    alone = EmbeddingLayer([FeatureSpec("b", Unified(UnifiedTable("u", rows=300, chunk_dim=8)), cardinality=300)])
    assert alone.table_defs[0].bound == pytest.approx(EmbeddingLayer([FeatureSpec("b", Full(8), cardinality=300)])
                                                      .table_defs[0].bound)
    # each path that fills a new table uses it: TorchRec's init, init_tables, DMP with init_seed, table-batched
    filled = {"torchrec": table_weights(layer)["u"]}
    seeded = unified_layer()
    init_tables(seeded, seed=3)
    filled["init_tables"] = table_weights(seeded)["u"]
    dmp = shard_model(unified_layer(device=torch.device("meta")), EmbeddingOptimizer("sgd", lr=0.1), init_seed=3)
    filled["dmp"] = table_weights(dmp)["u"]
    tb = TableBatched(unified_layer(device=torch.device("meta")), EmbeddingOptimizer("sgd", lr=0.1), init_seed=3)
    filled["table_batched"] = table_weights(tb.module)["u"]
    unseeded = TableBatched(unified_layer(device=torch.device("meta")), EmbeddingOptimizer("sgd", lr=0.1))
    filled["table_batched_reset"] = table_weights(unseeded.module)["u"]
    for path, w in filled.items():
        assert w.abs().max() <= want + 1e-7, path
        # U(-b, b) has standard deviation b / sqrt(3); 4096 x 8 draws pin it to a few per cent
        assert w.std().item() == pytest.approx(want / math.sqrt(3), rel=0.05), path
    torch.testing.assert_close(filled["dmp"], filled["init_tables"], rtol=0, atol=0)
    torch.testing.assert_close(filled["table_batched"], filled["init_tables"], rtol=0, atol=0)


def test_init_scale_overrides_every_bound(single_process_group):
    seeded = unified_layer()
    init_tables(seeded, seed=3)
    scaled = unified_layer()
    init_tables(scaled, seed=3, scale=0.3)  # the same draws, rescaled
    torch.testing.assert_close(table_weights(scaled)["u"], table_weights(seeded)["u"] * (0.3 / expected_unified_bound()),
                               rtol=1e-5, atol=1e-7)
