"""The table-batched single-device kernel (TableBatched(EmbeddingLayer(...))) against TorchRec: same
outputs for every variant, gradients, fused SGD and row-wise Adagrad equal to FBGEMM's fused kernels
under DistributedModelParallel, and clear errors."""

import copy

import pytest
import torch

from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, kjt_from_lists
from recsys_emb.memory import memory_from_module
from recsys_emb.sharding import shard_model
from recsys_emb.specs import FeatureSpec, Full, TableDef
from recsys_emb.tables import EmbeddingOptimizer, TableBatched, TableBatchedEmbeddingBags
from variant_cases import small_variants

VARIANTS = small_variants()
# duplicates inside and across bags, an empty bag, bags of several ids
BAGS = {"x": [[1, 1, 7], [], [49], [3, 20, 33, 3]], "y": [[0], [6], [6], [2, 5]], "z": [[4], [4, 40], [], [9]]}


def pair(variant, optimizer=None):
    specs = VARIANTS[variant] + [FeatureSpec("y", Full(dim=8), cardinality=7)]
    torch.manual_seed(0)
    ref = EmbeddingLayer(specs)
    fast = TableBatched(copy.deepcopy(ref), optimizer).module  # the tables keep the reference's values
    keys = [s.name for s in specs]
    return ref, fast, kjt_from_lists({k: BAGS[k] for k in keys})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_and_gradients_equal_torchrec(variant):
    ref, fast, kjt = pair(variant)
    up = torch.randn(4, ref.output_dim)
    a, b = ref(kjt).values(), fast(kjt).values()
    torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    (a * up).sum().backward()
    (b * up).sum().backward()
    for name, w in fast.ebc.named_tables():
        idx = fast.ebc.table_offsets[name]
        g = fast.ebc.weights[fast.ebc.table_group[name]].grad[idx:idx + w.shape[0]]
        torch.testing.assert_close(g, ref.ebc.embedding_bags[name].weight.grad, rtol=1e-6, atol=1e-6)
    for (n, p), (_, q) in zip(fast.variants.named_parameters(), ref.variants.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-6, msg=n)
    assert memory_from_module(fast).params == memory_from_module(ref).params


@pytest.mark.parametrize("kind", ["sgd", "rowwise_adagrad"])
@pytest.mark.parametrize("variant", ["full", "unified", "qr"])
def test_fused_update_equals_fbgemm_under_dmp(single_process_group, variant, kind):
    # two steps (the second reads Adagrad's accumulated state), duplicates included
    ref, fast, kjt = pair(variant, EmbeddingOptimizer(kind, lr=0.1))
    dmp = shard_model(copy.deepcopy(ref), EmbeddingOptimizer(kind, lr=0.1))
    up = torch.randn(4, ref.output_dim)
    for _ in range(2):
        (dmp(kjt).values() * up).sum().backward()
        (fast(kjt).values() * up).sum().backward()
    torch.testing.assert_close(fast(kjt).values(), dmp(kjt).values(), rtol=1e-5, atol=1e-6)
    state = dmp.state_dict()
    for name, w in fast.ebc.named_tables():
        key = next(k for k in state if k.endswith(f"embedding_bags.{name}.weight"))
        torch.testing.assert_close(w, state[key].local_shards()[0].tensor, rtol=1e-5, atol=1e-6)
    assert all(w.grad is None for w in fast.ebc.weights.values())  # no gradient the size of a table


def test_state_dict_uses_torchrec_keys_and_moves_between_kernels():
    ref, fast, kjt = pair("unified", EmbeddingOptimizer("rowwise_adagrad", lr=0.1))
    fast(kjt).values().sum().backward()  # fast now differs from ref
    assert sorted(fast.state_dict()) == sorted(ref.state_dict())
    ref.load_state_dict(fast.state_dict())  # table-batched -> TorchRec
    torch.testing.assert_close(ref(kjt).values(), fast(kjt).values(), rtol=0, atol=0)
    _, other, _ = pair("unified", EmbeddingOptimizer("rowwise_adagrad", lr=0.1))
    other.load_state_dict(ref.state_dict())  # TorchRec -> table-batched
    other.ebc.load_fused_optimizer_state_dict(fast.ebc.fused_optimizer_state_dict())
    assert all(m.abs().sum() > 0 for m in fast.ebc.fused_optimizer_state_dict().values())
    torch.testing.assert_close(other(kjt).values(), fast(kjt).values(), rtol=0, atol=0)
    for layer in (other, fast):  # the same next step: weights and Adagrad state both moved
        layer(kjt).values().sum().backward()
    torch.testing.assert_close(other(kjt).values(), fast(kjt).values(), rtol=0, atol=0)
    state = ref.state_dict()
    del state["ebc.embedding_bags.shared.weight"]
    with pytest.raises(RuntimeError, match="Missing key.*ebc.embedding_bags.shared.weight"):
        other.load_state_dict(state)
    state = ref.state_dict()
    state["ebc.embedding_bags.y.weight"] = torch.zeros(3, 8)
    with pytest.raises(RuntimeError, match=r"size mismatch for ebc.embedding_bags.y.weight.*\(3, 8\).*\(7, 8\)"):
        other.load_state_dict(state)


def test_bad_arguments_name_the_fix():
    specs = VARIANTS["full"]
    with pytest.raises(ValueError, match=r"optimizer 'adam': the table-batched kernel implements \['sgd', 'rowwise_adagrad'\]"):
        TableBatched(EmbeddingLayer(specs), EmbeddingOptimizer("adam"))
    with pytest.raises(ValueError, match=r"kwargs \['momentum'\] are not taken by the table-batched kernel"):
        TableBatched(EmbeddingLayer(specs), EmbeddingOptimizer("sgd", kwargs={"momentum": 0.9}))
    with pytest.raises(ValueError, match="lr=0 must be > 0"):
        EmbeddingOptimizer("sgd", lr=0)
    with pytest.raises(ValueError, match=r"unknown table\(s\) \['nope'\]"):
        TableBatchedEmbeddingBags([TableDef("t", 4, 4)], {"a": "nope"})
    model = TableBatched(EmbeddingLayer(specs), EmbeddingOptimizer("sgd"))
    with pytest.raises(ValueError, match="table-batched single-device kernel, which DistributedModelParallel cannot shard"):
        shard_model(model.module)
    with pytest.raises(ValueError, match=r"key\(s\) \['q'\] are not served"):
        model.module.ebc(kjt_from_lists({"q": [[1]]}))
    seq = SequenceEmbeddingLayer([FeatureSpec("s", Full(dim=4), cardinality=3, pooling="none")])
    with pytest.raises(ValueError, match="SequenceEmbeddingLayer: the table-batched kernel serves pooled"):
        TableBatched(seq, EmbeddingOptimizer("sgd"))


def test_meta_tables_start_like_torchrec_under_dmp(single_process_group):
    """Built on meta and attached, the kernel's tables equal DistributedModelParallel's from the same seed."""
    specs = VARIANTS["qr"] + [FeatureSpec("y", Full(dim=8), cardinality=7)]
    fast = TableBatched(EmbeddingLayer(specs, device=torch.device("meta")), EmbeddingOptimizer("sgd"), init_seed=3)
    dmp = shard_model(EmbeddingLayer(specs, device=torch.device("meta")), EmbeddingOptimizer("sgd"), init_seed=3)
    kjt = kjt_from_lists({k: BAGS[k] for k in ("x", "y")})
    torch.testing.assert_close(fast(kjt).values(), dmp(kjt).values(), rtol=0, atol=0)
    assert sorted(fast.state_dict()) == sorted(dmp.state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    ref, fast, kjt = pair("unified", EmbeddingOptimizer("sgd", lr=0.1))
    gpu = copy.deepcopy(fast).cuda()
    up = torch.randn(4, ref.output_dim)
    (fast(kjt).values() * up).sum().backward()
    (gpu(kjt.to(torch.device("cuda"))).values() * up.cuda()).sum().backward()
    for (_, a), (_, b) in zip(fast.ebc.named_tables(), gpu.ebc.named_tables()):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-6)
