"""DIN: shapes for every variant, masking, attention vs sum pooling, input and config checks,
mini-batch aware regularisation, learning candidate-history relevance (plain and sharded), and decoupled
(DARE) attention and representation tables, checked by their gradients."""

import random

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchrec.optim.optimizers import in_backward_optimizer_filter

from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, kjt_from_lists
from recsys_emb.errors import InvalidInputError
from recsys_emb.errors import SpecError
from recsys_emb.models import DIN, AttentionPooling, SumPooling
from recsys_emb.models.din import attention_specs
from recsys_emb.sharding import plan_report, shard_model
from recsys_emb.tables import EmbeddingOptimizer
from recsys_emb.specs import FeatureSpec, Full, MixedDimension
from variant_cases import model_variants

VARIANTS = model_variants(unified_chunks=3)
CAT_VARIANTS = {**VARIANTS, "mixed": MixedDimension(base_dim=8, alpha=0.5, boundaries=(2,), block_dims=(8, 4))}
N_ITEMS, N_CATS = 50, 5


def din(profile, pairs, device=None, decoupled=False, **kwargs):
    """DIN over layers built from specs: pooled profile features and (candidate, history) spec pairs;
    ``decoupled``: with the attention twins of the sequence features (DARE)."""
    seq = SequenceEmbeddingLayer([s for p in pairs for s in p], device=device)
    twins = SequenceEmbeddingLayer(attention_specs(seq.features), device=device) if decoupled else None
    return DIN(seq, [(c.name, h.name) for c, h in pairs],
               profile=EmbeddingLayer(profile, device=device) if profile else None, attention=twins, **kwargs)


def pair(name, spec, card):
    return (FeatureSpec(name, spec, cardinality=card, pooling="none"),
            FeatureSpec("hist_" + name, spec, cardinality=card, pooling="none", shared_with=name))


def item_pairs(item_spec=Full(dim=8), cat_spec=Full(dim=4)):
    return [pair("item", item_spec, N_ITEMS), pair("cat", cat_spec, N_CATS)]


USER = FeatureSpec("user", Full(dim=4), cardinality=10)


def bags(items, histories, users=None):
    """KJT bags for candidate items and item histories; categories are item // 10."""
    out = {"item": [[i] for i in items], "hist_item": histories,
           "cat": [[i // 10] for i in items], "hist_cat": [[i // 10 for i in h] for h in histories]}
    if users is not None:
        out["user"] = [[u] for u in users]
    return out


ITEMS = [3, 17, 42, 8]
HISTORIES = [[1, 2, 3], [], [40, 41, 5, 17, 42], [8]]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_shape_every_variant(variant):
    model = din([USER], item_pairs(VARIANTS[variant], CAT_VARIANTS[variant]), dense_in=2,
                attention_mlp=(8,), mlp=(16,))
    dc = VARIANTS[variant].output_dim * 2
    assert model.candidate_dim == dc and model.mlp_in_dim == 4 + 2 + 2 * dc
    dense = torch.randn(4, 2)
    out = model(dense, kjt_from_lists(bags(ITEMS, HISTORIES, users=[0, 1, 2, 3])))
    out.sum().backward()
    # each sample scored alone gives its logit in the batch: no row, history or profile of one sample
    # reaches another's (eval mode: no batch statistics, no dropout)
    model.eval()
    with torch.no_grad():
        batched = model(dense, kjt_from_lists(bags(ITEMS, HISTORIES, users=[0, 1, 2, 3])))
        alone = torch.cat([model(dense[i:i + 1], kjt_from_lists(bags(ITEMS[i:i + 1], HISTORIES[i:i + 1], users=[i])))
                           for i in range(4)])
    assert batched.shape == (4,) and len(set(batched.tolist())) == 4
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)


def test_without_profile_or_dense_and_with_prelu_relu():
    for act in ("prelu", "relu"):
        model = din([], item_pairs(), attention_mlp=(8,), mlp=(16,), activation=act)
        assert model.profile is None
        assert model(None, kjt_from_lists(bags(ITEMS, HISTORIES))).shape == (4,)


def test_padding_does_not_change_the_logits():
    torch.manual_seed(0)
    model = din([USER], item_pairs(), attention_mlp=(8,), mlp=(16,)).eval()
    base = model(None, kjt_from_lists(bags(ITEMS, HISTORIES, users=[0, 1, 2, 3])))
    # A further sample with a much longer history makes T (the padded length) 12 for everyone.
    longer = model(None, kjt_from_lists(bags(ITEMS + [9], HISTORIES + [list(range(12))], users=[0, 1, 2, 3, 4])))
    torch.testing.assert_close(longer[:4], base)
    # Reordering the batch only reorders the logits: nothing leaks between samples.
    perm = [2, 0, 3, 1]
    shuffled = model(None, kjt_from_lists(bags([ITEMS[i] for i in perm], [HISTORIES[i] for i in perm],
                                                users=perm)))
    torch.testing.assert_close(shuffled, base[perm])


def mlp_input(model, kjt):
    seen = {}
    handle = model.mlp.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0]))
    model(None, kjt)
    handle.remove()
    return seen["x"]


def test_attention_flag_switches_between_weighted_and_plain_sum_pooling():
    torch.manual_seed(0)
    att = din([], item_pairs(), attention_mlp=(8,), mlp=(16,))
    plain = din([], item_pairs(), attention_mlp=(8,), mlp=(16,), use_attention=False)
    assert isinstance(att.pooling, AttentionPooling) and type(plain.pooling) is SumPooling
    plain.sequences.load_state_dict(att.sequences.state_dict())
    kjt = kjt_from_lists(bags(ITEMS, HISTORIES))
    rows = att.sequences(kjt)
    hist = torch.cat([rows["hist_item"].values(), rows["hist_cat"].values()], dim=1)
    cand = torch.cat([rows["item"].values(), rows["cat"].values()], dim=1)
    sums = torch.stack([hist[o:o + len(h)].sum(0) for o, h in
                        zip([0, 3, 3, 8], HISTORIES)])
    x_plain = mlp_input(plain, kjt)
    torch.testing.assert_close(x_plain, torch.cat([cand, sums], 1))
    x_att = mlp_input(att, kjt)
    torch.testing.assert_close(x_att[:, :12], cand)
    assert not torch.allclose(x_att[:, 12:], sums)
    w = att.pooling.weights_jagged(hist, torch.tensor([3, 0, 5, 1]), cand)
    torch.testing.assert_close(x_att[3, 12:], w[8] * hist[8])  # one behaviour: w * h, no softmax
    assert x_att[1, 12:].abs().sum() == 0  # empty history


def test_input_checks_name_the_feature():
    model = din([], item_pairs(), attention_mlp=(8,), mlp=(16,))
    two = bags(ITEMS, HISTORIES)
    two["item"][1] = [17, 18]
    with pytest.raises(InvalidInputError, match=r"candidate feature 'item' must hold exactly one id per sample"):
        model(None, kjt_from_lists(two))
    uneven = bags(ITEMS, HISTORIES)
    uneven["hist_cat"][0] = [0]
    with pytest.raises(InvalidInputError, match=r"history feature 'hist_cat' has lengths \[1, 0, 5, 1\] but "
                                                r"'hist_item' has \[3, 0, 5, 1\]"):
        model(None, kjt_from_lists(uneven))
    with pytest.raises(InvalidInputError, match=r"missing feature\(s\) \['user'\]"):
        din([USER], item_pairs())(None, kjt_from_lists(bags(ITEMS, HISTORIES)))
    with pytest.raises(ValueError, match=r"dense features of shape \(B, 2\); got None"):
        din([], item_pairs(), dense_in=2)(None, kjt_from_lists(bags(ITEMS, HISTORIES)))
    with pytest.raises(ValueError, match=r"built with dense_in=0 but got dense features of shape \(4, 2\)"):
        model(torch.randn(4, 2), kjt_from_lists(bags(ITEMS, HISTORIES)))


def test_config_errors():
    item, hist = pair("item", Full(dim=8), N_ITEMS)
    with pytest.raises(ValueError, match=r"history feature 'hist_item' must have shared_with='item'.*got "
                                         r"shared_with=None"):
        din([], [(item, FeatureSpec("hist_item", Full(dim=8), cardinality=N_ITEMS, pooling="none"))])
    with pytest.raises(ValueError, match=r"feature 'item': pooling='sum' is not served by SequenceEmbeddingLayer"):
        din([], [(FeatureSpec("item", Full(dim=8), cardinality=N_ITEMS), hist)])
    with pytest.raises(ValueError, match=r"feature 'p': pooling='none' is not served by EmbeddingLayer"):
        din([FeatureSpec("p", Full(dim=4), cardinality=3, pooling="none")], [(item, hist)])
    seq = SequenceEmbeddingLayer([item, hist])
    with pytest.raises(ValueError, match=r"at least one \(candidate, history\) pair"):
        DIN(seq, [])
    with pytest.raises(ValueError, match=r"item_pairs names \['hist'\], which the sequence layer does not have"):
        DIN(seq, [("item", "hist")])
    with pytest.raises(ValueError, match=r"sequence feature\(s\) \['cat', 'hist_cat'\] belong to no item_pairs entry"):
        DIN(SequenceEmbeddingLayer([s for p in item_pairs() for s in p]), [("item", "hist_item")])
    with pytest.raises(TypeError, match=r"DIN takes its candidate and history features as a built SequenceEmbeddingLayer"):
        DIN([item, hist], [("item", "hist_item")])
    with pytest.raises(ValueError, match=r"activation='tanh' must be one of"):
        din([], [(item, hist)], activation="tanh")
    with pytest.raises(ValueError, match=r"mba_lambda=-1 must be a number >= 0"):
        din([], [(item, hist)], mba_lambda=-1)
    with pytest.raises(ValueError, match=r"frequencies has key 'hist_item'.*among \['item'\]"):
        din([], [(item, hist)], frequencies={"hist_item": torch.ones(N_ITEMS)})
    with pytest.raises(ValueError, match=r"frequencies\['item'\] must be a 1-D tensor of 50 counts"):
        din([], [(item, hist)], frequencies={"item": torch.ones(3)})
    with pytest.raises(ValueError, match=r"feature name\(s\) \['item'\] appear in both the profile and the sequence"):
        din([FeatureSpec("item", Full(dim=4), cardinality=3)], [(item, hist)])


def test_mba_regularisation_counts_batch_ids_once_scaled_by_frequency():
    torch.manual_seed(0)
    pairs = [pair("item", Full(dim=4), 6), pair("cat", Full(dim=4), 3)]
    lam = 0.5
    model = din([], pairs, attention_mlp=(8,), mlp=(8,), mba_lambda=lam,
                frequencies={"item": torch.tensor([1.0, 2, 3, 4, 5, 6])})
    kjt = kjt_from_lists({"item": [[1], [2], [3]], "hist_item": [[1, 3, 3], [2], []],
                          "cat": [[0], [1], [0]], "hist_cat": [[0, 1, 1], [1], []]})
    model(None, kjt)
    reg = model.regularization()
    items = model.sequences.ecs["d4"].embeddings["item"].weight
    cats = model.sequences.ecs["d4"].embeddings["cat"].weight
    sq = lambda w: (w ** 2).sum().item()  # noqa: E731
    expected = lam * (sq(items[1]) / 2 + sq(items[2]) / 3 + sq(items[3]) / 4 + sq(cats[0]) + sq(cats[1]))
    assert reg.item() == pytest.approx(expected, rel=1e-5)
    reg.backward()
    present = torch.tensor([False, True, True, True, False, False])
    assert (items.grad[~present] == 0).all()
    n = torch.tensor([1.0, 2, 3, 4, 5, 6]).unsqueeze(1)
    torch.testing.assert_close(items.grad[present], (2 * lam * items / n)[present].detach())
    torch.testing.assert_close(cats.grad[:2], (2 * lam * cats[:2]).detach())
    assert (cats.grad[2] == 0).all()
    assert din([], pairs, mba_lambda=0.0).regularization().item() == 0.0
    with pytest.raises(RuntimeError, match="needs a forward pass first"):
        din([], pairs, mba_lambda=0.1).regularization()


def relevance_task(n=2048, seed=0):
    """Each user browses mostly one category; a click is likely iff the candidate is from it."""
    rng = random.Random(seed)
    items, histories, users, labels = [], [], [], []
    for _ in range(n):
        fav = rng.randrange(N_CATS)
        hist = [fav * 10 + rng.randrange(10) if rng.random() < 0.8 else rng.randrange(N_ITEMS)
                for _ in range(rng.randint(1, 8))]
        cand = fav * 10 + rng.randrange(10) if rng.random() < 0.5 else rng.randrange(N_ITEMS)
        p = 0.9 if cand // 10 == fav else 0.1
        items.append(cand)
        histories.append(hist)
        users.append(rng.randrange(10))  # noise feature
        labels.append(float(rng.random() < p))
    return items, histories, users, torch.tensor(labels)


def batches(task, size, steps):
    items, histories, users, y = task
    n = len(items)
    for step in range(steps):
        lo = (step * size) % n
        sl = slice(lo, lo + size)
        yield kjt_from_lists(bags(items[sl], histories[sl], users[sl])), y[sl]


def test_learns_candidate_history_relevance():
    torch.manual_seed(0)
    task = relevance_task()
    model = din([USER], item_pairs(), attention_mlp=(16,), mlp=(32, 16), mba_lambda=1e-4)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    bce = torch.nn.BCEWithLogitsLoss()
    losses = []
    for kjt, y in batches(task, 128, 160):
        loss = bce(model(None, kjt), y) + model.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-16:]) / 16 < sum(losses[:16]) / 16 - 0.1
    model.eval()
    with torch.no_grad():
        kjt, y = next(batches(task, len(task[0]), 1))
        auc = roc_auc_score(y.numpy(), model(None, kjt).numpy())
    assert auc > 0.75


@pytest.mark.parametrize("decoupled", [False, True])
def test_sharded_training_with_fused_sequence_tables(single_process_group, decoupled):
    torch.manual_seed(0)
    model = din([USER], item_pairs(), attention_mlp=(16,), mlp=(32,), mba_lambda=1e-4,
                device=torch.device("meta"), decoupled=decoupled)
    dmp = shard_model(model, EmbeddingOptimizer("rowwise_adagrad", lr=0.1))
    report = plan_report(dmp)
    twins = {("attention.ecs.d4", "item_att"), ("attention.ecs.d4", "cat_att")} if decoupled else set()
    assert {(r["module"], r["table"]) for r in report} == {
        ("profile.ebc", "user"), ("sequences.ecs.d8", "item"), ("sequences.ecs.d4", "cat"), *twins}
    assert {(r["sharding_type"], r["compute_kernel"]) for r in report} == {("table_wise", "fused")}
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    assert sorted(n for n, _ in dmp.named_parameters() if n not in dense) == sorted(dmp.fused_optimizer.params)
    assert not any(".embeddings." in n or "embedding_bags" in n for n in dense)
    opt = torch.optim.Adam(dense.values(), lr=0.01)
    bce = torch.nn.BCEWithLogitsLoss()
    losses = []
    for kjt, y in batches(relevance_task(n=1024), 128, 30):
        loss = bce(dmp(None, kjt), y) + dmp.module.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_bf16_autocast_runs_attention_and_mlp_in_bf16_with_float32_logits():
    torch.manual_seed(0)
    fp32 = din([USER], item_pairs(), dense_in=2, attention_mlp=(8,), mlp=(16,))
    bf16 = din([USER], item_pairs(), dense_in=2, attention_mlp=(8,), mlp=(16,), autocast=torch.bfloat16)
    bf16.load_state_dict(fp32.state_dict())
    seen = {}
    bf16.mlp.register_forward_hook(lambda m, i, o: seen.update(mlp=o.dtype))
    dense, kjt = torch.randn(4, 2), kjt_from_lists(bags(ITEMS, HISTORIES, users=[0, 1, 2, 3]))
    ref, out = fp32(dense, kjt), bf16(dense, kjt)
    assert seen == {"mlp": torch.bfloat16} and out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=0.05, rtol=0.05), (out - ref).abs().max()
    out.sum().backward()


def dare(pairs, **kwargs):
    """A DIN with decoupled embeddings: the attention twins of the pairs' features (default dims)."""
    return din(kwargs.pop("profile", []), pairs, decoupled=True, **kwargs)


def table_grads(model, kjt):
    """``{table: (rows, dim) gradient}`` of every sequence table (both layers) for the sum of the logits."""
    model.zero_grad()
    model(None, kjt).sum().backward()
    return {name.split(".")[-2]: p.grad for name, p in model.named_parameters() if ".ecs." in name}


def test_decoupled_attention_table_scores_and_representation_table_pools():
    # candidates 0..9, history items 20..29: disjoint rows, so a row's gradient says which path read it
    torch.manual_seed(0)
    model = dare([pair("item", Full(dim=8), 30)], attention_mlp=(8,), mlp=(8,), activation="relu")
    assert model.attention_dim == 4 and model.pooling.unit.net[0].in_features == 16  # [h_a, c_a, h_a - c_a, h_a * c_a]
    kjt = kjt_from_lists({"item": [[1], [2], [3]], "hist_item": [[20, 21], [22, 23, 24], [25]]})
    g = table_grads(model, kjt)
    assert set(g) == {"item", "item_att"} and g["item"].shape == (30, 8) and g["item_att"].shape == (30, 4)
    cand, hist = [1, 2, 3], [20, 21, 22, 23, 24, 25]
    for table in ("item", "item_att"):  # both tables learn from both the candidates and the histories
        assert (g[table][cand].abs().sum(1) > 0).all() and (g[table][hist].abs().sum(1) > 0).all()

    # the attention table reaches the logits only through the scores: constant scores, no gradient
    unit_out = model.pooling.unit.net[-1]
    with torch.no_grad():
        unit_out.weight.zero_()
        unit_out.bias.fill_(1.0)
    g = table_grads(model, kjt)
    assert g["item_att"].abs().sum() == 0
    assert (g["item"][hist].abs().sum(1) > 0).all() and (g["item"][cand].abs().sum(1) > 0).all()

    # the representation history rows reach the logits only through the pooled interest: with the final MLP
    # blind to the interest columns they get no gradient, while the scores still train the attention table
    torch.manual_seed(1)
    model = dare([pair("item", Full(dim=8), 30)], attention_mlp=(8,), mlp=(8,), activation="relu")
    with torch.no_grad():
        model.mlp.net[0].weight[:, 8:] = 0  # MLP input: [candidate (8), interest (8)]
    g = table_grads(model, kjt)
    assert g["item"][hist].abs().sum() == 0 and (g["item"][cand].abs().sum(1) > 0).all()
    assert g["item_att"].abs().sum() == 0  # the scores only weigh the interest, which the MLP no longer reads
    coupled = din([], [pair("item", Full(dim=8), 30)], attention_mlp=(8,), mlp=(8,), activation="relu")
    with torch.no_grad():
        coupled.mlp.net[0].weight[:, 8:] = 0
    assert table_grads(coupled, kjt)["item"][hist].abs().sum() == 0  # the same check holds for the coupled model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_decoupled_twins_for_every_variant(variant):
    model = dare(item_pairs(VARIANTS[variant], CAT_VARIANTS[variant]), attention_mlp=(8,), mlp=(16,))
    twins = {f.name: f for f in model.attention.features}
    assert list(twins) == ["item_att", "hist_item_att", "cat_att", "hist_cat_att"]
    assert twins["hist_item_att"].shared_with == "item_att"
    assert type(twins["item_att"].embedding) is type(VARIANTS[variant])  # the same variant, narrower
    own = {t.name for t in model.sequences.table_defs}
    assert not own & {t.name for t in model.attention.table_defs}  # tables of their own
    assert model.attention_dim <= model.candidate_dim  # half, but unified keeps whole chunks (3 x 4 here)
    out = model(None, kjt_from_lists(bags(ITEMS, HISTORIES)))
    assert out.shape == (4,) and torch.isfinite(out).all()


def test_decoupled_config_errors():
    item, hist = pair("item", Full(dim=8), N_ITEMS)
    seq = SequenceEmbeddingLayer([item, hist])
    twins = SequenceEmbeddingLayer(attention_specs([item, hist]))
    with pytest.raises(ValueError, match=r"attention tables \(decoupled embeddings\) need use_attention=True"):
        DIN(seq, [("item", "hist_item")], attention=twins, use_attention=False)
    with pytest.raises(ValueError, match=r"must be the twins of the sequence features, in their order: "
                                         r"\['item_att', 'hist_item_att'\]"):
        DIN(seq, [("item", "hist_item")], attention=SequenceEmbeddingLayer(attention_specs([item, hist])[::-1]))
    assert [f.output_dim for f in attention_specs([item, hist], dim=4)] == [4, 4]
    with pytest.raises(SpecError, match=r"Full.dim=6 must be a multiple of 4"):
        attention_specs([item], dim=6)
