"""EmbeddingLayer.embed: the layer over plain tensors (ids and bag lengths per feature, the torch-only path
of the table-batched kernel) gives exactly what forward gives over a KeyedJaggedTensor, for every variant,
with either table backend, the L2 penalty included; bad input is refused naming the feature."""

import pytest
import torch

from recsys_emb.errors import InvalidInputError
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.specs import FeatureSpec, Full, LowRank, Robe, RobeArray, TensorTrain
from recsys_emb.tables import EmbeddingOptimizer, TableBatched
from variant_cases import small_variants


def _bags(names, seed):
    """Ids < 50 per feature: bags of 0 to 3 ids, 6 samples."""
    g = torch.Generator().manual_seed(seed)
    return {n: [torch.randint(0, 50, (int(k),), generator=g).tolist() for k in torch.randint(0, 4, (6,), generator=g)]
            for n in names}


def _plain(layer, bags):
    values = [torch.tensor([i for bag in bags[n] for i in bag], dtype=torch.int64) for n in layer.feature_names]
    lengths = [torch.tensor([len(bag) for bag in bags[n]]) for n in layer.feature_names]
    return values, lengths


CASES = {**small_variants(),
         "lowrank": [FeatureSpec("x", LowRank(dim=16, rank=4), cardinality=50)],
         "robe": [FeatureSpec("x", Robe(RobeArray("robe", size=96), dim=16, block=8))],
         "tt": [FeatureSpec("x", TensorTrain(dim=8, ranks=(3, 2)), cardinality=50),
                FeatureSpec("y", Full(dim=4), cardinality=50)]}


@pytest.mark.parametrize("variant", list(CASES))
@pytest.mark.parametrize("backend", ["torchrec", "table_batched"])
def test_embed_equals_forward_with_its_penalty(variant, backend):
    specs = CASES[variant]
    torch.manual_seed(0)
    layer = EmbeddingLayer(specs, l2=0.1, device=torch.device("meta") if backend == "table_batched" else None)
    if backend == "table_batched":
        TableBatched(layer, EmbeddingOptimizer("sgd", lr=0.1), init_seed=0)
    layer.train()
    bags = _bags(layer.feature_names, seed=1)
    expected = layer(kjt_from_lists(bags)).values()
    expected_penalty = layer.regularization()
    got = layer.embed(*_plain(layer, bags))
    assert torch.equal(got, expected)
    assert float(expected_penalty.detach()) > 0 and torch.equal(layer.regularization(), expected_penalty)


def test_an_empty_batch_gives_zero_rows_without_a_lookup():
    layer = EmbeddingLayer([FeatureSpec("a", Full(dim=4), cardinality=10)])
    out = layer.embed([torch.zeros(0, dtype=torch.int64)], [torch.zeros(0, dtype=torch.int64)])
    assert out.shape == (0, 4)


@pytest.mark.parametrize("values, lengths, message", [
    ([torch.tensor([1])], [torch.tensor([1])], "one values and one lengths tensor per feature (2: ['a', 'b']"),
    ([torch.tensor([1.0]), torch.tensor([2])], [torch.tensor([1]), torch.tensor([1])], "feature 'a': ids have dtype torch.float32"),
    ([torch.tensor([1]), torch.tensor([2])], [torch.tensor([1]), torch.tensor([1, 0])], "the same number of bags"),
    ([torch.tensor([1, 2]), torch.tensor([2])], [torch.tensor([1]), torch.tensor([1])],
     "feature 'a': its bag lengths add up to 1 ids but its values hold 2"),
    ([torch.tensor([1]), torch.tensor([2])], [torch.tensor([1]), torch.tensor([-1])], "feature 'b': negative bag lengths"),
    ([torch.tensor([10]), torch.tensor([2])], [torch.tensor([1]), torch.tensor([1])], "'a'"),
])
def test_bad_input_is_refused_naming_the_feature(values, lengths, message):
    layer = EmbeddingLayer([FeatureSpec("a", Full(dim=4), cardinality=10), FeatureSpec("b", Full(dim=4), cardinality=10)],
                           device=torch.device("meta"))
    TableBatched(layer, EmbeddingOptimizer("sgd"), init_seed=0)
    with pytest.raises(InvalidInputError) as e:
        layer.embed(values, lengths)
    assert message in str(e.value)
