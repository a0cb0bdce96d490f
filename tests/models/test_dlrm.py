"""DLRM: shapes for every variant, dot-interaction projections, cat and dcn modes, config errors, learning a
pairwise interaction (plain autograd and sharded with fused embedding optimizers)."""

import copy

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.models import DLRM, DotInteraction
from recsys_emb.sharding import shard_model
from recsys_emb.tables import EmbeddingOptimizer
from recsys_emb.specs import FeatureSpec, Full, Hashed, MixedDimension, Unified
from variant_cases import MODEL_TABLE, model_variants

VARIANTS = model_variants(unified_chunks=2)


def batch(names, b=4, card=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    bags = {n: [torch.randint(0, card, (int(k),), generator=g).tolist()
                for k in torch.randint(1, 3, (b,), generator=g)] for n in names}
    return torch.randn(b, 3, generator=g), kjt_from_lists(bags)


def cross_by_hand(cross, x0):
    """DCN-v2's x_{l+1} = x_0 * (W_l x_l + b_l) + x_l with each W_l written out (U_l V_l when low-rank)."""
    x = x0
    for layer in cross.layers:
        w, b = (layer[1].weight @ layer[0].weight, layer[1].bias) if cross.low_rank else (layer.weight, layer.bias)
        x = x0 * (x @ w.T + b) + x
    return x


@pytest.mark.parametrize("interaction", ["dot", "cat", "dcn"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_shape_every_variant(variant, interaction):
    specs = [FeatureSpec("x", VARIANTS[variant], cardinality=30), FeatureSpec("y", Full(dim=8), cardinality=30),
             FeatureSpec("z", VARIANTS[variant], cardinality=30, shared_with="x", pooling="mean")]
    model = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(16, 8), top_mlp=(8,), interaction=interaction,
                 cross_layers=2, cross_rank=5)
    with torch.no_grad():  # fresh cross biases are zero: make them count
        for p in model.interact.parameters():
            p.add_(0.1 * torch.randn_like(p))
    dense, kjt = batch(["x", "y", "z"])
    out = model(dense, kjt)
    assert len(model.projections) == 0  # every feature is at d = 8 (unified: 2 chunks x 4)
    # the logits by hand from the model's parts: the bottom MLP's vector and the three pooled lookups,
    # then their pairwise dot products (i < j, row by row), their concatenation or the cross network over
    # that concatenation (2 layers, rank 5 < 32), through the top MLP
    with torch.no_grad():
        vecs = [model.bottom(dense), *model.embeddings(kjt).values().split(8, dim=1)]
        if interaction == "dot":
            pairs = [(vecs[i] * vecs[j]).sum(1) for i in range(4) for j in range(i + 1, 4)]
            top_in = torch.cat([vecs[0], torch.stack(pairs, dim=1)], dim=1)
        elif interaction == "cat":
            top_in = torch.cat(vecs, dim=1)
        else:
            assert model.interact.low_rank and model.interaction_out_dim == 32 and len(model.interact.layers) == 2
            top_in = cross_by_hand(model.interact, torch.cat(vecs, dim=1))
        torch.testing.assert_close(out.detach(), model.top(top_in).squeeze(1))
    out.sum().backward()


def test_mixed_output_dims_project_only_features_off_the_interaction_dim():
    specs = [FeatureSpec("a", Full(dim=8), cardinality=30),
             FeatureSpec("b", Full(dim=4), cardinality=30),
             FeatureSpec("c", MixedDimension(base_dim=16, alpha=0.5, boundaries=(4,), block_dims=(16, 4)),
                         cardinality=30),
             FeatureSpec("d", Unified(MODEL_TABLE, chunks=3), cardinality=None),
             FeatureSpec("e", Unified(MODEL_TABLE, chunks=2), cardinality=None)]
    model = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(16, 8), top_mlp=(8,))
    assert model.interaction_dim == 8
    assert {k: tuple(p.weight.shape) for k, p in model.projections.items()} == {
        "b": (8, 4), "c": (8, 16), "d": (8, 12)}
    assert all(p.bias is None for p in model.projections.values())
    n = 6  # bottom output + 5 features
    assert model.interaction_out_dim == 8 + n * (n - 1) // 2
    assert model.top.net[0].in_features == model.interaction_out_dim
    dense, kjt = batch(["a", "b", "c", "d", "e"])
    assert model(dense, kjt).shape == (4,)
    cat = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(16, 8), interaction="cat")
    assert len(cat.projections) == 0 and cat.interaction_out_dim == 8 + 8 + 4 + 16 + 12 + 8
    assert cat(dense, kjt).shape == (4,)
    dcn = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(16, 8), interaction="dcn", cross_rank=0)
    assert len(dcn.projections) == 0 and dcn.interaction_out_dim == 8 + 8 + 4 + 16 + 12 + 8
    assert not dcn.interact.low_rank and dcn.interact.layers[0].weight.shape == (56, 56)  # full rank
    assert dcn(dense, kjt).shape == (4,)


def test_dot_interaction_values_are_what_the_top_mlp_sees():
    torch.manual_seed(0)
    specs = [FeatureSpec("a", Full(dim=4), cardinality=10), FeatureSpec("b", Full(dim=8), cardinality=10)]
    model = DLRM(EmbeddingLayer(specs), dense_in=2, bottom_mlp=(4,), top_mlp=())
    dense, kjt = torch.randn(3, 2), kjt_from_lists({"a": [[1], [2], [3]], "b": [[4], [5, 6], []]})
    seen = {}
    model.top.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0]))
    model(dense, kjt)
    x = model.bottom(dense)
    e = model.embeddings(kjt).values()
    a, b = e[:, :4], model.projections["b"](e[:, 4:])
    expected = torch.stack([(x * a).sum(1), (x * b).sum(1), (a * b).sum(1)], dim=1)
    torch.testing.assert_close(seen["x"], torch.cat([x, expected], 1))


def test_no_dense_features():
    specs = [FeatureSpec("a", Full(dim=8), cardinality=10), FeatureSpec("b", Full(dim=4), cardinality=10),
             FeatureSpec("c", Full(dim=4), cardinality=10)]
    model = DLRM(EmbeddingLayer(specs), dense_in=0)
    assert model.bottom is None and model.interaction_dim == 4 and list(model.projections) == ["a"]
    assert model.interaction_out_dim == DotInteraction.output_dim_for(3)
    kjt = kjt_from_lists({"a": [[1], [2]], "b": [[3], [4]], "c": [[5], []]})
    assert model(None, kjt).shape == (2,)
    assert list(DLRM(EmbeddingLayer(specs), dense_in=0, interaction_dim=8).projections) == ["b", "c"]
    with pytest.raises(ValueError, match=r"built with dense_in=0 but got dense features of shape \(2, 3\)"):
        model(torch.randn(2, 3), kjt)


def test_config_errors_name_argument_value_and_allowed():
    specs = [FeatureSpec("a", Full(dim=8), cardinality=10)]
    with pytest.raises(ValueError, match=r"^interaction='sum' must be 'dot', 'cat' or 'dcn'$"):
        DLRM(EmbeddingLayer(specs), dense_in=3, interaction="sum")
    with pytest.raises(ValueError, match=r"dense_in=-1 must be an int >= 0"):
        DLRM(EmbeddingLayer(specs), dense_in=-1)
    with pytest.raises(ValueError, match=r"bottom_mlp=\(\) must hold at least one"):
        DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=())
    with pytest.raises(ValueError, match=r"top_mlp=\(8, -2\) must hold ints >= 1"):
        DLRM(EmbeddingLayer(specs), dense_in=3, top_mlp=(8, -2))
    with pytest.raises(ValueError, match=r"interaction='dot' needs >= 2 vectors"):
        DLRM(EmbeddingLayer(specs), dense_in=0)
    with pytest.raises(ValueError, match=r"interaction_dim=16 differs from bottom_mlp\[-1\]=32"):
        DLRM(EmbeddingLayer(specs), dense_in=3, interaction_dim=16)
    with pytest.raises(ValueError, match=r"^num_layers=0 must be an int >= 1$"):
        DLRM(EmbeddingLayer(specs), dense_in=3, interaction="dcn", cross_layers=0)
    with pytest.raises(TypeError, match=r"DLRM takes a built EmbeddingLayer"):
        DLRM(specs, dense_in=3)
    model = DLRM(EmbeddingLayer(specs), dense_in=3)
    with pytest.raises(ValueError, match=r"dense features of shape \(B, 3\); got \(2, 4\)"):
        model(torch.randn(2, 4), kjt_from_lists({"a": [[1], [2]]}))


def parity_task(n=2048, vocab=8, seed=0):
    """Label = 1 when a and b have the same parity: no first-order signal, only their interaction."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, vocab, (n,), generator=g)
    b = torch.randint(0, vocab, (n,), generator=g)
    y = ((a + b) % 2 == 0).float()
    dense = torch.randn(n, 2, generator=g)
    return dense, a, b, y


def kjt_ab(a, b):
    ones = torch.ones(2 * a.numel(), dtype=torch.int32)
    return KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.cat([a, b]), lengths=ones)


SPECS_AB = [FeatureSpec("a", Full(dim=8), cardinality=8), FeatureSpec("b", Full(dim=8), cardinality=8)]


@pytest.mark.parametrize("interaction", ["dot", "dcn"])
def test_learns_a_pairwise_interaction(interaction):
    torch.manual_seed(0)
    dense, a, b, y = parity_task()
    model = DLRM(EmbeddingLayer(SPECS_AB), dense_in=2, bottom_mlp=(8,), top_mlp=(16,), interaction=interaction,
                 cross_rank=4)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    bce = torch.nn.BCEWithLogitsLoss()
    losses = []
    for step in range(150):
        i = torch.arange(step * 128, (step + 1) * 128) % a.numel()
        loss = bce(model(dense[i], kjt_ab(a[i], b[i])), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.2
    with torch.no_grad():
        auc = roc_auc_score(y.numpy(), model(dense, kjt_ab(a, b)).numpy())
    assert auc > 0.9


@pytest.mark.parametrize("interaction", ["dot", "dcn"])
def test_sharded_forward_equals_unsharded(single_process_group, interaction):
    """One model holding every variant (and a dim-4 table), sharded with fused tables, scores like itself unsharded."""
    torch.manual_seed(0)
    specs = [FeatureSpec("b", Full(dim=4), cardinality=30), FeatureSpec("h", Hashed(dim=8, buckets=13), cardinality=None),
             *(FeatureSpec(v, spec, cardinality=30) for v, spec in sorted(VARIANTS.items()))]
    model = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(16, 8), top_mlp=(8,), interaction=interaction,
                 cross_rank=4)
    ref = copy.deepcopy(model)
    dense, kjt = batch([s.name for s in specs])
    dmp = shard_model(model, EmbeddingOptimizer("sgd", lr=0.1))
    torch.testing.assert_close(dmp(dense, kjt), ref(dense, kjt), rtol=1e-5, atol=1e-5)


def test_sharded_training_with_fused_tables_and_dense_optimizer(single_process_group):
    torch.manual_seed(0)
    model = DLRM(EmbeddingLayer(SPECS_AB, device=torch.device("meta")), dense_in=2, bottom_mlp=(8,), top_mlp=(16,))
    # Row-wise Adagrad: plain fused SGD moves the tables too slowly for a 30-step test.
    dmp = shard_model(model, EmbeddingOptimizer("rowwise_adagrad", lr=0.1))
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    fused = dict(in_backward_optimizer_filter(dmp.named_parameters(), include=True))
    assert sorted(fused) == sorted(dmp.fused_optimizer.params) == [
        "embeddings.ebc.embedding_bags.a.weight", "embeddings.ebc.embedding_bags.b.weight"]
    assert dense_params and not any("embedding_bags" in n for n in dense_params)
    opt = torch.optim.Adam(dense_params.values(), lr=0.01)
    dense, a, b, y = parity_task(n=512)
    bce = torch.nn.BCEWithLogitsLoss()
    before = dmp.state_dict()["embeddings.ebc.embedding_bags.a.weight"].local_shards()[0].tensor.clone()
    losses = []
    for step in range(30):
        i = torch.arange(step * 64, (step + 1) * 64) % a.numel()
        loss = bce(dmp(dense[i], kjt_ab(a[i], b[i])), y[i])
        opt.zero_grad()
        loss.backward()  # the tables' SGD step runs inside this backward
        opt.step()
        losses.append(loss.item())
    after = dmp.state_dict()["embeddings.ebc.embedding_bags.a.weight"].local_shards()[0].tensor
    assert not torch.equal(before, after)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3


def test_table_batched_kernel_learns_with_fused_tables_and_a_dense_optimizer():
    # the single-device GPU path: plain PyTorch tables updated inside backward, Adam on the rest
    from recsys_emb.tables import TableBatched

    torch.manual_seed(0)
    model = TableBatched(DLRM(EmbeddingLayer(SPECS_AB), dense_in=2, bottom_mlp=(8,), top_mlp=(16,)),
                         EmbeddingOptimizer("rowwise_adagrad", lr=0.1)).module
    dense_params = [p for p in model.parameters() if p.requires_grad]
    assert not any(p is w for p in dense_params for w in model.embeddings.ebc.weights.values())
    opt = torch.optim.Adam(dense_params, lr=0.01)
    dense, a, b, y = parity_task()
    bce = torch.nn.BCEWithLogitsLoss()
    before = model.embeddings.ebc.weights["d8"].detach().clone()
    for step in range(150):
        i = torch.arange(step * 128, (step + 1) * 128) % a.numel()
        loss = bce(model(dense[i], kjt_ab(a[i], b[i])), y[i])
        opt.zero_grad()
        loss.backward()  # the tables' update runs inside this backward
        opt.step()
    assert not torch.equal(before, model.embeddings.ebc.weights["d8"])
    with torch.no_grad():
        auc = roc_auc_score(y.numpy(), model(dense, kjt_ab(a, b)).numpy())
    assert auc > 0.9


def test_bf16_autocast_runs_the_dense_part_in_bf16_and_keeps_tables_and_logits_float32():
    """``autocast=torch.bfloat16`` (``train.mixed_precision: bf16``), here on CPU autocast: the MLPs compute in
    bfloat16, the lookups and the returned logits stay float32, and the logits stay within bf16's rounding
    of the float32 model with the same weights."""
    torch.manual_seed(0)
    specs = [FeatureSpec(n, Full(dim=8), cardinality=30) for n in ("x", "y")]
    fp32 = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(16, 8), top_mlp=(8,))
    bf16 = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(16, 8), top_mlp=(8,), autocast=torch.bfloat16)
    bf16.load_state_dict(fp32.state_dict())
    seen = {}
    bf16.top.register_forward_hook(lambda m, i, o: seen.update(top=o.dtype))
    bf16.embeddings.register_forward_hook(lambda m, i, o: seen.update(lookup=o.values().dtype))
    dense, kjt = batch(["x", "y"], b=64)
    ref, out = fp32(dense, kjt), bf16(dense, kjt)
    assert seen == {"top": torch.bfloat16, "lookup": torch.float32} and out.dtype == torch.float32
    assert not torch.equal(out, ref) and torch.allclose(out, ref, atol=0.05, rtol=0.05), (out - ref).abs().max()
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in bf16.top.parameters())


def test_linear_term_adds_to_the_logit_and_its_penalty_to_the_regularization():
    """``linear=True``: the logit is the deep part's (``head``) plus the first-order term read from the ids;
    a sharded model scores like itself unsharded (its weights are dense parameters)."""
    torch.manual_seed(0)
    model = DLRM(EmbeddingLayer(SPECS_AB), dense_in=3, bottom_mlp=(8,), top_mlp=(8,), linear=True, linear_l2=0.01)
    with torch.no_grad():
        for p in model.linear.parameters():
            p.normal_()
    dense, kjt = batch(["a", "b"], card=8)
    s = model.linear.scale
    want = model.head(dense, model.embeddings(kjt).values()) + s * (dense @ model.linear.dense)
    for f, w in zip(["a", "b"], model.linear.weights):
        want = want + s * torch.stack([w[bag.long()].sum() for bag in kjt[f].to_dense()])
    torch.testing.assert_close(model(dense, kjt), want)
    reg = model.regularization()  # the layer has no L2 here: the penalty is the linear term's alone
    torch.testing.assert_close(reg, 0.01 * s * s * sum((p ** 2).sum() for p in model.linear.parameters()))
    with pytest.raises(ValueError, match="needs every feature's cardinality"):
        DLRM(EmbeddingLayer([FeatureSpec("h", Hashed(dim=8, buckets=13), cardinality=None), SPECS_AB[0]]),
             dense_in=0, linear=True)


def test_sharded_forward_with_the_linear_term_equals_unsharded(single_process_group):
    torch.manual_seed(0)
    model = DLRM(EmbeddingLayer(SPECS_AB), dense_in=3, bottom_mlp=(8,), top_mlp=(8,), linear=True)
    with torch.no_grad():
        for p in model.linear.parameters():
            p.normal_()
    ref = copy.deepcopy(model)
    dense, kjt = batch(["a", "b"], card=8)
    dmp = shard_model(model, EmbeddingOptimizer("sgd", lr=0.1))
    torch.testing.assert_close(dmp(dense, kjt), ref(dense, kjt), rtol=1e-5, atol=1e-5)
