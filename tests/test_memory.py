import pytest
import torch

from recsys_emb.layer import EmbeddingLayer
from recsys_emb.memory import format_bytes, memory_from_module, memory_from_specs
from recsys_emb.specs import FeatureSpec, Full, Hashed, QuotientRemainder


def specs():
    return [
        FeatureSpec("a", Full(dim=8), cardinality=1000),
        FeatureSpec("b", Hashed(dim=16, buckets=100, num_hashes=3, combiner="weighted")),
        FeatureSpec("c", QuotientRemainder(dim=16, collisions=10, op="concat"), cardinality=1000),
        FeatureSpec("d", Full(dim=8), cardinality=1000, shared_with="a"),
    ]


def test_from_specs_known_numbers():
    m = memory_from_specs(specs())
    assert [(t.name, t.rows, t.dim, t.features) for t in m.tables] == [
        ("a", 1000, 8, ("a", "d")), ("b", 100, 16, ("b",)), ("c@q", 100, 8, ("c",)), ("c@r", 10, 8, ("c",))]
    assert m.per_feature_params == {"a": 8000, "b": 1603, "c": 880, "d": 0}
    assert m.params == 8000 + 1600 + 3 + 880
    assert m.bytes == 4 * m.params
    assert memory_from_specs(specs(), bytes_per_param=2).bytes == 2 * m.params
    assert memory_from_specs(specs(), optimizer="rowwise_adagrad").optimizer_bytes == 4 * (1000 + 100 + 100 + 10)
    assert memory_from_specs(specs(), optimizer="adam").optimizer_bytes == 8 * m.table_params
    with pytest.raises(ValueError, match="optimizer='lamb'"):
        memory_from_specs(specs(), optimizer="lamb")


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_specs_and_module_agree(device):
    a = memory_from_specs(specs())
    b = memory_from_module(EmbeddingLayer(specs(), device=torch.device(device)))
    assert a.tables == b.tables
    assert a.per_feature_params == b.per_feature_params
    assert a.params == b.params == sum(p.numel() for p in EmbeddingLayer(specs()).parameters())


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**20) == "3.0 MiB"
