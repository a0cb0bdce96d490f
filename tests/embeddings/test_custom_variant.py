"""The variant example of docs/architecture.md, run as written: registered, it loads from a spec dict,
embeds in a layer (checked row by row), shards under DistributedModelParallel, is counted by memory and
sizes fields as a preset variant."""

import re
from pathlib import Path

import pytest
import torch

from recsys_emb.embeddings import unregister_variant
from recsys_emb.hashing import bucket_reference, seed_from_name
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.memory import memory_from_specs
from recsys_emb.sharding import shard_model
from recsys_emb.spec_io import specs_from_dicts
from recsys_emb.tables import EmbeddingOptimizer

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture()
def example():
    text = DOC.read_text()
    code = re.search(r"<!-- example:begin -->\n```python\n(.*?)```\n<!-- example:end -->", text, re.S).group(1)
    assert len(code.splitlines()) < 80
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    yield namespace
    unregister_variant(namespace["HeadTail"])


def test_the_documented_variant_works_everywhere(example, single_process_group):
    specs = specs_from_dicts([{"name": "c", "embedding": {"type": "head_tail", "dim": 8, "head": 5, "tail": 7}},
                              {"name": "f", "cardinality": 4, "embedding": {"type": "full", "dim": 4}}])
    assert isinstance(specs[0].embedding, example["HeadTail"])
    assert memory_from_specs(specs).params == 12 * 8 + 4 * 4
    layer = EmbeddingLayer(specs)
    bags = {"c": [[0, 4], [5, -9, 10**12], []], "f": [[1], [2], [3]]}
    out = layer(kjt_from_lists(bags)).values()
    table = layer.ebc.embedding_bags["c"].weight.detach()
    seed = seed_from_name("c", "head_tail")

    def row(i):
        return i if 0 <= i < 5 else 5 + bucket_reference(i, seed, 7)

    for b, bag in enumerate(bags["c"]):
        expected = sum((table[row(i)] for i in bag), torch.zeros(8))
        torch.testing.assert_close(out[b, :8], expected)
    dmp = shard_model(EmbeddingLayer(specs), EmbeddingOptimizer("sgd", lr=0.1))
    assert dmp(kjt_from_lists(bags)).values().shape == (3, 12)
    # one registration also makes it a preset variant: it sizes the large fields at 1/8 of their rows
    from recsys_emb.presets import VariantPreset, feature_specs

    sized = {s.name: s.embedding for s in feature_specs({"a": 10, "b": 80_000},
                                                       VariantPreset("head_tail", dim=8, compression=8, min_rows=100))}
    assert sized["b"] == example["HeadTail"](8, head=5000, tail=5000) and sized["a"].kind == "full"
