"""EmbeddingLayer's row L2 (optim.embedding_l2) against a hand computation: the penalty, and the update it
makes through TorchRec's fused SGD under DistributedModelParallel."""

import copy

import pytest
import torch

from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.sharding import shard_model
from recsys_emb.specs import FeatureSpec, Full, Hashed
from recsys_emb.tables import EmbeddingOptimizer

SPECS = [FeatureSpec("a", Full(dim=4), cardinality=6), FeatureSpec("m", Full(dim=4), cardinality=5, pooling="mean")]
BAGS = {"a": [[1], [1], [3], []], "m": [[0, 2], [4], [], [2, 2, 1]]}


def hand(w_a, w_m, lam):
    """lam * (each row of a read once: rows 1 and 3; bags of m: one row (4) once, several rows by the
    squared norm of their mean)."""
    one = (w_a[1] ** 2).sum() + (w_a[3] ** 2).sum() + (w_m[4] ** 2).sum()
    means = ((w_m[0] + w_m[2]) / 2).pow(2).sum() + ((w_m[2] * 2 + w_m[1]) / 3).pow(2).sum()
    return lam * (one + means)


def test_penalty_equals_the_hand_computation():
    torch.manual_seed(0)
    layer = EmbeddingLayer(SPECS, l2=0.3)
    layer(kjt_from_lists(BAGS))
    w_a, w_m = (layer.ebc.embedding_bags[t].weight.detach() for t in ("a", "m"))
    assert layer.regularization().item() == pytest.approx(hand(w_a, w_m, 0.3).item(), rel=1e-6)
    layer.eval()
    layer(kjt_from_lists(BAGS))
    assert layer.regularization().item() == 0.0  # evaluation adds no penalty
    plain = EmbeddingLayer(SPECS).train()  # l2 = 0: the training forward adds no penalty either
    plain(kjt_from_lists(BAGS))
    assert plain.regularization().item() == 0.0
    with pytest.raises(ValueError, match="l2=-1 must be a number >= 0"):
        EmbeddingLayer(SPECS, l2=-1)


def test_the_penalty_updates_the_rows_read_through_fused_sgd_under_dmp(single_process_group):
    torch.manual_seed(0)
    layer = EmbeddingLayer(SPECS, l2=0.3)
    w_a0 = layer.ebc.embedding_bags["a"].weight.detach().clone()
    w_m0 = layer.ebc.embedding_bags["m"].weight.detach().clone()
    dmp = shard_model(copy.deepcopy(layer), EmbeddingOptimizer("sgd", lr=0.5))
    dmp(kjt_from_lists(BAGS))
    dmp.module.regularization().backward()  # the penalty alone: its gradient is the update
    state = dmp.state_dict()
    w_a1 = state["ebc.embedding_bags.a.weight"].local_shards()[0].tensor
    w_m1 = state["ebc.embedding_bags.m.weight"].local_shards()[0].tensor
    wa, wm = w_a0.clone().requires_grad_(), w_m0.clone().requires_grad_()
    hand(wa, wm, 0.3).backward()
    torch.testing.assert_close(w_a1, w_a0 - 0.5 * wa.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_m1, w_m0 - 0.5 * wm.grad, rtol=1e-5, atol=1e-6)
    # rows read once per batch move by lr * 2 * l2 * w, whatever their frequency; unread rows stay
    torch.testing.assert_close(w_a1[1], w_a0[1] * (1 - 0.5 * 2 * 0.3), rtol=1e-5, atol=1e-6)
    assert torch.equal(w_a1[0], w_a0[0]) and torch.equal(w_m1[3], w_m0[3])


def test_hashed_rows_and_dlrm(single_process_group):
    from recsys_emb.models import DLRM

    layer = EmbeddingLayer([FeatureSpec("h", Hashed(dim=4, buckets=3, num_hashes=2))], l2=1.0)
    out = layer(kjt_from_lists({"h": [[5], [6]]})).values()
    assert layer.regularization() > 0 and out.shape == (2, 4)
    model = DLRM(EmbeddingLayer(SPECS, l2=0.1), dense_in=2, bottom_mlp=(4,))
    model(torch.randn(4, 2), kjt_from_lists(BAGS))
    assert model.regularization().item() == pytest.approx(model.embeddings.regularization().item())


def _count_rows_on_rank(rank, store, keys, out):
    import torch.distributed as dist

    from recsys_emb.layer import batch_row_counts

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        count, world = batch_row_counts(torch.tensor(keys[rank], dtype=torch.int64))
        torch.save((count, world), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_rows_are_counted_over_every_ranks_batch(tmp_path):
    # two real processes over gloo: row 3 is read twice on rank 0 and once on rank 1, row 5 only on rank 1;
    # a negative key (a bag of another size) counts once, even where both ranks have the same one
    import torch.multiprocessing as mp

    keys = [[3, -1, 3, 7], [5, 3, -1]]
    mp.spawn(_count_rows_on_rank, args=(str(tmp_path / "store"), keys, str(tmp_path / "counts")), nprocs=2)
    (c0, w0), (c1, w1) = (torch.load(tmp_path / f"counts.{r}") for r in (0, 1))
    assert (w0, w1) == (2, 2)
    assert c0.tolist() == [3, 1, 3, 1] and c1.tolist() == [1, 3, 1]
