"""Behaviour-sequence data for DIN with known ground truth: users with a few latent interests, items with
categories, and labels from a planted model in which the candidate's match with *specific* past items
matters (a soft maximum over the history), so attention over the history can beat sum pooling.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import pyarrow as pa

from recsys_emb.data.outdir import atomic_output_dir
from recsys_emb.data.parquet import (
    DATASET_ENTRIES,
    SPLITS,
    ShardedParquetWriter,
    TableSchema,
    time_split_sizes,
    write_metadata,
)
from recsys_emb.hashing import seed_from_name

__all__ = ["SequenceConfig", "SequenceWorld", "generate_sequences", "SEQUENCE_SCHEMA_KEYS"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
_BLOCK_ROWS = 1 << 14
SEQUENCE_SCHEMA_KEYS = ("user_id", "user_segment", "cand_item", "cand_cat", "hist_item", "hist_cat")


@dataclass(frozen=True)
class SequenceConfig:
    """The planted world of the behaviour-sequence generator.

    Attributes:
        users, items, categories, segments: vocabulary sizes (``segments`` = a coarse user profile field).
        dim: dimension of the latent item vectors.
        interests: (min, max) number of interest categories per user.
        max_len: longest history; lengths are uniform on ``[min_len, max_len]``.
        on_interest: probability that a history item comes from one of the user's interests.
        item_spread: spread of items around their category centre (larger: the specific item matters more
            than its category).
        match_sd, item_sd, user_sd: logit scales of the history match, the candidate's own effect and the
            user's bias.
        sharpness: inverse temperature of the soft maximum over the history.
        positive_rate: target mean click probability.
    """

    users: int = 20_000
    items: int = 50_000
    categories: int = 500
    segments: int = 16
    dim: int = 16
    interests: tuple = (2, 4)
    min_len: int = 1
    max_len: int = 50
    on_interest: float = 0.8
    item_spread: float = 1.0
    match_sd: float = 1.5
    item_sd: float = 0.5
    user_sd: float = 0.3
    sharpness: float = 8.0
    positive_rate: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        lo, hi = self.interests
        if not 1 <= lo <= hi <= self.categories:
            raise ValueError(f"interests must satisfy 1 <= min <= max <= categories, got {self.interests}")
        if min(self.users, self.items, self.categories, self.segments, self.dim) < 1:
            raise ValueError("users, items, categories, segments and dim must be >= 1")


def _bounded_zipf(u: np.ndarray, n: np.ndarray, s: float) -> np.ndarray:
    """Inverse CDF of a bounded power law on ranks ``[0, n)``, vectorized over ``u`` and ``n``."""
    t = 1.0 - s
    x = (1.0 - u * (1.0 - (n + 1.0) ** t)) ** (1.0 / t)
    return np.minimum(np.floor(x).astype(np.int64) - 1, np.asarray(n, dtype=np.int64) - 1)


class SequenceWorld:
    """Users, items and the planted click model.

    ``logit = b + match_sd * z(M) + item_sd * e(cand) + user_sd * e(user)`` with
    ``M = (1 / k) log sum_j exp(k <v_cand, v_hist_j>)``: a soft maximum over the history of the cosine
    match with each past item (``k`` = sharpness), standardized. One close past item is enough for a
    high match, which a sum (mean) over the history washes out.

    Example:
        >>> w = SequenceWorld(SequenceConfig(users=100, items=500, categories=20, max_len=10))
        >>> rows = w.sample_block(0, 64)
        >>> rows["true_prob"].shape
        (64,)
    """

    def __init__(self, config: SequenceConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng(seed_from_name("sequences/world", c.seed))
        centers = rng.standard_normal((c.categories, c.dim))
        cat_sizes = np.maximum(1, np.round(c.items * self._zipf_weights(c.categories, 0.9)).astype(np.int64))
        cat_sizes[0] += c.items - cat_sizes.sum()
        while cat_sizes.min() < 1:  # rounding can overshoot: take from the largest category
            cat_sizes[np.argmin(cat_sizes)] += 1
            cat_sizes[np.argmax(cat_sizes)] -= 1
        self.item_category = np.repeat(np.arange(c.categories), cat_sizes)
        self.category_start = np.concatenate(([0], np.cumsum(cat_sizes)[:-1]))
        self.category_size = cat_sizes
        v = centers[self.item_category] + c.item_spread * rng.standard_normal((c.items, c.dim))
        self.item_vectors = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        self.item_effect = rng.standard_normal(c.items)
        self.user_effect = rng.standard_normal(c.users)
        self.user_segment = rng.integers(0, c.segments, c.users)
        lo, hi = c.interests
        self.user_interest_count = rng.integers(lo, hi + 1, c.users)
        cat_pop = self._zipf_weights(c.categories, 1.0)
        if c.users > 200_000:
            raise ValueError("users > 200000 not supported by this generator")
        self.user_interests = np.stack([rng.choice(c.categories, size=hi, replace=False, p=cat_pop)
                                        for _ in range(c.users)])
        self._match_stats = (0.0, 1.0)
        self.bias = 0.0
        self._calibrate()

    @staticmethod
    def _zipf_weights(n: int, s: float) -> np.ndarray:
        w = 1.0 / np.arange(1, n + 1) ** s
        return w / w.sum()

    def _items_in(self, rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
        rank = _bounded_zipf(rng.random(cats.shape), self.category_size[cats].astype(np.float64), 1.1)
        return self.category_start[cats] + rank

    def _draw_items(self, rng: np.random.Generator, users: np.ndarray, shape: tuple) -> np.ndarray:
        """Items for each user (``shape[0]`` users): from one of their interests w.p. ``on_interest``."""
        c = self.config
        k = self.user_interest_count[users]
        pick = (rng.random(shape) * k.reshape((-1,) + (1,) * (len(shape) - 1))).astype(np.int64)
        interest_cat = self.user_interests[users.reshape((-1,) + (1,) * (len(shape) - 1)), pick]
        random_cat = rng.choice(c.categories, size=shape, p=self._zipf_weights(c.categories, 1.0))
        on = rng.random(shape) < c.on_interest
        return self._items_in(rng, np.where(on, interest_cat, random_cat))

    def _raw(self, rng: np.random.Generator, n: int) -> Dict[str, np.ndarray]:
        c = self.config
        users = rng.integers(0, c.users, n)
        lengths = rng.integers(c.min_len, c.max_len + 1, n)
        hist = self._draw_items(rng, users, (n, c.max_len))
        mask = np.arange(c.max_len)[None, :] < lengths[:, None]
        cand_on = rng.random(n) < 0.5
        cand = np.where(cand_on, self._draw_items(rng, users, (n,)),
                        self._items_in(rng, rng.choice(c.categories, n, p=self._zipf_weights(c.categories, 1.0))))
        sims = np.einsum("nd,nld->nl", self.item_vectors[cand], self.item_vectors[hist])
        k = c.sharpness
        sims = np.where(mask, k * sims, -np.inf)
        top = sims.max(axis=1)
        match = (top + np.log(np.exp(sims - top[:, None]).sum(axis=1))) / k
        return {"users": users, "lengths": lengths, "hist": hist, "mask": mask, "cand": cand, "match": match}

    def _logit(self, raw: Dict[str, np.ndarray]) -> np.ndarray:
        c = self.config
        m0, m1 = self._match_stats
        return (self.bias + c.match_sd * (raw["match"] - m0) / m1 + c.item_sd * self.item_effect[raw["cand"]]
                + c.user_sd * self.user_effect[raw["users"]])

    def _calibrate(self) -> None:
        rng = np.random.default_rng(seed_from_name("sequences/calibration", self.config.seed))
        raw = self._raw(rng, 1 << 15)
        self._match_stats = (float(raw["match"].mean()), max(float(raw["match"].std()), 1e-9))
        base = self._logit(raw)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if (1 / (1 + np.exp(-(base + mid)))).mean() < self.config.positive_rate:
                lo = mid
            else:
                hi = mid
        self.bias = 0.5 * (lo + hi)

    def sample_block(self, block: int, n: int) -> Dict[str, np.ndarray]:
        """Examples of generation block ``block``: ``user_id``, ``user_segment``, ``cand_item``,
        ``cand_cat`` ``(n,)``; ``hist_item``, ``hist_cat`` flat values with ``hist_offsets`` ``(n + 1,)``;
        ``label`` int8, ``true_prob`` float64, ``match`` (the planted soft-max match) ``(n,)``."""
        rng = np.random.default_rng(seed_from_name("sequences/rows", self.config.seed, block))
        raw = self._raw(rng, n)
        p = 1 / (1 + np.exp(-self._logit(raw)))
        label = (rng.random(n) < p).astype(np.int8)
        hist_items = raw["hist"][raw["mask"]]  # row-major: each row's first ``length`` items
        offsets = np.concatenate(([0], np.cumsum(raw["lengths"])))
        return {
            "user_id": raw["users"], "user_segment": self.user_segment[raw["users"]],
            "cand_item": raw["cand"], "cand_cat": self.item_category[raw["cand"]],
            "hist_item": hist_items, "hist_cat": self.item_category[hist_items], "hist_offsets": offsets,
            "label": label, "true_prob": p, "match": raw["match"],
        }

    def schema(self) -> TableSchema:
        c = self.config
        return TableSchema(sparse=("user_id", "user_segment", "cand_item", "cand_cat"),
                           jagged=("hist_item", "hist_cat"), label="label", true_prob="true_prob",
                           vocab_sizes={"user_id": c.users, "user_segment": c.segments, "cand_item": c.items,
                                        "cand_cat": c.categories, "hist_item": c.items, "hist_cat": c.categories})


def _to_table(rows: Dict[str, np.ndarray]) -> pa.Table:
    offsets = pa.array(rows["hist_offsets"].astype(np.int32))
    return pa.table({
        "user_id": pa.array(rows["user_id"].astype(np.int64)),
        "user_segment": pa.array(rows["user_segment"].astype(np.int64)),
        "cand_item": pa.array(rows["cand_item"].astype(np.int64)),
        "cand_cat": pa.array(rows["cand_cat"].astype(np.int64)),
        "hist_item": pa.ListArray.from_arrays(offsets, pa.array(rows["hist_item"].astype(np.int64))),
        "hist_cat": pa.ListArray.from_arrays(offsets, pa.array(rows["hist_cat"].astype(np.int64))),
        "label": pa.array(rows["label"], pa.int8()),
        "true_prob": pa.array(rows["true_prob"].astype(np.float32)),
    })


def generate_sequences(out_dir: PathLike, rows: int, *, config: Optional[SequenceConfig] = None,
                       seed: int = 0, max_len: int = 50, test_fraction: float = 0.1,
                       valid_fraction: Optional[float] = None, rows_per_shard: int = 1 << 20,
                       progress: Optional[Callable[[int], None]] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Generate DIN behaviour-sequence examples as a processed dataset directory.

    Writes ``out_dir/{train,valid,test}/part-*.parquet`` (examples in generation order = time order; the
    last ``test_fraction`` are the test split) with columns ``user_id``, ``user_segment``, ``cand_item``,
    ``cand_cat`` (int64), ``hist_item``, ``hist_cat`` (``list<int64>``, oldest first, lengths in
    ``[1, max_len]``), ``label`` (int8), ``true_prob`` (float32, ground truth: never a feature) and
    ``metadata.json`` (schema, vocab sizes, config). ``hist_item`` / ``cand_item`` share one id space, as
    do ``hist_cat`` / ``cand_cat``.

    The directory appears whole or not at all (written into a temporary sibling, then renamed); a
    non-empty ``out_dir`` is refused unless ``overwrite``, which replaces it whole.

    Args:
        out_dir: output directory (absent or empty unless ``overwrite``).
        rows: examples.
        config: the world (default ``SequenceConfig(seed=seed, max_len=max_len)``).
        overwrite: replace an existing dataset directory whole.

    Example (``tmp``: any writable directory):
        >>> meta = generate_sequences(tmp / "seq", rows=10_000, max_len=20, seed=1)
        >>> meta["schema"]["jagged"], meta["rows"]
        (['hist_item', 'hist_cat'], {'total': 10000, 'train': 8000, 'valid': 1000, 'test': 1000})
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    cfg = config or SequenceConfig(seed=seed, max_len=max_len)
    with atomic_output_dir(out_dir, overwrite=overwrite, owned=DATASET_ENTRIES, command="generate sequences") as out:
        t0 = time.perf_counter()
        world = SequenceWorld(cfg)
        n_train, n_valid, n_test = time_split_sizes(rows, test_fraction, valid_fraction)
        bounds = np.array([n_train, n_train + n_valid, rows])
        writers = {s: ShardedParquetWriter(out / s, rows_per_shard=rows_per_shard) for s in SPLITS}
        done = positives = 0
        for block in range(math.ceil(rows / _BLOCK_ROWS)):
            n = min(_BLOCK_ROWS, rows - done)
            table = _to_table(world.sample_block(block, n))
            positives += int(np.asarray(table.column("label")).sum())
            which = np.searchsorted(bounds, done + np.arange(n), side="right")
            for i, s in enumerate(SPLITS):
                sel = np.flatnonzero(which == i)
                if len(sel):
                    writers[s].write(table.slice(int(sel[0]), len(sel)))
            done += n
            if progress is not None:
                progress(done)
        files = {s: w.close() for s, w in writers.items()}
        meta = {
            "dataset": "sequences",
            "format_version": 1,
            "rows": {"total": rows, "train": n_train, "valid": n_valid, "test": n_test},
            "files": {s: [{"name": f, "rows": r} for f, r in files[s]] for s in SPLITS},
            "config": asdict(cfg),
            "schema": world.schema().to_dict(),
            "vocab_sizes": world.schema().vocab_sizes,
            "positive_rate": positives / rows,
            "bias": world.bias,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_metadata(out, meta)
    logger.info("generated %d sequence examples in %.1fs, positives %.3f", rows, meta["seconds"], positives / rows)
    return meta
