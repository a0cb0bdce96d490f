"""MovieLens latest-small as a real CTR task: label = rating >= threshold, user / movie / genre fields,
and each example's preceding history of movies and genres (strictly earlier timestamps) for DIN.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_emb.data.outdir import atomic_output_dir
from recsys_emb.data.vocabulary import MinCount, resolve_min_count
from recsys_emb.data.parquet import (
    DATASET_ENTRIES,
    SPLITS,
    ShardedParquetWriter,
    TableSchema,
    time_split_sizes,
    write_metadata,
)

__all__ = ["default_movielens_dir", "load_movielens", "build_movielens_ctr", "prepare_movielens",
           "MOVIELENS_SCHEMA"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
_REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "RECSYS_EMB_DATA_DIR"

MOVIELENS_SCHEMA = TableSchema(
    dense=("hist_len_log", "movie_year"),
    sparse=("user_id", "movie_id", "movie_genre"),
    jagged=("genres", "hist_movie", "hist_genre"),
    label="label",
)
"""Columns of the processed MovieLens CTR set (vocab sizes are filled in by :func:`build_movielens_ctr`)."""


def default_movielens_dir() -> Path:
    """Where MovieLens latest-small lives: ``$RECSYS_EMB_DATA_DIR`` (the ``ml-latest-small`` directory itself
    or a directory holding it) if set, else ``<repo>/../shared/data/ml-latest-small``.

    Example:
        >>> default_movielens_dir().name
        'ml-latest-small'
    """
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env)
        return p / "ml-latest-small" if (p / "ml-latest-small").is_dir() else p
    return (_REPO_ROOT / ".." / "shared" / "data" / "ml-latest-small").resolve()


def load_movielens(src_dir: Optional[PathLike] = None) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """``(ratings, movies)`` DataFrames from ``ratings.csv`` and ``movies.csv`` of ml-latest-small."""
    src = Path(src_dir) if src_dir is not None else default_movielens_dir()
    for f in ("ratings.csv", "movies.csv"):
        if not (src / f).is_file():
            raise FileNotFoundError(
                f"{src / f} not found; point {ENV_VAR} at the ml-latest-small directory "
                "(see datasets/movielens.md for where to get it)")
    ratings = pd.read_csv(src / "ratings.csv", dtype={"userId": np.int64, "movieId": np.int64,
                                                      "rating": np.float32, "timestamp": np.int64})
    movies = pd.read_csv(src / "movies.csv", dtype={"movieId": np.int64, "title": str, "genres": str})
    return ratings, movies


def _rank_ids(raw: np.ndarray, train_mask: np.ndarray, min_count: int = 1) -> Tuple[np.ndarray, int, np.ndarray]:
    """Frequency ranks over the training rows (0 = most frequent, ties by raw id); ids unseen in training,
    or seen fewer than ``min_count`` times -> OOV = last.

    Returns ``(lookup function result for raw, vocab size, sorted known raw ids)``."""
    keys, counts = np.unique(raw[train_mask], return_counts=True)
    keys, counts = keys[counts >= min_count], counts[counts >= min_count]
    order = np.lexsort((keys, -counts))
    ids = np.empty(len(keys), np.int64)
    ids[order] = np.arange(len(keys))
    oov = len(keys)
    pos = np.minimum(np.searchsorted(keys, raw), max(len(keys) - 1, 0))
    hit = keys[pos] == raw if len(keys) else np.zeros(raw.shape, bool)
    return np.where(hit, ids[pos], oov), oov + 1, keys


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each pair, vectorized."""
    total = int(lengths.sum())
    out_start = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - out_start, lengths)


def build_movielens_ctr(src_dir: Optional[PathLike] = None, *, rating_threshold: float = 4.0,
                        max_len: int = 50, test_fraction: float = 0.1, valid_fraction: Optional[float] = None,
                        min_history: int = 0, min_count: MinCount = "auto", sample_rows: Optional[int] = None,
                        sample_seed: int = 0) -> Tuple[Dict[str, pa.Table], Dict[str, Any]]:
    """MovieLens ratings -> a time-ordered CTR dataset with behaviour histories, in memory.

    Rows are all ratings ordered by ``(timestamp, userId, movieId)``; the last ``test_fraction`` form the
    test split and the ``valid_fraction`` (default: same) before them validation, so training holds no
    rating later than any validation or test rating. Columns (``B`` rows):

    - ``label`` int8: ``rating >= rating_threshold``; ``rating`` float32 and ``timestamp`` int64 kept for
      reference (not features);
    - ``user_id``, ``movie_id`` int64: frequency ranks over the training rows (0 = most frequent; ids not in
      training map to the OOV id = vocab size - 1);
    - ``movie_genre`` int64: the movie's first listed genre; ``genres`` ``list<int64>``: all its genres
      (a multi-valued field);
    - ``hist_movie``, ``hist_genre`` ``list<int64>``: the user's previous ratings with a strictly earlier
      timestamp, oldest first, at most ``max_len`` (the most recent), and their first genres;
    - ``hist_len_log`` float32: ``log(1 + number of previous ratings)``; ``movie_year`` float32:
      ``(year - 1995) / 20`` from the title, 0 if absent.

    Args:
        src_dir: the ml-latest-small directory (default :func:`default_movielens_dir`).
        min_history: drop examples with fewer previous ratings (0 keeps every rating; empty bags are fine).
        min_count: users and movies with fewer training ratings share the OOV id, so the OOV row is
            trained on rare ids and is not an untrained row when a later split brings new users or
            movies (1: only ids unseen in training are OOV; ``auto``, the default:
            :func:`~recsys_emb.data.vocabulary.auto_min_count` of the training rows, 2 below 10,000).
        sample_rows: keep a uniform random sample of this many ratings (drawn with ``sample_seed``) before
            anything else, so histories, vocabularies and splits are those of the sample alone, as for a
            team that holds only a sample of its logs; None (default) or more than there are: all.
    Returns:
        ``({"train": table, "valid": table, "test": table}, metadata)``.

    Example (needs MovieLens ml-latest-small, which the repository does not hold: see
    datasets/movielens.md; the test run skips it when the data is absent):
        >>> tables, meta = build_movielens_ctr()
        >>> meta["rows"]["total"], tables["train"].num_rows
        (100836, 80668)
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    resolve_min_count(min_count, 0)  # refuses a bad setting before any work
    if sample_rows is not None and sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, got {sample_rows}")
    ratings, movies = load_movielens(src_dir)
    sample = None
    if sample_rows is not None and sample_rows < len(ratings):
        sample = {"rows": sample_rows, "of": len(ratings), "seed": sample_seed}
        picked = np.sort(np.random.default_rng(sample_seed).choice(len(ratings), sample_rows, replace=False))
        ratings = ratings.iloc[picked]
    ratings = ratings.sort_values(["timestamp", "userId", "movieId"], kind="mergesort").reset_index(drop=True)

    # Genres: ids by number of movies carrying them (0 = most common), ties by name.
    genre_lists = movies["genres"].fillna("(no genres listed)").str.split("|")
    exploded = genre_lists.explode()
    counts = exploded.value_counts()
    names = sorted(counts.index, key=lambda g: (-int(counts[g]), g))
    genre_id = {g: i for i, g in enumerate(names)}
    movie_raw = movies["movieId"].to_numpy()
    order_m = np.argsort(movie_raw)
    movie_raw_sorted = movie_raw[order_m]
    g_ids = exploded.map(genre_id).to_numpy(dtype=np.int64)
    g_len = genre_lists.str.len().to_numpy(dtype=np.int64)
    g_off = np.concatenate(([0], np.cumsum(g_len)))
    first_genre = g_ids[g_off[:-1]]
    year = pd.to_numeric(movies["title"].str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce").to_numpy()
    year_feat = np.where(np.isnan(year), 0.0, (year - 1995.0) / 20.0).astype(np.float32)

    n_all = len(ratings)
    users = ratings["userId"].to_numpy()
    movie = ratings["movieId"].to_numpy()
    ts = ratings["timestamp"].to_numpy()
    pos = np.searchsorted(movie_raw_sorted, movie)
    if (pos >= len(movie_raw_sorted)).any() or (movie_raw_sorted[np.minimum(pos, len(movie_raw_sorted) - 1)] != movie).any():
        raise ValueError("ratings.csv names movies that movies.csv lacks")
    movie_row = order_m[pos]  # row of each rating's movie in movies.csv

    # History: in each user's time-ordered ratings, the ratings before the first one with this timestamp.
    by_user = np.lexsort((np.arange(n_all), users))  # stable: keeps the global time order within a user
    u_sorted, t_sorted = users[by_user], ts[by_user]
    new_user = np.concatenate(([True], u_sorted[1:] != u_sorted[:-1]))
    new_ts = new_user | np.concatenate(([True], t_sorted[1:] != t_sorted[:-1]))
    idx = np.arange(n_all)
    user_start = np.maximum.accumulate(np.where(new_user, idx, 0))
    ts_start = np.maximum.accumulate(np.where(new_ts, idx, 0))
    prior = np.empty(n_all, np.int64)
    prior[by_user] = ts_start - user_start
    h_end = np.empty(n_all, np.int64)
    h_end[by_user] = ts_start
    h_len = np.minimum(prior, max_len)
    h_start = h_end - h_len

    keep = prior >= min_history
    n = int(keep.sum())
    n_train, n_valid, n_test = time_split_sizes(n, test_fraction, valid_fraction)
    kept_rows = np.flatnonzero(keep)
    train_mask = np.zeros(n_all, bool)
    train_mask[kept_rows[:n_train]] = True
    min_count = resolve_min_count(min_count, n_train)

    user_ids, user_vocab, _ = _rank_ids(users, train_mask, min_count)
    movie_ids, movie_vocab, _ = _rank_ids(movie, train_mask, min_count)
    movie_ids_by_user = movie_ids[by_user]
    genre_by_user = first_genre[movie_row][by_user]

    label = (ratings["rating"].to_numpy() >= rating_threshold).astype(np.int8)
    hist_len_log = np.log1p(prior).astype(np.float32)

    def table(rows: np.ndarray) -> pa.Table:
        hs, hl = h_start[rows], h_len[rows]
        take = _ranges(hs, hl)
        h_off = pa.array(np.concatenate(([0], np.cumsum(hl))).astype(np.int32))
        mr = movie_row[rows]
        gl = g_len[mr]
        gvals = g_ids[_ranges(g_off[mr], gl)]
        gen_off = pa.array(np.concatenate(([0], np.cumsum(gl))).astype(np.int32))
        return pa.table({
            "label": pa.array(label[rows], pa.int8()),
            "rating": pa.array(ratings["rating"].to_numpy()[rows]),
            "timestamp": pa.array(ts[rows]),
            "user_id": pa.array(user_ids[rows]),
            "movie_id": pa.array(movie_ids[rows]),
            "movie_genre": pa.array(first_genre[mr]),
            "genres": pa.ListArray.from_arrays(gen_off, pa.array(gvals, pa.int64())),
            "hist_movie": pa.ListArray.from_arrays(h_off, pa.array(movie_ids_by_user[take], pa.int64())),
            "hist_genre": pa.ListArray.from_arrays(h_off, pa.array(genre_by_user[take], pa.int64())),
            "hist_len_log": pa.array(hist_len_log[rows]),
            "movie_year": pa.array(year_feat[mr]),
        })

    splits = {"train": kept_rows[:n_train], "valid": kept_rows[n_train:n_train + n_valid],
              "test": kept_rows[n_train + n_valid:]}
    tables = {s: table(r) for s, r in splits.items()}
    vocab = {"user_id": user_vocab, "movie_id": movie_vocab, "movie_genre": len(names), "genres": len(names),
             "hist_movie": movie_vocab, "hist_genre": len(names)}
    schema = TableSchema(dense=MOVIELENS_SCHEMA.dense, sparse=MOVIELENS_SCHEMA.sparse, jagged=MOVIELENS_SCHEMA.jagged,
                         label="label", vocab_sizes=vocab)
    meta = {
        "dataset": "movielens-latest-small",
        "format_version": 1,
        "rows": {"total": n, "train": n_train, "valid": n_valid, "test": n_test},
        "rating_threshold": rating_threshold,
        "max_len": max_len,
        "min_history": min_history,
        "min_count": min_count,
        "sample": sample,
        "positive_rate": {s: float(np.asarray(t.column("label")).mean()) if t.num_rows else float("nan")
                          for s, t in tables.items()},
        "time_ranges": {s: [int(ts[r].min()), int(ts[r].max())] if len(r) else None for s, r in splits.items()},
        "genres": names,
        "vocab_sizes": vocab,
        "oov_ids": {"user_id": user_vocab - 1, "movie_id": movie_vocab - 1},
        "schema": schema.to_dict(),
        "licence": "GroupLens MovieLens usage licence: research only, no endorsement, cite Harper & Konstan "
                   "(2015), redistribution only under the same conditions, no commercial use without permission",
    }
    return tables, meta


def prepare_movielens(out_dir: PathLike, src_dir: Optional[PathLike] = None, *, overwrite: bool = False,
                      **kwargs: Any) -> Dict[str, Any]:
    """:func:`build_movielens_ctr` written as a processed dataset directory (Parquet splits +
    ``metadata.json``) that :class:`recsys_emb.data.batches.ParquetBatches` reads.

    The directory appears whole or not at all (written into a temporary sibling, then renamed); a
    non-empty ``out_dir`` is refused unless ``overwrite``, which replaces it whole.

    Example (needs MovieLens ml-latest-small, see :func:`build_movielens_ctr`; ``tmp``: any writable
    directory):
        >>> meta = prepare_movielens(tmp / "movielens", max_len=20)
        >>> sorted(p.name for p in (tmp / "movielens").iterdir())
        ['metadata.json', 'test', 'train', 'valid']
    """
    t0 = time.perf_counter()
    src = Path(src_dir) if src_dir is not None else default_movielens_dir()
    with atomic_output_dir(out_dir, overwrite=overwrite, owned=DATASET_ENTRIES, command="generate movielens",
                           inputs=[src]) as out:
        tables, meta = build_movielens_ctr(src, **kwargs)
        files = {}
        for s in SPLITS:
            w = ShardedParquetWriter(out / s)
            w.write(tables[s])
            files[s] = w.close()
        meta["files"] = {s: [{"name": f, "rows": r} for f, r in files[s]] for s in SPLITS}
        meta["source"] = str(src)
        meta["seconds"] = round(time.perf_counter() - t0, 3)
        write_metadata(out, meta)
    logger.info("MovieLens CTR set: %s rows in %.1fs -> %s", meta["rows"], meta["seconds"], out_dir)
    return meta
