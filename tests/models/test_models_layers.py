"""Dense model layers: MLP, Dice, dot / cat / DCN-v2 cross interaction, DIN's attention pooling."""

import pytest
import torch

from recsys_emb.models.layers import (MLP, AttentionPooling, CatInteraction, CrossInteraction, Dice, DotInteraction,
                                      LinearTerm, SumPooling)


def test_mlp_shapes_activations_and_errors():
    assert MLP(8, (16, 4))(torch.randn(5, 8)).shape == (5, 4)
    m = MLP(8, (16,), activation="prelu", out_dim=1, dropout=0.1)
    assert m.out_dim == 1 and m(torch.randn(5, 8)).shape == (5, 1)
    assert MLP(8, (), out_dim=2)(torch.randn(3, 8)).shape == (3, 2)  # a linear model
    assert isinstance(MLP(8, (4,), activation="dice").net[1], Dice)
    assert (MLP(8, (4,))(torch.randn(10, 8)) >= 0).all()  # ReLU after the last hidden layer too
    with pytest.raises(ValueError, match=r"activation='tanh' must be one of \('relu', 'prelu', 'dice'\)"):
        MLP(8, (4,), activation="tanh")
    with pytest.raises(ValueError, match=r"hidden=\(4, 0\) must hold ints >= 1"):
        MLP(8, (4, 0))
    with pytest.raises(ValueError, match=r"hidden=\(\) must hold at least one"):
        MLP(8, ())
    with pytest.raises(ValueError, match=r"dropout=1.5"):
        MLP(8, (4,), dropout=1.5)


def test_dice_formula_train_and_eval():
    torch.manual_seed(0)
    dice = Dice(3)
    assert dice.alpha.tolist() == [0.0, 0.0, 0.0]
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(6, 3) * 2 + 1
    out = dice(x)
    bn = torch.nn.BatchNorm1d(3, affine=False, eps=1e-8)
    p = torch.sigmoid(bn(x))
    torch.testing.assert_close(out, p * x + (1 - p) * dice.alpha * x)
    torch.testing.assert_close(dice.running_mean, bn.running_mean)
    torch.testing.assert_close(dice.running_var, bn.running_var)
    dice.eval()
    bn.eval()
    y = torch.randn(4, 3)
    p = torch.sigmoid(bn(y))
    torch.testing.assert_close(dice(y), p * y + (1 - p) * dice.alpha * y)


def test_dice_on_sequences_normalises_over_all_but_last_dim():
    torch.manual_seed(0)
    dice = Dice(4)
    with torch.no_grad():
        dice.alpha.fill_(0.3)
    flat = Dice(4)
    flat.load_state_dict(dice.state_dict())
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(dice(x), flat(x.reshape(10, 4)).reshape(2, 5, 4))
    torch.testing.assert_close(dice.running_var, flat.running_var)
    dice(torch.randn(1, 4))  # one row in training mode is allowed (BatchNorm1d would refuse)
    assert dice(torch.randn(0, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"last dim must be 4"):
        dice(torch.randn(2, 3))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_dot_interaction_is_the_upper_triangle_of_the_gram_matrix(n):
    x = torch.randn(3, n, 4)
    out = DotInteraction(n)(x)
    assert out.shape == (3, n * (n - 1) // 2) and DotInteraction.output_dim_for(n) == n * (n - 1) // 2
    expected = torch.stack([(x[:, i] * x[:, j]).sum(1) for i in range(n) for j in range(i + 1, n)], dim=1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="needs >= 2 vectors"):
        DotInteraction(1)


def test_cat_interaction():
    a, b = torch.randn(2, 3), torch.randn(2, 5)
    torch.testing.assert_close(CatInteraction()([a, b]), torch.cat([a, b], 1))


def test_cross_layer_full_rank_by_hand():
    # D = 2, one layer, W = diag(1, 2), b = (0, 1), x_0 = (1, 2):
    # W x_0 + b = (1, 5); x_0 * that = (1, 10); + x_0 = (2, 12)
    cross = CrossInteraction(2, num_layers=1, rank=None)
    assert not cross.low_rank and isinstance(cross.layers[0], torch.nn.Linear)
    with torch.no_grad():
        cross.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        cross.layers[0].bias.copy_(torch.tensor([0.0, 1.0]))
    assert cross([torch.tensor([[1.0]]), torch.tensor([[2.0]])]).tolist() == [[2.0, 12.0]]


def test_cross_layer_low_rank_by_hand():
    # D = 3, rank 1, two layers sharing U = (1, 0, 2)^T, V = (1, 1, 0), b = (0, 1, 0); x_0 = (1, 2, 3):
    # layer 1: V x_0 = 3, U V x_0 + b = (3, 1, 6), x_0 * that = (3, 2, 18), + x_0 = x_1 = (4, 4, 21)
    # layer 2: V x_1 = 8, U V x_1 + b = (8, 1, 16), x_0 * that = (8, 2, 48), + x_1 = (12, 6, 69)
    cross = CrossInteraction(3, num_layers=2, rank=1)
    assert cross.low_rank and cross.output_dim == 3
    with torch.no_grad():
        for v, u in cross.layers:
            v.weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
            u.weight.copy_(torch.tensor([[1.0], [0.0], [2.0]]))
            u.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    assert cross([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]])]).tolist() == [[12.0, 6.0, 69.0]]


@pytest.mark.parametrize("rank", [0, None, 2, 6, 9])
def test_cross_network_is_the_written_out_formula_with_explicit_matrices(rank):
    torch.manual_seed(0)
    cross = CrossInteraction(6, num_layers=3, rank=rank)
    low = rank is not None and 0 < rank < 6  # rank >= D restricts nothing: full-rank W
    assert cross.low_rank == low
    n_weights = sum(p.numel() for n, p in cross.named_parameters() if n.endswith("weight"))
    assert n_weights == 3 * (2 * 6 * rank if low else 36)
    x0 = torch.randn(4, 6)
    x = x0
    for layer in cross.layers:
        if low:
            v, u = layer[0].weight, layer[1].weight  # V (r, D), U (D, r)
            assert v.shape == (rank, 6) and u.shape == (6, rank) and layer[0].bias is None
            w, b = u @ v, layer[1].bias
        else:
            w, b = layer.weight, layer.bias
        assert torch.equal(b, torch.zeros(6))  # biases start at zero, as TorchRec's cross nets
        x = x0 * (x @ w.T + b) + x
    torch.testing.assert_close(cross([x0[:, :2], x0[:, 2:]]), x)


def test_cross_network_errors():
    for kwargs, match in (({"num_layers": 0}, r"^num_layers=0 must be an int >= 1$"),
                          ({"rank": -1}, r"^rank=-1 must be an int >= 0 \(0 or None = full rank\)$"),
                          ({"rank": 2.5}, r"^rank=2.5 must be an int >= 0")):
        with pytest.raises(ValueError, match=match):
            CrossInteraction(4, **kwargs)


def test_attention_weights_are_unnormalised_and_padding_is_ignored():
    torch.manual_seed(0)
    att = AttentionPooling(4, hidden=(8,), activation="dice")  # training mode: Dice uses batch statistics
    hist = torch.randn(3, 4, 4)
    cand = torch.randn(3, 4)
    lengths = torch.tensor([2, 4, 0])
    mask = torch.arange(4) < lengths.unsqueeze(1)
    out = att(hist, cand, mask)
    # Same result with other values in the padding and with extra padding columns.
    noisy = torch.where(mask.unsqueeze(2), hist, torch.randn_like(hist) * 100)
    torch.testing.assert_close(att(noisy, cand, mask), out)
    wider = torch.cat([hist, torch.randn(3, 3, 4)], dim=1)
    torch.testing.assert_close(att(wider, cand, torch.cat([mask, torch.zeros(3, 3, dtype=torch.bool)], 1)), out)
    # Jagged entry point = padded one; the weights are the unit's raw outputs (no softmax).
    values = hist[mask]
    torch.testing.assert_close(att.forward_jagged(values, lengths, cand), out)
    c = cand.repeat_interleave(lengths, dim=0)
    w = att.unit(torch.cat([values, c, values - c, values * c], 1)).squeeze(1)
    torch.testing.assert_close(att.weights_jagged(values, lengths, cand), w)
    expected = torch.zeros(3, 4).index_add(0, torch.tensor([0, 0, 1, 1, 1, 1]), values * w.unsqueeze(1))
    torch.testing.assert_close(out, expected)
    assert out[2].abs().sum() == 0  # empty history -> zero interest


def test_sum_pooling_masks_padding():
    hist = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = SumPooling()(hist, torch.zeros(2, 4), mask)
    torch.testing.assert_close(out, torch.stack([hist[0, :2].sum(0), hist[1, 0]]))


def test_linear_term_is_one_weight_per_id_pooled_plus_a_linear_map_of_dense():
    """``sum_f pool_f(w_f[ids]) + dense . v`` (sum / mean pooling, an empty bag reads nothing), weights stored
    divided by the scale; the penalty is ``l2 * ||weights as they act||^2``."""
    term = LinearTerm([4, 3], ["sum", "mean"], dense_in=2, l2=0.5, scale=10.0)
    assert all(float(p.detach().abs().sum()) == 0.0 for p in term.parameters())  # starts at 0: the deep model alone
    w0, w1, v = torch.tensor([0.1, -0.2, 0.3, 0.4]), torch.tensor([1.0, 2.0, -4.0]), torch.tensor([0.5, -1.5])
    term.weights[0].data, term.weights[1].data, term.dense.data = w0 / 10, w1 / 10, v / 10
    dense = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0]])
    ids0, lens0 = torch.tensor([0, 3, 3, 2]), torch.tensor([3, 0, 1])  # bags [0, 3, 3], [], [2]
    ids1, lens1 = torch.tensor([0, 2, 1]), torch.tensor([1, 2, 0])  # bags [0], [2, 1], []
    want = torch.tensor([(0.1 + 0.4 + 0.4) + 1.0 + (0.5 * 1 - 1.5 * 2),
                         0.0 + (-4.0 + 2.0) / 2 + (0.5 * 0 - 1.5 * 1),
                         0.3 + 0.0 + (0.5 * 3 - 1.5 * 0)])
    torch.testing.assert_close(term(dense, [ids0, ids1], [lens0, lens1]), want)
    want_penalty = 0.5 * ((w0 ** 2).sum() + (w1 ** 2).sum() + (v ** 2).sum())
    torch.testing.assert_close(term.penalty(), want_penalty)
    no_dense = LinearTerm([4], ["sum"])
    no_dense.weights[0].data = w0
    torch.testing.assert_close(no_dense(None, [ids0], [lens0]), no_dense.scale * torch.tensor([0.9, 0.0, 0.3]))
    with pytest.raises(ValueError, match="pooling 'none'"):
        LinearTerm([4], ["none"])
    with pytest.raises(ValueError, match="rows 0 must be an int >= 1"):
        LinearTerm([0], ["sum"])
