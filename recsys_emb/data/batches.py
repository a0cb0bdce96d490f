"""Parquet shards -> training batches ``(dense (B, D), KeyedJaggedTensor, labels (B,))`` built by slicing
column arrays (no per-row Python), shuffled per epoch with a seed, split across ranks and loader workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from recsys_emb.data.parquet import TableSchema, read_metadata, split_shards
from recsys_emb.errors import DataError
from recsys_emb.hashing import seed_from_name

__all__ = ["Batch", "ParquetBatches", "make_dataloader", "batch_from_table"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


@dataclass
class Batch(Pipelineable):
    """One batch; TorchRec's train pipelines move it between devices and streams (``Pipelineable``).

    Attributes:
        dense: float32 ``(B, D)`` (``D`` = number of dense columns, may be 0).
        sparse: KeyedJaggedTensor with the schema's keys (single-valued columns first, bags of length 1,
            then list columns, bags of length >= 0); ``stride = B``; values int64.
        labels: float32 ``(B,)``.
        true_prob: float32 ``(B,)`` ground truth, only when the reader was asked for it.
    """

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor
    true_prob: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "Batch":
        """The batch on ``device``."""
        return Batch(
            self.dense.to(device, non_blocking=non_blocking),
            self.sparse.to(torch.device(device), non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            None if self.true_prob is None else self.true_prob.to(device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        """Mark every tensor as in use by ``stream`` (a CUDA batch read on a stream that did not copy it)."""
        self.dense.record_stream(stream)
        self.sparse.record_stream(stream)
        self.labels.record_stream(stream)
        if self.true_prob is not None:
            self.true_prob.record_stream(stream)

    def pin_memory(self) -> "Batch":
        """Page-locked copy (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(self.dense.pin_memory(), self.sparse.pin_memory(), self.labels.pin_memory(),
                     None if self.true_prob is None else self.true_prob.pin_memory())


@dataclass
class _Shard:
    """One Parquet file as column arrays."""

    dense: np.ndarray  # (n, D) float32
    sparse: np.ndarray  # (n, S) int64, row-major: a batch gathers whole rows (cache friendly)
    jagged: List[Tuple[np.ndarray, np.ndarray]]  # per list column: (values int64, offsets int64 (n + 1,))
    labels: np.ndarray  # (n,) float32
    true_prob: Optional[np.ndarray]


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _load_shard(path: Path, schema: TableSchema, with_true_prob: bool) -> _Shard:
    truth_col = schema.true_prob if with_true_prob else None  # ParquetBatches refuses with_true_prob without it
    cols = list(schema.dense) + list(schema.sparse) + list(schema.jagged) + [schema.label]
    if truth_col is not None:
        cols.append(truth_col)
    return _shard_of(pq.read_table(path, columns=cols, memory_map=True), schema, truth_col)


def _shard_of(table: pa.Table, schema: TableSchema, truth_col: Optional[str]) -> _Shard:
    n = table.num_rows
    dense = np.empty((n, len(schema.dense)), dtype=np.float32)
    for j, c in enumerate(schema.dense):
        dense[:, j] = _column(table, c).to_numpy(zero_copy_only=False)
    sparse = np.empty((n, len(schema.sparse)), dtype=np.int64)
    for j, c in enumerate(schema.sparse):
        sparse[:, j] = _column(table, c).to_numpy(zero_copy_only=False)
    jagged = []
    for c in schema.jagged:
        arr = _column(table, c)
        offsets = arr.offsets.to_numpy().astype(np.int64)
        values = arr.values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        jagged.append((values, offsets))  # offsets index ``values`` directly (slices keep their base)
    labels = (_column(table, schema.label).to_numpy(zero_copy_only=False).astype(np.float32)
              if schema.label in table.column_names else np.full(n, np.nan, np.float32))
    truth = (_column(table, truth_col).to_numpy(zero_copy_only=False).astype(np.float32) if truth_col is not None
             else None)
    return _Shard(dense, sparse, jagged, labels, truth)


def _gather_jagged(values: np.ndarray, offsets: np.ndarray, rows: Union[slice, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of the bags of ``rows``, vectorized: no loop over rows."""
    if isinstance(rows, slice):
        lo, hi = offsets[rows.start], offsets[rows.stop]
        return values[lo:hi], np.diff(offsets[rows.start:rows.stop + 1])
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return values[:0], lengths
    # Position k of the output belongs to bag b(k) and reads values[starts[b] + (k - out_start[b])].
    out_start = np.cumsum(lengths) - lengths
    pos = np.arange(total, dtype=np.int64) + np.repeat(starts - out_start, lengths)
    return values[pos], lengths


def _build(shard: _Shard, rows: Union[slice, np.ndarray], keys: Tuple[str, ...]) -> Batch:
    """The batch of ``rows`` of a shard: dense, a KJT with ``keys``, labels (and truth)."""
    dense = shard.dense[rows]
    sparse = shard.sparse[rows]
    B = int(sparse.shape[0]) if sparse.shape[1] else int(shard.labels[rows].shape[0])
    S = sparse.shape[1]
    values = [np.ascontiguousarray(sparse.T).reshape(-1)]
    lengths = [np.ones(S * B, dtype=np.int32)]
    length_per_key = [B] * S
    for vals, offs in shard.jagged:
        v, ln = _gather_jagged(vals, offs, rows)
        values.append(v)
        lengths.append(ln.astype(np.int32))
        length_per_key.append(int(v.shape[0]))
    values_t = torch.from_numpy(np.concatenate(values) if len(values) > 1 else values[0])
    lengths_t = torch.from_numpy(np.concatenate(lengths) if len(lengths) > 1 else lengths[0])
    offset_per_key = np.concatenate(([0], np.cumsum(length_per_key))).tolist()
    kjt = KeyedJaggedTensor(keys=list(keys), values=values_t, lengths=lengths_t, stride=B,
                            length_per_key=length_per_key, offset_per_key=offset_per_key)
    labels = torch.from_numpy(np.ascontiguousarray(shard.labels[rows]))
    truth = torch.from_numpy(np.ascontiguousarray(shard.true_prob[rows])) if shard.true_prob is not None else None
    return Batch(torch.from_numpy(np.ascontiguousarray(dense)), kjt, labels, truth)


def batch_from_table(table: pa.Table, schema: TableSchema) -> Batch:
    """One batch of every row of ``table`` (processed columns: the schema's dense, sparse and jagged
    columns; the label when present, else labels are NaN), as :class:`ParquetBatches` builds them.

    Example:
        >>> s = TableSchema(dense=("I1",), sparse=("C1",), vocab_sizes={"C1": 10})
        >>> b = batch_from_table(pa.table({"I1": pa.array([0.5, 1.0], pa.float32()), "C1": [3, 4]}), s)
        >>> b.dense.shape, b.sparse.values().tolist(), b.labels.isnan().all().item()
        (torch.Size([2, 1]), [3, 4], True)
    """
    missing = [c for c in (*schema.dense, *schema.keys) if c not in table.column_names]
    if missing:
        raise DataError(f"the table lacks the model's columns {missing}; it has {table.column_names}")
    return _build(_shard_of(table, schema, None), slice(0, table.num_rows), schema.keys)


class ParquetBatches(IterableDataset):
    """Batches from one split of a processed dataset directory, for a given rank.

    Each epoch's batches are planned from the shards' row counts alone: shard order (shuffled per epoch
    if ``shuffle``), then consecutive runs of ``batch_size`` rows inside each shard (rows permuted per
    shard and epoch if ``shuffle``). Batches never span shards; with ``drop_last`` the last partial
    batch of each shard is dropped (with shuffling, different rows each epoch), otherwise it is yielded.

    Ranks take every ``world_size``-th batch of that list (rank ``r`` takes batches ``r, r + W, ...``)
    and all ranks stop after ``floor(total / W)`` batches, so every rank runs the same number of steps
    (the remainder, fewer than ``W`` batches, is dropped). ``start_batch`` skips this rank's first
    batches (resume from a checkpoint). Under a ``DataLoader`` with workers, worker ``w`` of ``n`` builds
    batches ``w, w + n, ...`` of the rank's list; the loader's round-robin returns them in order, so the
    sequence is the same with or without workers. Use ``batch_size=None`` in the loader
    (:func:`make_dataloader`).

    Batch tensors: ``dense`` float32 ``(B, D)`` from ``schema.dense``; ``sparse`` a KeyedJaggedTensor with
    ``keys = schema.sparse + schema.jagged``, values feature-major (all of the first key for the batch,
    then the second, ...), int32 lengths, ``stride = B``, ``length_per_key`` given (no device sync);
    ``labels`` float32 ``(B,)``; ``true_prob`` only with ``with_true_prob=True``.

    Args:
        directory: processed dataset directory (``metadata.json`` + ``{split}/part-*.parquet``); the shards
            read are exactly those ``metadata.json`` lists (a directory that disagrees with it is refused
            with a :class:`~recsys_emb.errors.DataError`).
        split: ``"train"``, ``"valid"`` or ``"test"``.
        batch_size: rows per batch ``B``.
        shuffle, seed: per-epoch shuffling (call :meth:`set_epoch` each epoch).
        drop_last: drop each shard's last partial batch (default: ``shuffle``).
        rank, world_size: this process's share.
        start_batch: index in this rank's batch list to start from.
        with_true_prob: also return the ground-truth probabilities (evaluation only; never a feature).
        schema: override the schema stored in the metadata.
        id_dropout: ``{field: p}``: each id of ``field`` becomes the field's OOV id (``metadata.json``'s
            ``oov_ids``) with probability ``p``, drawn per batch from ``(seed, epoch, shard, first row)``, so a
            batch is the same with or without loader workers and after a resume (training only; see
            :class:`~recsys_emb.config.DataConfig`).

    Example (``tmp``: any writable directory):
        >>> from recsys_emb.data.criteo import preprocess
        >>> from recsys_emb.data.synthetic import generate_criteo_like
        >>> g = generate_criteo_like(tmp / "raw", rows=20_000, scale=0.001, seed=0)
        >>> _ = preprocess(g.tsv, tmp / "criteo-like")
        >>> ds = ParquetBatches(tmp / "criteo-like", "train", batch_size=4096, shuffle=True, seed=0)
        >>> batch = next(iter(ds))
        >>> batch.dense.shape, batch.sparse.keys()[:2], batch.sparse.stride(), len(ds)
        (torch.Size([4096, 13]), ['C1', 'C2'], 4096, 3)
    """

    def __init__(self, directory: PathLike, split: str = "train", *, batch_size: int = 4096,
                 shuffle: bool = False, seed: int = 0, drop_last: Optional[bool] = None, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0, with_true_prob: bool = False,
                 schema: Optional[TableSchema] = None, id_dropout: Optional[Mapping[str, float]] = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.directory = Path(directory)
        self.split = split
        metadata = read_metadata(self.directory)
        self.schema = schema or TableSchema.from_dict(metadata["schema"])
        if with_true_prob and not self.schema.true_prob:
            raise ValueError(f"{self.directory} has no true_prob column (only generated data has one)")
        shards = split_shards(self.directory, split, metadata)  # exactly the listed shards, checked
        if not shards:
            raise DataError(f"{self.directory}/{split} has no rows (its metadata.json lists no {split} shards)")
        self.files = [p for p, _ in shards]
        self.shard_rows = [n for _, n in shards]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = shuffle if drop_last is None else drop_last
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.with_true_prob = with_true_prob
        self.epoch = 0
        self.id_dropout = _dropout_plan(self.directory, metadata, self.schema, id_dropout or {})
        self._cache: Optional[Tuple[int, _Shard]] = None
        self._perm_cache: Optional[Tuple[Tuple[int, int], np.ndarray]] = None

    @property
    def rows(self) -> int:
        return int(sum(self.shard_rows))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its shuffle) for the next iteration."""
        self.epoch = int(epoch)

    # -- planning -----------------------------------------------------------------------------------
    def _epoch_batches(self) -> List[Tuple[int, int, int]]:
        """``(shard, start, stop)`` of every batch of the epoch, all ranks, in order."""
        order = np.arange(len(self.files))
        if self.shuffle:
            order = np.random.default_rng(seed_from_name("batches/shards", self.seed, self.epoch)).permutation(order)
        out: List[Tuple[int, int, int]] = []
        B = self.batch_size
        for s in order.tolist():
            n = self.shard_rows[s]
            stop = n - n % B if self.drop_last else n
            out.extend((s, a, min(a + B, n)) for a in range(0, stop, B))
        return out

    def rank_batches(self) -> List[Tuple[int, int, int]]:
        """This rank's batches ``(shard, start, stop)`` for the current epoch, from ``start_batch`` on."""
        allb = self._epoch_batches()
        per_rank = len(allb) // self.world_size if self.world_size > 1 else len(allb)
        mine = allb[self.rank::self.world_size][:per_rank]
        return mine[self.start_batch:]

    def __len__(self) -> int:
        return len(self.rank_batches())

    def batch_rows(self, shard: int, start: int, stop: int) -> Union[slice, np.ndarray]:
        """Row positions in ``shard`` of the batch ``(shard, start, stop)`` (the permutation if shuffled)."""
        if not self.shuffle:
            return slice(start, stop)
        key = (self.epoch, shard)
        if self._perm_cache is None or self._perm_cache[0] != key:
            rng = np.random.default_rng(seed_from_name("batches/rows", self.seed, self.epoch, shard))
            self._perm_cache = (key, rng.permutation(self.shard_rows[shard]))
        return self._perm_cache[1][start:stop]

    # -- building -----------------------------------------------------------------------------------
    def _shard(self, s: int) -> _Shard:
        if self._cache is None or self._cache[0] != s:
            self._cache = None  # free the previous shard before loading the next
            self._cache = (s, _load_shard(self.files[s], self.schema, self.with_true_prob))
        return self._cache[1]

    def _build(self, shard: _Shard, rows: Union[slice, np.ndarray]) -> Batch:
        return _build(shard, rows, self.schema.keys)

    def __iter__(self) -> Iterator[Batch]:
        plan = self.rank_batches()
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            plan = plan[info.id::info.num_workers]
        for s, a, b in plan:
            batch = self._build(self._shard(s), self.batch_rows(s, a, b))
            if self.id_dropout:
                rng = np.random.default_rng(seed_from_name("batches/id_dropout", self.seed, self.epoch, s, a))
                batch = _drop_ids(batch, self.id_dropout, rng)
            yield batch
        self._cache = None


def _dropout_plan(directory: Path, metadata: Dict[str, Any], schema: TableSchema,
                  id_dropout: Mapping[str, float]) -> List[Tuple[str, float, int]]:
    """``(field, p, OOV id)`` per field with ``p > 0``, checked against the dataset."""
    oov_ids = metadata.get("oov_ids") or {}
    plan = []
    for name, p in id_dropout.items():
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"id_dropout[{name!r}]={p!r} must be a probability in [0, 1)")
        if name not in schema.keys:
            raise DataError(f"data.id_dropout names {name!r}, which {directory} does not have; its id fields: "
                            f"{list(schema.keys)}")
        if name not in oov_ids:
            raise DataError(f"data.id_dropout names {name!r}, but {directory}/metadata.json gives no OOV id for it "
                            f"(oov_ids has {sorted(oov_ids)}); drop it from data.id_dropout")
        if p > 0:
            plan.append((name, float(p), int(oov_ids[name])))
    return plan


def _drop_ids(batch: Batch, plan: List[Tuple[str, float, int]], rng: np.random.Generator) -> Batch:
    """``batch`` with each id of the planned fields replaced by the OOV id with its probability."""
    kjt = batch.sparse
    values = kjt.values().clone()  # the batch may share memory with the cached shard
    offsets = kjt.offset_per_key()
    keys = kjt.keys()
    for name, p, oov in plan:
        k = keys.index(name)
        lo, hi = offsets[k], offsets[k + 1]
        drop = torch.from_numpy(rng.random(hi - lo) < p)
        values[lo:hi][drop] = oov
    sparse = KeyedJaggedTensor(keys=keys, values=values, lengths=kjt.lengths(), stride=kjt.stride(),
                               length_per_key=kjt.length_per_key(), offset_per_key=offsets)
    return Batch(batch.dense, sparse, batch.labels, batch.true_prob)


def make_dataloader(dataset: ParquetBatches, num_workers: int = 0, pin_memory: bool = False,
                    prefetch_factor: Optional[int] = None) -> DataLoader:
    """A ``DataLoader`` over a :class:`ParquetBatches` (``batch_size=None``: the dataset makes batches).

    Example (``tmp``: any writable directory):
        >>> from recsys_emb.data.sequences import SequenceConfig, generate_sequences
        >>> _ = generate_sequences(tmp / "seq", 5000, config=SequenceConfig(users=100, items=500, categories=20))
        >>> loader = make_dataloader(ParquetBatches(tmp / "seq", "train", batch_size=1000), num_workers=2)
        >>> [b.batch_size for b in loader]
        [1000, 1000, 1000, 1000]
    """
    kwargs: Dict[str, Any] = {} if num_workers == 0 or prefetch_factor is None else {"prefetch_factor": prefetch_factor}
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kwargs)
