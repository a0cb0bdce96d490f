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


def test_from_specs_counts_the_stored_bytes_of_each_table_dtype():
    # tables: a 1000x8, b 100x16, c@q 100x8, c@r 10x8 (1210 rows, 10480 elements); dense: b's 3 probe weights
    elements, rows, dense = 10480, 1210, 3
    got = {dtype: memory_from_specs(specs(), table_dtype=dtype) for dtype in ("fp32", "fp16", "int8")}
    assert got["fp32"].bytes == 4 * elements + 4 * dense == memory_from_specs(specs()).bytes
    assert got["fp16"].bytes == 2 * elements + 4 * dense
    assert got["int8"].bytes == elements + 8 * rows + 4 * dense  # a byte per element, a scale and a bias per row
    assert [t.bytes for t in got["int8"].tables] == [8000 + 8000, 1600 + 800, 800 + 800, 80 + 80]
    assert got["int8"].per_feature_bytes == {"a": 16000, "b": 2400 + 12, "c": 1600 + 160, "d": 0}
    assert got["int8"].params == got["fp32"].params  # the parameters stay; only their storage shrinks
    with pytest.raises(ValueError, match=r"table_dtype='bf16' is not one of \['fp16', 'fp32', 'int8'\]"):
        memory_from_specs(specs(), table_dtype="bf16")


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
