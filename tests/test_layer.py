import subprocess
import sys

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.errors import InvalidInputError
from recsys_emb.specs import FeatureSpec, Full, Hashed, MixedDimension, QuotientRemainder


def mixed_specs():
    return [
        FeatureSpec("item", Full(dim=8), cardinality=20),
        FeatureSpec("user", Hashed(dim=4, buckets=16, num_hashes=2)),
        FeatureSpec("cat", QuotientRemainder(dim=8, collisions=3), cardinality=30, pooling="mean"),
        FeatureSpec("cand", Full(dim=8), cardinality=20, shared_with="item"),
    ]


def test_output_layout_is_known_before_forward():
    layer = EmbeddingLayer(mixed_specs())
    assert layer.embedding_dims == {"item": 8, "user": 4, "cat": 8, "cand": 8}
    assert layer.output_dim == 28
    out = layer(kjt_from_lists({"item": [[1], [2]], "user": [[5], [6]], "cat": [[7], [8]], "cand": [[1], [3]]}))
    assert out.keys() == ["item", "user", "cat", "cand"]
    assert out.values().shape == (2, 28)


def test_shared_table_gives_same_rows():
    layer = EmbeddingLayer(mixed_specs())
    assert [t.name for t in layer.table_defs] == ["item", "user", "cat@q", "cat@r"]
    out = layer(kjt_from_lists({"item": [[1], [2]], "user": [[5], [6]], "cat": [[7], [8]], "cand": [[1], [3]]}))
    d = out.to_dict()
    torch.testing.assert_close(d["item"][0], d["cand"][0])
    assert not torch.allclose(d["item"][1], d["cand"][1])


def test_key_order_does_not_matter():
    layer = EmbeddingLayer(mixed_specs())
    bags = {"item": [[1], [2, 3]], "user": [[5], []], "cat": [[7, 1], [8]], "cand": [[1], [3]]}
    a = layer(kjt_from_lists(bags)).values()
    b = layer(kjt_from_lists(dict(reversed(list(bags.items()))))).values()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_empty_bags_give_zero_vectors():
    layer = EmbeddingLayer(mixed_specs())
    out = layer(kjt_from_lists({"item": [[], [2]], "user": [[], [6]], "cat": [[], [8]], "cand": [[], [3]]})).values()
    assert out[0].abs().sum() == 0
    assert out[1].abs().sum() > 0


def test_id_outside_vocabulary_names_feature_and_values():
    layer = EmbeddingLayer(mixed_specs())
    bags = {"item": [[1], [20]], "user": [[5], [6]], "cat": [[7], [8]], "cand": [[1], [3]]}
    with pytest.raises(InvalidInputError, match=r"feature 'item': 1 id\(s\) break 0 <= id < cardinality=20: 20"):
        layer(kjt_from_lists(bags))
    bags = {"item": [[1], [2]], "user": [[5], [6]], "cat": [[-4], [30, 31]], "cand": [[1], [3]]}
    with pytest.raises(InvalidInputError, match=r"feature 'cat': 3 id\(s\) break.*-4 \(value #0\), 30.*31"):
        layer(kjt_from_lists(bags))


def test_unknown_and_missing_keys():
    layer = EmbeddingLayer(mixed_specs())
    base = {"item": [[1]], "user": [[5]], "cat": [[7]], "cand": [[1]]}
    with pytest.raises(InvalidInputError, match=r"key\(s\) \['oops'\] that the layer does not know"):
        layer(kjt_from_lists({**base, "oops": [[1]]}))
    del base["cat"]
    with pytest.raises(InvalidInputError, match=r"missing feature\(s\) \['cat'\]"):
        layer(kjt_from_lists(base))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_values_must_be_int64(dtype):
    layer = EmbeddingLayer([FeatureSpec("item", Full(dim=8), cardinality=20)])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.tensor([1, 2], dtype=dtype),
                                              lengths=torch.tensor([1, 1]))
    with pytest.raises(InvalidInputError, match=rf"features \['item'\] have dtype {dtype}; ids must be int64"):
        layer(kjt)


VOCAB_SPECS = {"full": Full(dim=8), "qr": QuotientRemainder(dim=8, collisions=4),
               "mixed": MixedDimension(8, 0.5, boundaries=(5, 10), block_dims=(8, 4, 4))}


@pytest.mark.parametrize("kind", sorted(VOCAB_SPECS))
def test_validate_ids_on_refuses_out_of_range_ids_and_off_leaves_them_to_the_table_lookup(kind):
    features = [FeatureSpec("item", VOCAB_SPECS[kind], cardinality=20)]
    torch.manual_seed(0)
    on = EmbeddingLayer(features)
    torch.manual_seed(0)
    off = EmbeddingLayer(features, validate_ids=False)
    good = kjt_from_lists({"item": [[19], [0, 7], []]})
    torch.testing.assert_close(on(good).values(), off(good).values(), rtol=0, atol=0)
    for bad_id in (20, -1):
        bad = kjt_from_lists({"item": [[19], [bad_id]]})
        with pytest.raises(InvalidInputError, match=rf"feature 'item': 1 id\(s\) break 0 <= id < cardinality=20: "
                                                    rf"{bad_id} \(value #1\)"):
            on(bad)
        # off: nothing checks the id before the lookup; the table kernel meets a row it does not have
        with pytest.raises(RuntimeError):
            off(bad)


def test_validate_ids_off_lets_a_quotient_remainder_id_past_the_vocabulary_read_valid_rows():
    """What the docstring warns of: with the check off, id 19 of a vocabulary of 18 (quotient 4 of a
    5-row table, remainder 3) reads real rows and no error is raised."""
    spec = QuotientRemainder(dim=8, collisions=4, op="add")
    torch.manual_seed(0)
    off = EmbeddingLayer([FeatureSpec("item", spec, cardinality=18)], validate_ids=False)
    out = off(kjt_from_lists({"item": [[19]]})).values()[0]
    q, r = (off.ebc.embedding_bags[t].weight.detach() for t in ("item@q", "item@r"))
    assert q.shape[0] == 5
    torch.testing.assert_close(out, q[4] + r[3])
    with pytest.raises(InvalidInputError, match="cardinality=18: 19"):
        EmbeddingLayer([FeatureSpec("item", spec, cardinality=18)])(kjt_from_lists({"item": [[19]]}))


def test_empty_layer_refused():
    with pytest.raises(ValueError, match="at least one FeatureSpec"):
        EmbeddingLayer([])


def test_layer_identical_across_processes():
    """Same seed, same specs, same input -> the same output in a fresh process (stable hashes)."""
    code = (
        "import torch\n"
        "from recsys_emb.layer import EmbeddingLayer, kjt_from_lists\n"
        "from recsys_emb.specs import FeatureSpec, Hashed, QuotientRemainder\n"
        "torch.manual_seed(0)\n"
        "layer = EmbeddingLayer([FeatureSpec('a', Hashed(dim=4, buckets=97, num_hashes=2)),\n"
        "                        FeatureSpec('b', QuotientRemainder(dim=4), cardinality=1000)])\n"
        "out = layer(kjt_from_lists({'a': [[-5, 77], [10**15]], 'b': [[999], [3]]}))\n"
        "print(out.values().tolist())\n"
    )
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout for s in (0, 123)]
    assert outs[0] == outs[1]
    assert len(eval(outs[0])) == 2


def test_hashing_features_remapped_in_one_pass_equal_each_variants_own_remap():
    from recsys_emb.specs import Unified, UnifiedTable

    u = UnifiedTable("u", rows=50, chunk_dim=4)
    specs = [FeatureSpec("a", Hashed(dim=4, buckets=16)), FeatureSpec("b", Hashed(dim=4, buckets=7)),
             FeatureSpec("c", Hashed(dim=4, buckets=16, num_hashes=2)),
             FeatureSpec("d", Hashed(dim=4, buckets=9, num_hashes=2, combiner="weighted")),
             FeatureSpec("e", Unified(u, chunks=2)), FeatureSpec("f", Unified(u)),
             FeatureSpec("g", Full(dim=4), cardinality=5)]
    layer = EmbeddingLayer(specs)
    bags = {"a": [[1, -5], []], "b": [[2**40], [3]], "c": [[4], [5, 6]], "d": [[7], []], "e": [[8], [9, 10]],
            "f": [[-1], [11]], "g": [[0], [4]]}
    kjt = kjt_from_lists(bags)

    def expected():
        pairs = []
        for s in specs:
            one = kjt_from_lists({s.name: bags[s.name]})
            pairs += layer.variants[s.name].remap(one.values(), one.lengths())
        return pairs

    got = layer.remap(kjt)[0]
    want = expected()
    assert torch.equal(got.values(), torch.cat([v for v, _ in want]))
    assert torch.equal(got.lengths(), torch.cat([l for _, l in want]))
    # tables trained with other salts than the spec's would be read at the wrong rows: refused
    from recsys_emb.errors import CheckpointError

    state = layer.state_dict()
    state["variants.e.salts"] = state["variants.e.salts"] + 1
    with pytest.raises(CheckpointError, match=r"feature 'e': the state dict's unified salts .* differ from the spec's"):
        EmbeddingLayer(specs).load_state_dict(state)


def _remap_of_each_variant(layer, bags):
    pairs = []
    for s in layer.features:
        one = kjt_from_lists({s.name: bags[s.name]})
        pairs += layer.variants[s.name].remap(one.values(), one.lengths())
    return pairs


def test_mixed_and_qr_features_remapped_in_one_pass_equal_each_variants_own_remap():
    from recsys_emb.specs import MixedDimension

    specs = [FeatureSpec("m1", MixedDimension(8, boundaries=(2, 10)), cardinality=40),
             FeatureSpec("q1", QuotientRemainder(dim=4, collisions=3), cardinality=20),
             FeatureSpec("m2", MixedDimension(8, num_blocks=2), cardinality=1000),
             FeatureSpec("q2", QuotientRemainder(dim=4, buckets=7, op="add"), cardinality=50),
             FeatureSpec("m3", MixedDimension(8, boundaries=(5,)), cardinality=6, shared_with=None),
             FeatureSpec("h", Hashed(dim=4, buckets=5))]
    layer = EmbeddingLayer(specs)
    bags = {"m1": [[0, 39, 1, 12], [], [5]], "q1": [[19], [0, 3, 4], []], "m2": [[999, 0], [31], [32, 500]],
            "q2": [[49, 7], [], [6]], "m3": [[5], [0, 5, 4], []], "h": [[1], [2], [3]]}
    kjt, _ = layer.remap(kjt_from_lists(bags))
    want = _remap_of_each_variant(layer, bags)
    assert kjt.keys() == [vf.name for s in specs for vf in layer.variants[s.name].virtual_features()]
    assert torch.equal(kjt.values(), torch.cat([v for v, _ in want]))
    assert torch.equal(kjt.lengths(), torch.cat([l for _, l in want]))
    assert kjt.lengths().dtype == torch.int32


@pytest.mark.parametrize("bad", ["m2", "q2", "f2"])
def test_batched_remap_names_the_feature_with_the_bad_id(bad):
    from recsys_emb.specs import MixedDimension

    layer = EmbeddingLayer([FeatureSpec("m1", MixedDimension(8, num_blocks=2), cardinality=40),
                            FeatureSpec("m2", MixedDimension(8, num_blocks=2), cardinality=30),
                            FeatureSpec("q1", QuotientRemainder(dim=4), cardinality=40),
                            FeatureSpec("q2", QuotientRemainder(dim=4), cardinality=30),
                            FeatureSpec("f1", Full(dim=4), cardinality=40), FeatureSpec("f2", Full(dim=4), cardinality=30)])
    bags = {"m1": [[39]], "m2": [[29]], "q1": [[39]], "q2": [[29]], "f1": [[39]], "f2": [[29]]}
    layer(kjt_from_lists(bags))
    bags[bad] = [[30]]  # inside the next feature's global id range, outside its own vocabulary
    with pytest.raises(InvalidInputError, match=rf"feature '{bad}'.*30 \(value #0\)"):
        layer(kjt_from_lists(bags))


def test_a_subclass_with_its_own_remap_is_not_run_by_its_parents_plan():
    from recsys_emb.embeddings import QuotientRemainderEmbedding, register_variant, unregister_variant

    class Shifted(QuotientRemainderEmbedding):  # a user's variant: ids shifted by one before QR
        def remap(self, ids, lengths):
            return super().remap(ids + 1, lengths)

    class ShiftedQR(QuotientRemainder):
        pass

    register_variant(ShiftedQR, Shifted)
    try:
        layer = EmbeddingLayer([FeatureSpec("a", ShiftedQR(dim=4, collisions=2), cardinality=11),
                                FeatureSpec("b", ShiftedQR(dim=4, collisions=2), cardinality=11)])
        kjt, _ = layer.remap(kjt_from_lists({"a": [[0], [3]], "b": [[9], []]}))
        assert kjt.values().tolist() == [0, 2, 1, 0, 5, 0]  # quotients then remainders of id + 1
    finally:
        unregister_variant(ShiftedQR)


def test_a_hashed_subclass_with_its_own_remap_is_not_hashed_in_the_shared_pass():
    from recsys_emb.embeddings import HashedEmbedding, register_variant, unregister_variant

    class Shifted(HashedEmbedding):
        def remap(self, ids, lengths):
            return super().remap(ids + 1, lengths)

    class ShiftedHashed(Hashed):
        pass

    register_variant(ShiftedHashed, lambda f, validate_ids=True: Shifted(f))
    try:
        layer = EmbeddingLayer([FeatureSpec("a", ShiftedHashed(dim=4, buckets=97)),
                                FeatureSpec("b", ShiftedHashed(dim=4, buckets=97))])
        bags = {"a": [[0], [3]], "b": [[9], []]}
        kjt, _ = layer.remap(kjt_from_lists(bags))
        want = _remap_of_each_variant(layer, bags)
        assert torch.equal(kjt.values(), torch.cat([v for v, _ in want]))
        plain = EmbeddingLayer([FeatureSpec("a", Hashed(dim=4, buckets=97)), FeatureSpec("b", Hashed(dim=4, buckets=97))])
        assert not torch.equal(plain.remap(kjt_from_lists(bags))[0].values(), kjt.values())
    finally:
        unregister_variant(ShiftedHashed)
