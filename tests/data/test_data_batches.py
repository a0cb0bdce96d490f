"""Batches from Parquet equal a slow row-by-row reference; shuffling, ranks, resume, loader workers."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recsys_emb.data.batches import ParquetBatches, make_dataloader
from recsys_emb.data.criteo import CAT_COLUMNS, INT_COLUMNS
from recsys_emb.data.sequences import SequenceConfig, generate_sequences


def _rows(directory, split):
    """The split's rows as Python dicts, shard by shard (the slow reference's input)."""
    files = sorted((directory / split).glob("part-*.parquet"))
    return [pq.read_table(f).to_pylist() for f in files]


def _reference(rows, dense, keys, label="label"):
    """A batch built row by row in Python: dense lists, per-key bags, labels."""
    d = [[r[c] for c in dense] for r in rows]
    bags = {k: [r[k] if isinstance(r[k], list) else [r[k]] for r in rows] for k in keys}
    return d, bags, [float(r[label]) for r in rows]


def _assert_equal(batch, ref, keys):
    d, bags, labels = ref
    assert batch.dense.dtype == torch.float32 and batch.labels.dtype == torch.float32
    assert batch.dense.shape == (len(labels), len(d[0]) if d and d[0] else 0)
    if d and d[0]:
        assert np.allclose(batch.dense.numpy(), np.array(d, dtype=np.float32))
    assert batch.labels.tolist() == labels
    kjt = batch.sparse
    assert kjt.keys() == list(keys) and kjt.stride() == len(labels)
    assert kjt.values().dtype == torch.int64 and kjt.lengths().dtype == torch.int32
    for k in keys:
        jt = kjt[k]
        assert jt.lengths().tolist() == [len(b) for b in bags[k]]
        assert jt.values().tolist() == [v for b in bags[k] for v in b]


def test_batches_equal_row_by_row_reference(small_processed):
    ds = ParquetBatches(small_processed, "train", batch_size=1000)
    assert ds.drop_last is False and len(ds) == 16  # 5 shards of 3,000 rows + 1 of 1,000
    shards = _rows(small_processed, "train")
    plan = ds.rank_batches()
    for (s, a, b), batch in zip(plan, ds):
        _assert_equal(batch, _reference(shards[s][a:b], INT_COLUMNS, CAT_COLUMNS), CAT_COLUMNS)
        assert batch.true_prob is None  # ground truth only on request
    vals = batch.sparse.values()
    assert vals.shape == (26 * batch.batch_size,)
    assert torch.equal(vals[:batch.batch_size], batch.sparse["C1"].values())  # feature-major layout


def test_shuffled_batches_equal_reference_and_cover_every_row(small_processed):
    shards = _rows(small_processed, "train")
    ds = ParquetBatches(small_processed, "train", batch_size=700, shuffle=True, seed=3, drop_last=False,
                        with_true_prob=True)
    seen = []
    for (s, a, b), batch in zip(ds.rank_batches(), ds):
        rows = [shards[s][i] for i in np.asarray(ds.batch_rows(s, a, b))]
        _assert_equal(batch, _reference(rows, INT_COLUMNS, CAT_COLUMNS), CAT_COLUMNS)
        seen.append(batch.true_prob.numpy())
    everything = np.sort(np.array([r["true_prob"] for sh in shards for r in sh], dtype=np.float32))
    assert np.array_equal(np.sort(np.concatenate(seen)), everything)
    first = [b.labels for b in ds]
    again = [b.labels for b in ParquetBatches(small_processed, "train", batch_size=700, shuffle=True, seed=3,
                                              drop_last=False)]
    assert len(first) == len(again) and all(torch.equal(x, y) for x, y in zip(first, again))  # same order
    ds.set_epoch(1)
    other = [b.labels for b in ds]
    assert not all(torch.equal(x, y) for x, y in zip(first, other))  # a new epoch reshuffles


def test_ranks_get_equal_disjoint_shares_and_resume(small_processed):
    full = ParquetBatches(small_processed, "train", batch_size=512, shuffle=True, seed=1)
    plan = full.rank_batches()
    assert all(b - a == 512 for _, a, b in plan)  # drop_last follows shuffle
    shares = [ParquetBatches(small_processed, "train", batch_size=512, shuffle=True, seed=1, rank=r,
                             world_size=3).rank_batches() for r in range(3)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(plan) // 3
    flat = [x for s in shares for x in s]
    assert len(set(flat)) == len(flat) and set(flat) <= set(plan)
    resumed = ParquetBatches(small_processed, "train", batch_size=512, shuffle=True, seed=1, start_batch=5)
    tail = list(full)[5:]
    got = list(resumed)
    assert len(got) == len(tail) and all(torch.equal(x.labels, y.labels) and
                                         torch.equal(x.sparse.values(), y.sparse.values()) for x, y in zip(got, tail))


def test_dataloader_with_workers_keeps_the_order(small_processed):
    ds = ParquetBatches(small_processed, "valid", batch_size=300, shuffle=True, seed=2, drop_last=False)
    direct = list(ds)
    loaded = list(make_dataloader(ds, num_workers=2))
    assert len(loaded) == len(direct)
    for x, y in zip(direct, loaded):
        assert torch.equal(x.dense, y.dense) and torch.equal(x.labels, y.labels)
        assert torch.equal(x.sparse.values(), y.sparse.values()) and torch.equal(x.sparse.lengths(), y.sparse.lengths())


def test_jagged_columns_equal_reference(tmp_path):
    cfg = SequenceConfig(users=200, items=1000, categories=30, max_len=12, seed=4)
    generate_sequences(tmp_path, 3000, config=cfg, rows_per_shard=1000)
    ds = ParquetBatches(tmp_path, "train", batch_size=256, shuffle=True, seed=0, drop_last=False)
    keys = ds.schema.keys
    assert keys == ("user_id", "user_segment", "cand_item", "cand_cat", "hist_item", "hist_cat")
    shards = _rows(tmp_path, "train")
    n = 0
    for (s, a, b), batch in zip(ds.rank_batches(), ds):
        rows = [shards[s][i] for i in np.asarray(ds.batch_rows(s, a, b))]
        _assert_equal(batch, _reference(rows, (), keys), keys)
        assert batch.dense.shape == (len(rows), 0)
        n += len(rows)
    assert n == 2400
    with pytest.raises(ValueError, match="rank"):
        ParquetBatches(tmp_path, "train", rank=2, world_size=2)


def test_batch_is_pipelineable_and_moves_whole(small_processed):
    # TorchRec's train pipelines accept only Pipelineable batches (to, record_stream)
    from torchrec.streamable import Pipelineable

    batch = next(iter(ParquetBatches(small_processed, "train", batch_size=64)))
    assert isinstance(batch, Pipelineable)
    moved = batch.to(torch.device("cpu"), non_blocking=True)
    assert moved is not batch and moved.batch_size == 64
    torch.testing.assert_close(moved.dense, batch.dense)
    torch.testing.assert_close(moved.labels, batch.labels)
    assert moved.sparse.keys() == batch.sparse.keys()
    torch.testing.assert_close(moved.sparse.values(), batch.sparse.values())
    torch.testing.assert_close(moved.sparse.lengths(), batch.sparse.lengths())


def _field(batch, name):
    return batch.sparse[name].values()


def test_id_dropout_replaces_ids_by_the_oov_id_at_its_rate_and_nothing_else(small_processed):
    import json

    oov = json.loads((small_processed / "metadata.json").read_text())["oov_ids"]
    kw = dict(batch_size=512, shuffle=True, seed=3)
    plain = list(ParquetBatches(small_processed, "train", **kw))
    dropped = list(ParquetBatches(small_processed, "train", id_dropout={"C3": 0.25, "C9": 0.0}, **kw))
    assert len(plain) == len(dropped)
    changed = kept_oov = total = 0
    for x, y in zip(plain, dropped):
        assert torch.equal(x.dense, y.dense) and torch.equal(x.labels, y.labels)
        for c in CAT_COLUMNS:
            if c != "C3":
                assert torch.equal(_field(x, c), _field(y, c))
        a, b = _field(x, "C3"), _field(y, "C3")
        diff = a != b
        assert bool((b[diff] == oov["C3"]).all())  # a changed id became the OOV id, never anything else
        changed += int(diff.sum())
        kept_oov += int(((a == oov["C3"]) & ~diff).sum())
        total += a.numel()
    # ids already OOV cannot change: the rate of replaced-or-already-OOV ids, over the ids not OOV before
    rate = changed / (total - kept_oov)
    assert 0.23 < rate < 0.27, rate
    # the cached shards are not changed: the plain reader still gives the original ids afterwards
    again = list(ParquetBatches(small_processed, "train", **kw))
    assert all(torch.equal(x.sparse.values(), z.sparse.values()) for x, z in zip(plain, again))


def test_id_dropout_is_the_same_with_loader_workers_and_after_a_resume(small_processed):
    kw = dict(batch_size=400, shuffle=True, seed=5, id_dropout={"C1": 0.3, "C20": 0.5})
    ds = ParquetBatches(small_processed, "train", **kw)
    direct = list(ds)
    loaded = list(make_dataloader(ParquetBatches(small_processed, "train", **kw), num_workers=2))
    assert len(loaded) == len(direct)
    assert all(torch.equal(x.sparse.values(), y.sparse.values()) for x, y in zip(direct, loaded))
    resumed = list(ParquetBatches(small_processed, "train", start_batch=4, **kw))
    assert all(torch.equal(x.sparse.values(), y.sparse.values()) for x, y in zip(direct[4:], resumed))
    ds.set_epoch(1)  # a new epoch draws anew
    assert not torch.equal(next(iter(ds)).sparse.values(), direct[0].sparse.values())


def test_id_dropout_refuses_a_field_it_cannot_drop(small_processed, tmp_path):
    from recsys_emb.errors import DataError

    with pytest.raises(DataError, match=r"names 'I1', which .* does not have; its id fields: \['C1'"):
        ParquetBatches(small_processed, "train", id_dropout={"I1": 0.1})
    cfg = SequenceConfig(users=50, items=100, categories=5, max_len=4, seed=1)
    generate_sequences(tmp_path, 300, config=cfg, rows_per_shard=1000)  # no oov_ids in its metadata
    with pytest.raises(DataError, match=r"gives no OOV id for it .*drop it from data.id_dropout"):
        ParquetBatches(tmp_path, "train", id_dropout={"user_id": 0.1})
