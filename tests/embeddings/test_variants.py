"""Each variant against a straightforward reference computed row by row from the layer's tables."""

import random

import pytest
import torch

from recsys_emb.embeddings.fused import ColumnProgram
from recsys_emb.hashing import bucket_reference, seed_from_name
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.specs import FeatureSpec, Full, Hashed, QuotientRemainder, Unified, UnifiedTable

B = 6


def weight(layer, table):
    return layer.ebc.embedding_bags[table].weight.detach()


def random_bags(rng, card, max_len=3, allow_negative=False, single=False):
    """``B`` bags of ids in ``[0, card)``; ``allow_negative``: any int64 id."""
    lo = -2**63 if allow_negative else 0
    hi = 2**63 - 1 if allow_negative else card - 1
    if single:
        return [[rng.randint(lo, hi)] for _ in range(B)]
    return [[rng.randint(lo, hi) for _ in range(rng.randint(0, max_len))] for _ in range(B)]


def hashed_row(spec, i, seed, buckets):
    """The row id ``i`` reads: its own OOV row for the spec's ``oov_id``, else its bucket."""
    if getattr(spec, "oov_id", None) is not None and i == spec.oov_id:
        return spec.oov_row if isinstance(spec, Unified) else spec.buckets
    return bucket_reference(i, seed, buckets)


def reference(layer, bags):
    """Expected (B, D) output, computed bag by bag from the tables."""
    cols = []
    for f in layer.features:
        spec, owner = f.embedding, f.table_owner
        rows = []
        for bag in bags[f.name]:
            if isinstance(spec, Full):
                v = sum((weight(layer, owner)[i] for i in bag), torch.zeros(spec.dim))
            elif isinstance(spec, Unified):  # chunk j: row hash(id, seed_from_name(group, feature, j)) of the group
                group = spec.group
                v = torch.cat([sum((weight(layer, group.name)[hashed_row(spec, i, seed_from_name(group.name, f.name, j),
                                                                         group.rows)] for i in bag),
                                   torch.zeros(group.chunk_dim)) for j in range(spec.chunks)])
            elif isinstance(spec, Hashed):
                probes = []
                for j in range(spec.num_hashes):
                    seed = seed_from_name(owner, "hash", j)
                    probes.append(sum((weight(layer, owner)[hashed_row(spec, i, seed, spec.buckets)] for i in bag),
                                      torch.zeros(spec.dim)))
                if spec.combiner == "weighted" and spec.num_hashes > 1:
                    w = layer.variants[f.name].probe_weights.detach()
                    v = sum(w[j] * probes[j] for j in range(spec.num_hashes))
                else:
                    v = sum(probes)
            else:
                m = spec.modulus(f.cardinality)
                q = sum((weight(layer, owner + "@q")[i // m] for i in bag), torch.zeros(spec.table_dim))
                r = sum((weight(layer, owner + "@r")[i % m] for i in bag), torch.zeros(spec.table_dim))
                v = {"mult": q * r, "add": q + r, "concat": torch.cat([q, r])}[spec.op]
            if f.pooling == "mean":
                v = v / max(len(bag), 1)
            rows.append(v)
        cols.append(torch.stack(rows))
    return torch.cat(cols, dim=1)


VARIANTS = {
    "full": lambda: Full(dim=8),
    "hashed": lambda: Hashed(dim=8, buckets=17),
    "hashed_oov": lambda: Hashed(dim=8, buckets=17, oov_id=49),
    "multi_hash_sum": lambda: Hashed(dim=8, buckets=17, num_hashes=3),
    "multi_hash_sum_oov": lambda: Hashed(dim=8, buckets=17, num_hashes=3, oov_id=49),
    "multi_hash_weighted": lambda: Hashed(dim=8, buckets=17, num_hashes=2, combiner="weighted"),
    "qr_mult": lambda: QuotientRemainder(dim=8, collisions=4, op="mult"),
    "qr_add": lambda: QuotientRemainder(dim=8, collisions=4, op="add"),
    "qr_concat": lambda: QuotientRemainder(dim=8, buckets=5, op="concat"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_variant_matches_reference(variant, pooling):
    torch.manual_seed(0)
    rng = random.Random(1)
    spec = VARIANTS[variant]()
    single = variant == "qr_mult"  # mult composes pooled rows; per-id equality holds for one-id bags
    layer = EmbeddingLayer([FeatureSpec("x", spec, cardinality=50, pooling=pooling),
                            FeatureSpec("y", Full(dim=4), cardinality=7)])
    if variant == "multi_hash_weighted":
        with torch.no_grad():
            layer.variants["x"].probe_weights.copy_(torch.tensor([0.5, -2.0]))
    bags = {"x": random_bags(rng, 50, single=single), "y": random_bags(rng, 7)}
    if variant.endswith("_oov"):  # the OOV id alone and among other ids
        bags["x"][0], bags["x"][1] = [49], [49, 3, 49]
    out = layer(kjt_from_lists(bags))
    assert out.keys() == ["x", "y"]
    assert out.length_per_key() == [8, 4]
    torch.testing.assert_close(out.values(), reference(layer, bags), rtol=1e-5, atol=1e-6)


HASHED_VARIANTS = {
    "hashed": lambda: Hashed(dim=8, buckets=17),
    "multi_hash_sum": lambda: Hashed(dim=8, buckets=17, num_hashes=3),
    "multi_hash_weighted": lambda: Hashed(dim=8, buckets=17, num_hashes=2, combiner="weighted"),
    "unified": lambda: Unified(UnifiedTable("u", rows=29, chunk_dim=4), chunks=2),
    "hashed_oov": lambda: Hashed(dim=8, buckets=17, oov_id=7),
    "unified_oov": lambda: Unified(UnifiedTable("u", rows=29, chunk_dim=4, reserved=1), chunks=2, oov_id=7, oov_row=29),
}
# negative ids, the int64 extremes, and ids a float64 round trip or a 32-bit cast would change
EXTREME_IDS = [-1, -2, -(2**62), -(2**62) - 1, -(2**63), 2**63 - 1, 2**63 - 2, 2**62 + 1, 2**53 + 1, 2**32 + 5]


@pytest.mark.parametrize("variant", sorted(HASHED_VARIANTS))
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_hashed_variants_match_reference_on_negative_and_extreme_ids(variant, pooling):
    torch.manual_seed(0)
    rng = random.Random(2)
    # two hashed features: the layer hashes all features of a kind in one pass
    layer = EmbeddingLayer([FeatureSpec("x", HASHED_VARIANTS[variant](), pooling=pooling),
                            FeatureSpec("y", Full(dim=4), cardinality=7),
                            FeatureSpec("w", HASHED_VARIANTS[variant]())])
    if variant == "multi_hash_weighted":
        with torch.no_grad():
            layer.variants["x"].probe_weights.copy_(torch.tensor([0.5, -2.0]))
    x = [[i] for i in EXTREME_IDS] + [EXTREME_IDS[:4], EXTREME_IDS[4:], []]
    x += random_bags(rng, 0, allow_negative=True) + [[7], [7, -1, 7]]  # 7: the OOV id of the _oov cases
    bags = {"x": x, "y": [[i % 7] for i in range(len(x))], "w": list(reversed(x))}
    out = layer(kjt_from_lists(bags))
    torch.testing.assert_close(out.values(), reference(layer, bags), rtol=1e-5, atol=1e-6)


def test_qr_mult_multi_id_bags_follow_dlrm_semantics():
    torch.manual_seed(0)
    layer = EmbeddingLayer([FeatureSpec("x", QuotientRemainder(dim=8, collisions=4), cardinality=50)])
    bags = {"x": [[1, 2, 49], [7], []]}
    out = layer(kjt_from_lists(bags)).values()
    q, r = weight(layer, "x@q"), weight(layer, "x@r")
    torch.testing.assert_close(out[0], (q[0] + q[0] + q[12]) * (r[1] + r[2] + r[1]))
    torch.testing.assert_close(out[1], q[1] * r[3])
    assert out[2].abs().sum() == 0


def test_multi_hash_sum_equals_sum_of_k_rows():
    torch.manual_seed(0)
    layer = EmbeddingLayer([FeatureSpec("x", Hashed(dim=4, buckets=1000, num_hashes=3))])
    out = layer(kjt_from_lists({"x": [[123456789]]})).values()[0]
    w = weight(layer, "x")
    rows = [bucket_reference(123456789, seed_from_name("x", "hash", j), 1000) for j in range(3)]
    assert len(set(rows)) == 3
    torch.testing.assert_close(out, w[rows[0]] + w[rows[1]] + w[rows[2]])


def test_hashed_accepts_any_int64_id():
    layer = EmbeddingLayer([FeatureSpec("x", Hashed(dim=4, buckets=10, num_hashes=2))])
    ids = [[-2**63], [2**63 - 1], [-1], [0]]
    out = layer(kjt_from_lists({"x": ids})).values()
    w = weight(layer, "x")  # each id's row: the sum of its two hashed buckets' rows (the reference hash)
    want = torch.stack([sum(w[bucket_reference(i, seed_from_name("x", "hash", j), 10)] for j in range(2))
                        for [i] in ids])
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradients_reach_exactly_the_looked_up_rows(variant):
    torch.manual_seed(0)
    spec = VARIANTS[variant]()
    layer = EmbeddingLayer([FeatureSpec("x", spec, cardinality=50)])
    bags = {"x": [[3], [3, 10], [], [45]]}
    out = layer(kjt_from_lists(bags)).values()
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    owner = "x"
    if isinstance(spec, QuotientRemainder):
        m = spec.modulus(50)
        expect = {"x@q": {3 // m, 10 // m, 45 // m}, "x@r": {3 % m, 10 % m, 45 % m}}
    elif isinstance(spec, Hashed):
        expect = {"x": {bucket_reference(i, seed_from_name(owner, "hash", j), spec.buckets)
                        for i in (3, 10, 45) for j in range(spec.num_hashes)}}
    else:
        expect = {"x": {3, 10, 45}}
    for table, rows in expect.items():
        g = layer.ebc.embedding_bags[table].weight.grad
        touched = set(g.abs().sum(1).nonzero().flatten().tolist())
        assert touched == rows, (table, touched, rows)
    if isinstance(spec, Full):  # exact values: each row gets the upstream gradient of every bag holding it
        g = layer.ebc.embedding_bags["x"].weight.grad
        torch.testing.assert_close(g[3], upstream[0] + upstream[1])
        torch.testing.assert_close(g[10], upstream[1])
        torch.testing.assert_close(g[45], upstream[3])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_dict_round_trip(variant):
    torch.manual_seed(0)
    specs = [FeatureSpec("x", VARIANTS[variant](), cardinality=50), FeatureSpec("z", Full(dim=4), cardinality=50,
                                                                             shared_with=None)]
    a = EmbeddingLayer(specs)
    if variant == "multi_hash_weighted":
        with torch.no_grad():
            a.variants["x"].probe_weights.mul_(3.0)
    torch.manual_seed(1)
    b = EmbeddingLayer(specs)
    kjt = kjt_from_lists({"x": [[1], [2, 3]], "z": [[4], []]})
    assert not torch.equal(a(kjt).values(), b(kjt).values())
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(kjt).values(), b(kjt).values(), rtol=0, atol=0)


def test_column_program_backward_matches_autograd():
    torch.manual_seed(0)
    p = torch.randn(5, 12, requires_grad=True)
    prog = ColumnProgram([("copy", (0,), 0, 4), ("mul", (4, 8), 4, 2), ("add", (6, 10), 6, 2)], in_width=12,
                         out_width=8)
    g = torch.randn(5, 8)
    (prog(p) * g).sum().backward()
    p2 = p.detach().clone().requires_grad_(True)
    ref = torch.cat([p2[:, 0:4], p2[:, 4:6] * p2[:, 8:10], p2[:, 6:8] + p2[:, 10:12]], dim=1)
    (ref * g).sum().backward()
    torch.testing.assert_close(prog(p), ref)
    torch.testing.assert_close(p.grad, p2.grad)
    with pytest.raises(ValueError, match="every pooled column once"):
        ColumnProgram([("copy", (0,), 0, 4)], in_width=8, out_width=4)


def test_column_program_projection_matches_autograd():
    torch.manual_seed(0)
    p = torch.randn(6, 13, requires_grad=True)
    w1 = torch.randn(4, 3, requires_grad=True)  # (out, in): 3 pooled columns -> 4 output columns
    w2 = torch.randn(4, 2, requires_grad=True)
    prog = ColumnProgram([("copy", (0,), 0, 4), ("proj", (4, 3), 0, 4), ("proj", (7, 2), 4, 4), ("copy", (9,), 8, 4)],
                         in_width=13, out_width=12)
    g = torch.randn(6, 12)
    (prog(p, [w1, w2]) * g).sum().backward()
    p2, v1, v2 = (t.detach().clone().requires_grad_(True) for t in (p, w1, w2))
    ref = torch.cat([p2[:, 0:4] + p2[:, 4:7] @ v1.t(), p2[:, 7:9] @ v2.t(), p2[:, 9:13]], dim=1)
    (ref * g).sum().backward()
    torch.testing.assert_close(prog(p, [w1, w2]), ref)
    for a, b in ((p, p2), (w1, v1), (w2, v2)):
        torch.testing.assert_close(a.grad, b.grad)
    with pytest.raises(ValueError, match="2 projection"):
        prog(p, [w1])
    with pytest.raises(ValueError, match="only a projection may accumulate"):
        ColumnProgram([("copy", (0,), 0, 4), ("copy", (4,), 0, 4)], in_width=8, out_width=4)
