import dataclasses
import random

import numpy as np
import pytest
import torch

from recsys_emb.errors import InvalidInputError
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.memory import memory_from_module, memory_from_specs
from recsys_emb.specs import FeatureSpec, MixedDimension
from recsys_emb.mixed_dims import mixed_field_dims, resolve_frequencies


def test_dims_follow_the_documented_formula_on_known_frequencies():
    counts = np.array([50.0] * 10 + [2.0] * 90 + [0.5] * 900)  # three blocks, known access mass
    md = MixedDimension(base_dim=64, alpha=0.5, boundaries=(10, 100)).resolve(1000, counts)
    p = [500 / 10, 180 / 90, 450 / 900]  # mean access probability per id, per block (unnormalised)
    expected = [min(64, max(4, int(round(64 * (pi / p[0]) ** 0.5 / 4)) * 4)) for pi in p]
    assert md.block_dims == tuple(expected) == (64, 12, 8)
    assert md.boundaries == (10, 100)


def test_alpha_zero_gives_equal_dims():
    md = MixedDimension(base_dim=32, alpha=0.0, num_blocks=5).resolve(100_000, np.random.rand(100_000))
    assert set(md.block_dims) == {32}
    assert len(md.block_dims) == 5


def test_dims_round_and_clamp():
    md = MixedDimension(base_dim=16, alpha=1.0, boundaries=(1, 2)).resolve(10**6)
    assert all(d % 4 == 0 and 4 <= d <= 16 for d in md.block_dims)
    assert md.block_dims[0] == 16 and md.block_dims[-1] == 4


def test_default_blocks_are_log_uniform():
    md = MixedDimension(base_dim=16, num_blocks=3)
    assert md.block_boundaries(1_000_000) == (100, 10_000)


def test_resolve_frequencies_fixes_specs():
    f = FeatureSpec("C1", MixedDimension(16, alpha=0.5, boundaries=(5,)), cardinality=50)
    counts = {"C1": [10.0] * 5 + [0.1] * 45}
    (g,) = resolve_frequencies([f], counts)
    assert g.embedding.block_dims == (16, 4)
    assert [t.dim for t in g.tables()] == [16, 4]


def test_field_level_dims():
    assert mixed_field_dims([10, 1000, 100000], base_dim=64, alpha=0.25) == [64, 20, 8]
    assert mixed_field_dims([10, 1000], base_dim=64, alpha=0.0) == [64, 64]


def layer_and_weights(pooling="sum"):
    torch.manual_seed(0)
    spec = MixedDimension(base_dim=8, alpha=0.5, boundaries=(3, 10), block_dims=(8, 8, 4))
    return EmbeddingLayer([FeatureSpec("x", spec, cardinality=40, pooling=pooling)])


def test_each_id_reaches_exactly_one_block():
    layer = layer_and_weights()
    variant = layer.variants["x"]
    ids = torch.arange(40)
    pairs = variant.remap(ids, torch.ones(40, dtype=torch.int32))
    got = [v.tolist() for v, _ in pairs]
    assert got == [[0, 1, 2], list(range(7)), list(range(30))]
    assert sum(len(v) for v in got) == 40
    assert [l.sum().item() for _, l in pairs] == [3, 7, 30]


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_pool_then_project_equals_project_then_pool(pooling):
    layer = layer_and_weights(pooling)
    rng = random.Random(0)
    bags = [[rng.randrange(40) for _ in range(rng.randint(0, 5))] for _ in range(16)]
    out = layer(kjt_from_lists({"x": bags})).values()
    variant = layer.variants["x"]
    tables = [layer.ebc.embedding_bags[f"x@b{i}"].weight for i in range(3)]
    starts = [0, 3, 10]
    expected = []
    for bag in bags:
        rows = []
        for i in bag:
            b = 0 if i < 3 else (1 if i < 10 else 2)
            rows.append(variant.projections[b](tables[b][i - starts[b]]))  # project each id, then pool
        v = torch.stack(rows).sum(0) if rows else torch.zeros(8)
        expected.append(v / max(len(bag), 1) if pooling == "mean" else v)
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block_dims", [(8, 4, 4), (4, 4, 4), (8, 8, 4)])
def test_forward_and_gradients_match_projecting_each_id(block_dims):
    # against project-each-id-then-pool under autograd, with a second feature sharing the tables and
    # projections (its gradients add into the same parameters)
    torch.manual_seed(0)
    spec = MixedDimension(base_dim=8, alpha=0.5, boundaries=(3, 10), block_dims=block_dims)
    layer = EmbeddingLayer([FeatureSpec("x", spec, cardinality=40), FeatureSpec("y", spec, cardinality=40,
                                                                               shared_with="x")])
    rng = random.Random(1)
    bags = {"x": [[rng.randrange(40)] for _ in range(12)] + [[], [1, 2, 30]],
            "y": [[rng.randrange(10)] for _ in range(6)] + [[]] * 8}
    upstream = torch.randn(14, 16)
    (layer(kjt_from_lists(bags)).values() * upstream).sum().backward()
    variant = layer.variants["x"]
    tables = [layer.ebc.embedding_bags[f"x@b{i}"].weight for i in range(3)]
    params = tables + [p.weight for p, on in zip(variant.projections, variant.projected) if on]
    got = [q.grad.clone() for q in params]
    for q in params:
        q.grad = None
    starts = [0, 3, 10]
    expected = []
    for name in ("x", "y"):
        col = []
        for bag in bags[name]:
            rows = [variant.projections[b](tables[b][i - starts[b]]) for i in bag
                    for b in [0 if i < 3 else (1 if i < 10 else 2)]]
            col.append(torch.stack(rows).sum(0) if rows else torch.zeros(8))
        expected.append(torch.stack(col))
    ref = torch.cat(expected, dim=1)
    torch.testing.assert_close(layer(kjt_from_lists(bags)).values(), ref.detach(), rtol=1e-5, atol=1e-6)
    (ref * upstream).sum().backward()
    for a, q in zip(got, params):
        torch.testing.assert_close(a, q.grad, rtol=1e-5, atol=1e-6)


def test_gradients_reach_block_tables_and_projections():
    layer = layer_and_weights()
    out = layer(kjt_from_lists({"x": [[1, 20], [5]]})).values()
    out.sum().backward()
    g = {i: layer.ebc.embedding_bags[f"x@b{i}"].weight.grad for i in range(3)}
    assert g[0].abs().sum(1).nonzero().flatten().tolist() == [1]
    assert g[1].abs().sum(1).nonzero().flatten().tolist() == [2]
    assert g[2].abs().sum(1).nonzero().flatten().tolist() == [10]
    variant = layer.variants["x"]
    assert isinstance(variant.projections[0], torch.nn.Identity)  # block 0 is full width: no projection
    assert all(p.weight.grad is not None for p, proj in zip(variant.projections, variant.projected) if proj)


def test_memory_specs_and_module_agree():
    specs = [FeatureSpec("x", MixedDimension(base_dim=16, alpha=0.4, num_blocks=3), cardinality=10_000)]
    a, b = memory_from_specs(specs), memory_from_module(EmbeddingLayer(specs))
    assert a.tables == b.tables and a.params == b.params
    dims = [t.dim for t in a.tables]
    assert a.per_feature_params["x"] == sum(t.params for t in a.tables) + 16 * sum(d for d in dims if d != 16)


def test_several_mixed_features_in_one_layer_equal_one_layer_each():
    """The batched remap and the fused projections give what each feature alone gives, gradients too."""
    specs = [FeatureSpec("a", MixedDimension(8, alpha=0.5, boundaries=(3, 10)), cardinality=40),
             FeatureSpec("b", MixedDimension(8, alpha=1.0, num_blocks=3), cardinality=500),
             FeatureSpec("c", MixedDimension(8, alpha=0.5, boundaries=(3, 10)), cardinality=40, shared_with="a")]
    torch.manual_seed(0)
    joint = EmbeddingLayer(specs)
    alone = {s.name: EmbeddingLayer([dataclasses.replace(s, shared_with=None)]) for s in specs}
    state = joint.state_dict()
    for name, layer in alone.items():
        owner = "a" if name == "c" else name
        layer.load_state_dict({k.replace(f".{owner}", f".{name}").replace(f"{owner}@", f"{name}@"): v
                               for k, v in state.items() if f".{owner}" in k or f"{owner}@" in k})
    rng = random.Random(1)
    bags = {s.name: [[rng.randrange(s.cardinality) for _ in range(rng.randint(0, 4))] for _ in range(12)]
            for s in specs}
    g = torch.randn(12, 24)
    out = joint(kjt_from_lists(bags)).values()
    (out * g).sum().backward()
    parts = [alone[s.name](kjt_from_lists({s.name: bags[s.name]})).values() for s in specs]
    torch.testing.assert_close(out, torch.cat(parts, dim=1))
    sum((p * g[:, 8 * i:8 * i + 8]).sum() for i, p in enumerate(parts)).backward()
    for i in range(3):
        w = joint.variants["a"].projections[i]
        if isinstance(w, torch.nn.Linear):  # shared by a and c: the two features' gradients add up
            ref = alone["a"].variants["a"].projections[i].weight.grad + alone["c"].variants["c"].projections[i].weight.grad
            torch.testing.assert_close(w.weight.grad, ref)


def test_single_block_is_one_table_projected():
    """Field-level mixed dimension: one block, no frequency cut, the pooled row projected to base_dim."""
    torch.manual_seed(0)
    layer = EmbeddingLayer([FeatureSpec("x", MixedDimension(8, boundaries=(), block_dims=(4,)), cardinality=30),
                            FeatureSpec("y", MixedDimension(8, boundaries=(), block_dims=(4,)), cardinality=30)])
    out = layer(kjt_from_lists({"x": [[3, 29], []], "y": [[0], [7]]})).values()
    for name, bags, cols in (("x", [[3, 29], []], slice(0, 8)), ("y", [[0], [7]], slice(8, 16))):
        table = layer.ebc.embedding_bags[f"{name}@b0"].weight
        proj = layer.variants[name].projections[0].weight
        expected = torch.stack([table[bag].sum(0) if bag else torch.zeros(4) for bag in bags]) @ proj.t()
        torch.testing.assert_close(out[:, cols], expected)
    # one block: the remap hands the ids over unchanged (no block search), and still checks them
    kjt, _ = layer.remap(kjt_from_lists({"x": [[3, 29], []], "y": [[0], [7]]}))
    assert kjt["x@b0"].values().tolist() == [3, 29] and kjt["y@b0"].lengths().tolist() == [1, 1]
    with pytest.raises(InvalidInputError, match=r"'y'.*30"):
        layer(kjt_from_lists({"x": [[1], []], "y": [[30], [2]]}))
