"""TorchRec's managed-collision remap (MCHManagedCollisionModule) as the ``managed_collision`` family."""

import copy
import logging

import pytest
import torch

from family_helpers import BAGS, check_bytes, layer_for
from recsys_emb.embeddings import ManagedCollisionEmbedding
from recsys_emb.errors import ConfigError, SpecError
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.presets import group_specs
from recsys_emb.spec_io import feature_from_dict
from recsys_emb.specs import FeatureSpec, Full, ManagedCollision

SPEC = ManagedCollision(dim=8, zch_size=12)


def mc_state(layer):
    return {k: v.clone() for k, v in layer.state_dict().items() if ".mc." in k}


def test_admitted_ids_read_their_rows_and_the_others_the_last_row():
    layer = layer_for(SPEC)
    layer(kjt_from_lists(BAGS))  # train mode: ids 0 1 2 3 7 30 49 are admitted (12 slots, one for misses)
    layer.eval()
    table = layer.ebc.embedding_bags["x"].weight
    rows = layer.variant("x").remap(torch.tensor([1, 2, 49, 30, 5, 6]), torch.tensor([6]))[0][0]
    assert len(set(rows[:4].tolist())) == 4 and max(rows[:4].tolist()) < 11 and rows[4:].tolist() == [11, 11]
    out = layer(kjt_from_lists({"x": [[1, 2], [5]], "y": [[0], []], "z": [[49], [6, 30]]})).values()
    r = dict(zip([1, 2, 49, 30, 5, 6], rows.tolist()))
    want_x = torch.stack([table[r[1]] + table[r[2]], table[r[5]]])
    want_z = torch.stack([table[r[49]], table[r[6]] + table[r[30]]])
    torch.testing.assert_close(out[:, :8], want_x)
    torch.testing.assert_close(out[:, 12:], want_z)
    out.sum().backward()  # the gradient reaches exactly the rows read
    touched = (table.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert touched == sorted({r[i] for i in (1, 2, 5, 49, 6, 30)})


def test_the_remap_learns_in_train_mode_and_is_frozen_in_eval_mode():
    layer = layer_for(ManagedCollision(dim=8, zch_size=4, eviction="lru"))
    kjt = kjt_from_lists(BAGS)
    before = mc_state(layer)
    layer.eval()
    layer(kjt)
    assert all(torch.equal(before[k], v) for k, v in mc_state(layer).items())
    layer.train()
    layer(kjt)
    after = mc_state(layer)
    assert not torch.equal(before["variants.x.mc._mch_sorted_raw_ids"], after["variants.x.mc._mch_sorted_raw_ids"])


def test_a_batch_larger_than_the_first_has_all_its_ids_admitted():
    """TorchRec sizes the history from the first batch (1.25 x its ids) and drops the excess of a larger one."""
    v = ManagedCollisionEmbedding(FeatureSpec("x", ManagedCollision(dim=8, zch_size=64)))
    v.remap(torch.tensor([1, 2]), torch.tensor([2]))
    v.remap(torch.arange(100, 120), torch.tensor([20]))
    v.eval()
    rows = v.remap(torch.arange(100, 120), torch.tensor([20]))[0][0]
    assert len(set(rows.tolist())) == 20 and 63 not in rows.tolist()


def _train(layer, batches):
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for kjt in batches:
        opt.zero_grad()
        layer(kjt).values().pow(2).sum().backward()
        opt.step()


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        bags = {f: [torch.randint(0, 40, (int(k),), generator=g).tolist() for k in torch.randint(0, 4, (4,), generator=g)]
                for f in ("x", "y", "z")}
        bags["y"] = [[i % 9 for i in b] for b in bags["y"]]
        out.append(kjt_from_lists(bags))
    return out


@pytest.mark.parametrize("eviction", ["lfu", "lru", "distance_lfu"])
def test_training_resumed_from_a_saved_state_equals_the_uninterrupted_run(eviction, tmp_path):
    spec = ManagedCollision(dim=8, zch_size=10, eviction=eviction, eviction_interval=2)
    batches = _batches(8)
    whole = layer_for(spec)
    _train(whole, batches)
    first = layer_for(spec)
    _train(first, batches[:4])  # 4 steps, 8 remap calls (x and z share the remap): at an eviction
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = layer_for(spec, seed=1)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    _train(resumed, batches[4:])
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    whole.eval(), resumed.eval()
    torch.testing.assert_close(whole(batches[0]).values(), resumed(batches[0]).values(), rtol=0, atol=0)


def test_a_state_saved_between_evictions_keeps_the_schedule_and_says_what_it_lost(caplog):
    spec = ManagedCollision(dim=8, zch_size=10, eviction_interval=4)
    layer = layer_for(spec)
    _train(layer, _batches(1))  # 2 remap calls of 4
    fresh = layer_for(spec, seed=1)
    with caplog.at_level(logging.WARNING, logger="recsys_emb.embeddings.managed_collision"):
        fresh.load_state_dict(layer.state_dict())
    assert "saved 2 iteration(s) after an eviction (eviction_interval=4)" in caplog.text
    mc = fresh.variant("x").mc
    assert (mc._current_iter, mc._last_eviction_iter) == (2, 0)


def test_bytes_from_specs_equal_the_built_layer_and_the_remap_state_is_reported():
    check_bytes(SPEC)
    for eviction in ("lfu", "lru", "distance_lfu"):
        spec = ManagedCollision(dim=8, zch_size=12, eviction=eviction)
        v = ManagedCollisionEmbedding(FeatureSpec("x", spec))
        saved = sum(b.numel() * b.element_size() for b in v.mc.state_dict().values())
        assert spec.remap_state_bytes() == saved, eviction


def test_group_sizing_follows_compression_and_the_options():
    specs = group_specs("mch", 16, {"small": 10, "big": 1000}, compression=8, min_rows=100,
                        options={"mch_eviction": "lru", "mch_eviction_interval": 3})
    assert specs == {"small": Full(16), "big": ManagedCollision(16, zch_size=125, eviction="lru", eviction_interval=3)}


@pytest.mark.parametrize("fields, message", [
    ({"dim": 8, "zch_size": 1}, r"ManagedCollision.zch_size=1 must be >= 2 \(the table's rows; the last one"),
    ({"dim": 6, "zch_size": 10}, r"ManagedCollision.dim=6 must be a multiple of 4"),
    ({"dim": 8, "zch_size": 10, "eviction": "fifo"}, r"ManagedCollision.eviction='fifo' must be one of \('lfu', "),
    ({"dim": 8, "zch_size": 10, "eviction_interval": 0}, r"ManagedCollision.eviction_interval=0 must be >= 1"),
    ({"dim": 8}, r"feature 'C1': embedding type 'managed_collision'"),
])
def test_invalid_specs_are_refused_in_one_line(fields, message):
    with pytest.raises(SpecError, match=message) as e:
        feature_from_dict({"name": "C1", "embedding": {"type": "managed_collision", **fields}})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("options, message", [
    ({"mch_eviction": "fifo"}, r"embeddings.options.mch_eviction='fifo' is not one of \['lfu', 'lru', 'distance_lfu'\]"),
    ({"mch_eviction_interval": 0}, r"embeddings.options.mch_eviction_interval=0 must be >= 1"),
])
def test_invalid_options_are_refused(options, message):
    from recsys_emb.families import check_options

    with pytest.raises(ConfigError, match=message):
        check_options(options, "mch", 16)


def test_sharding_over_several_processes_is_refused_with_the_reason():
    from recsys_emb.sharding import _refuse_managed_collisions

    layer = EmbeddingLayer([FeatureSpec("x", SPEC), FeatureSpec("y", Full(4), cardinality=9)])
    with pytest.raises(ConfigError, match=r"feature\(s\) \['x'\]: managed-collision tables are not sharded over 2 "
                                          r"processes: each process would update its own copy of the remap"):
        _refuse_managed_collisions(layer, 2)
    _refuse_managed_collisions(EmbeddingLayer([FeatureSpec("y", Full(4), cardinality=9)]), 2)


def test_the_exported_program_reads_the_trained_remap(tmp_path):
    from recsys_emb.inference import load_program, write_exported
    from recsys_emb.models import DLRM

    specs = [FeatureSpec("m", ManagedCollision(dim=8, zch_size=6)), FeatureSpec("f", Full(8), cardinality=30)]
    torch.manual_seed(0)
    model = DLRM(EmbeddingLayer(specs), dense_in=3, bottom_mlp=(8,), top_mlp=(8,))
    dense = torch.randn(3, 3)
    model(dense, kjt_from_lists({"m": [[1, 2], [3], [4, 1]], "f": [[1], [2], []]}))  # train mode: admits 1..4
    model.eval()
    program = load_program(write_exported(model, specs, tmp_path))
    kjt = kjt_from_lists({"m": [[1, 2], [3], [9, 4], [7]], "f": [[1], [2], [], [3]]})  # 7, 9: not admitted
    dense = torch.randn(4, 3)
    with torch.no_grad():
        want = model(dense, kjt)
    torch.testing.assert_close(program(dense, kjt.values(), kjt.lengths().long()), want, rtol=0, atol=1e-6)
    assert copy.deepcopy(model.embeddings.variant("m").mc._mch_sorted_raw_ids)[:4].tolist() == [1, 2, 3, 4]
