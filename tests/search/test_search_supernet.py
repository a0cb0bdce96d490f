"""The one-shot (supernet) search: sliced lookups, what one sampled step updates, the budget of the search."""

import pytest
import torch

from recsys_emb.config import config_from_dict
from recsys_emb.errors import ConfigError
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.search import load_search_config
from recsys_emb.search.objective import _load_schema, trial_run_config
from recsys_emb.search.supernet import DimMask, evolve, supernet_plan
from recsys_emb.specs import FeatureSpec, Full

from search_helpers import write_configs


def _weight(layer, table):
    return layer.ebc.embedding_bags[table].weight


def test_sliced_lookup_equals_a_table_of_the_smaller_dim_forward_and_gradient():
    torch.manual_seed(0)
    big = EmbeddingLayer([FeatureSpec("a", Full(dim=8), cardinality=10), FeatureSpec("b", Full(dim=8), cardinality=6)])
    small = EmbeddingLayer([FeatureSpec("a", Full(dim=4), cardinality=10),
                            FeatureSpec("b", Full(dim=8), cardinality=6)])
    with torch.no_grad():
        _weight(small, "a").copy_(_weight(big, "a")[:, :4])
        _weight(small, "b").copy_(_weight(big, "b"))
    mask = DimMask.install(big, {"ga": ["a"], "gb": ["b"]}, [4, 8])
    mask.sampling = False  # training mode (the L2 path), the dims set by hand
    mask.dims = {"ga": 4, "gb": 8}
    kjt = kjt_from_lists({"a": [[1, 2], [3], []], "b": [[0], [5, 5], [1]]})
    out_big, out_small = big(kjt).values(), small(kjt).values()
    assert out_big.shape == (3, 16) and out_small.shape == (3, 12)
    assert torch.equal(out_big[:, :4], out_small[:, :4])
    assert torch.equal(out_big[:, 4:8], torch.zeros(3, 4))
    assert torch.equal(out_big[:, 8:], out_small[:, 4:])
    g = torch.randn(3, 16)  # an upstream gradient on every column, the masked tail's included
    (out_big * g).sum().backward()
    (out_small * torch.cat([g[:, :4], g[:, 8:]], dim=1)).sum().backward()
    ga_big, ga_small = _weight(big, "a").grad, _weight(small, "a").grad
    assert torch.equal(ga_big[:, :4], ga_small)
    assert torch.equal(ga_big[:, 4:], torch.zeros(10, 4))
    assert ga_small[[1, 2, 3]].abs().sum() > 0
    assert torch.equal(_weight(big, "b").grad, _weight(small, "b").grad)


def _tables(model):
    """``{table: weight}`` of a (DistributedModelParallel) model's tables on one rank, copied."""
    out = {}
    for key, value in model.module.embeddings.ebc.state_dict().items():
        if hasattr(value, "local_shards"):
            (shard,) = value.local_shards()
            value = shard.tensor
        out[key.split(".")[1]] = value.detach().clone()
    return out


def test_a_sampled_step_updates_only_the_first_d_columns_of_each_field(tiny_data, tmp_path):
    from recsys_emb.training.trainer import Trainer

    cfg = load_search_config(write_configs(tmp_path, tiny_data, space={"dims": [4, 8, 16], "ungrouped": "each"}))
    base = cfg.base_run_dict()
    base["optim"]["embedding_l2"] = 1e-2  # the penalty's gradient would reach every column of a read row
    base["train"].update(max_steps=1, eval_every=0, out_dir=str(tmp_path / "supernet"))
    plan = supernet_plan(cfg, _load_schema(config_from_dict(base)), base)
    run = trial_run_config(cfg, {"dims": {f: 16 for f in plan.field_bytes}}, base)
    trainer = Trainer(run, write_model=False)
    try:
        (layer,) = [m for m in trainer.model.module.modules() if isinstance(m, EmbeddingLayer)]
        mask = DimMask.install(layer, plan.groups, plan.choices, seed=3)
        before = _tables(trainer.model)
        trainer.fit()
        after = _tables(trainer.model)
    finally:
        trainer.close()
    drawn = mask.last_drawn
    assert set(drawn.values()) == {4, 8, 16}  # the step drew every dim somewhere
    for group, (field,) in plan.groups.items():
        d = drawn[group]
        assert torch.equal(after[field][:, d:], before[field][:, d:]), (field, d)
        assert not torch.equal(after[field][:, :d], before[field][:, :d]), (field, d)


def test_the_search_scores_only_candidates_within_the_budget_and_fills_it(tiny_data, tmp_path):
    cfg = load_search_config(write_configs(tmp_path, tiny_data, space={"dims": [4, 8, 16, 32], "ungrouped": "each"}))
    base = cfg.base_run_dict()
    plan = supernet_plan(cfg, _load_schema(config_from_dict(base)), base)
    # the plan's sum of per-field bytes is what the whole model's specs count
    from search_helpers import build_features, memory_from_specs

    cand = tuple((4, 8, 16, 32)[i % 4] for i in range(len(plan.names)))
    specs, _ = build_features(trial_run_config(cfg, {"dims": plan.dims_of(cand)}, base), _load_schema(config_from_dict(base)))
    assert plan.bytes_of(cand) == memory_from_specs(specs).bytes
    budget = plan.bytes_of(cand)
    calls = []

    def score(c):  # more dims score higher: the search is pushed against the budget
        calls.append(c)
        return float(sum(c))

    scored = evolve(score, plan, budget, population=6, generations=3, parents=3, seed=0)
    assert len(calls) == len(set(calls)) == len(scored) > 6
    def filled(c):  # no group can be raised within the budget
        return all(plan.bytes_of(c[:i] + (up,) + c[i + 1:]) > budget
                   for i, d in enumerate(c) for up in plan.choices if up > d)

    for r in scored:
        assert r["bytes"] == plan.bytes_of(r["candidate"]) <= budget
    assert sum(filled(r["candidate"]) for r in scored) >= 5
    best = max(scored, key=lambda r: (r["score"], r["bytes"]))
    assert filled(best["candidate"])
    with pytest.raises(ConfigError, match="below the smallest candidate"):
        evolve(score, plan, plan.bytes_of(tuple(4 for _ in plan.names)) - 1)


def test_the_plan_leaves_the_default_variants_unsearched_and_refuses_others(tiny_data, tmp_path):
    space = {"dims": [4, 8], "ungrouped": "each"}
    default = load_search_config(write_configs(tmp_path / "d", tiny_data, space=space))
    assert tuple(default.space.variants) == ("full", "hashed", "unified")  # a config that does not set them
    base = default.base_run_dict()
    assert supernet_plan(default, _load_schema(config_from_dict(base)), base).choices == [4, 8]
    chosen = load_search_config(write_configs(tmp_path / "c", tiny_data, space={**space, "variants": ["hashed"]}))
    with pytest.raises(ConfigError, match=r"space.variants=\['hashed'\]: --method supernet"):
        supernet_plan(chosen, _load_schema(config_from_dict(base)), base)
