"""MovieLens latest-small as a real CTR task: label = rating >= threshold, user / movie / genre fields,
and each example's preceding history of movies and genres (strictly earlier timestamps) for DIN.

A front end over the schema reader (:mod:`recsys_emb.data.tabular`): one step joins ratings and movies
and builds each rating's history (:func:`movielens_frame`); the schema reader ranks, maps, splits and
writes that table under :func:`movielens_spec` (``preprocess --schema movielens``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_emb.data.outdir import check_output_dir
from recsys_emb.data.parquet import DATASET_ENTRIES, SPLITS, TableSchema
from recsys_emb.data.tabular.reader import ranges
from recsys_emb.data.tabular.schema import TableSpec
from recsys_emb.data.vocabulary import MinCount, resolve_min_count

__all__ = ["default_movielens_dir", "load_movielens", "build_movielens_ctr", "prepare_movielens",
           "movielens_frame", "movielens_spec", "MOVIELENS_SCHEMA"]

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


def build_movielens_ctr(src_dir: Optional[PathLike] = None, *, rating_threshold: float = 4.0,
                        max_len: int = 50, test_fraction: float = 0.1, valid_fraction: Optional[float] = None,
                        min_history: int = 0, min_count: MinCount = "auto", history: str = "rated",
                        sample_rows: Optional[int] = None, sample_seed: int = 0
                        ) -> Tuple[Dict[str, pa.Table], Dict[str, Any]]:
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
      timestamp (``history="liked"``: only those rated ``>= rating_threshold``), oldest first, at most
      ``max_len`` (the most recent), and their first genres;
    - ``hist_len_log`` float32: ``log(1 + number of previous ratings)``; ``movie_year`` float32:
      ``(year - 1995) / 20`` from the title, 0 if absent.

    Args:
        src_dir: the ml-latest-small directory (default :func:`default_movielens_dir`).
        min_history: drop examples with fewer previous ratings (0 keeps every rating; empty bags are fine).
        min_count: users and movies with fewer training ratings share the OOV id, so the OOV row is
            trained on rare ids and is not an untrained row when a later split brings new users or
            movies (1: only ids unseen in training are OOV; ``auto``, the default:
            :func:`~recsys_emb.data.vocabulary.auto_min_count` of the training rows, 2 below 10,000).
        history: ``"rated"``: every earlier rating is a behaviour (watched); ``"liked"``: only the earlier
            ratings that are positives (``>= rating_threshold``), DIN's "clicked items", so the history says
            what the user liked, which a history of every rating does not.
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
    with tempfile.TemporaryDirectory(prefix="recsys-emb-movielens-") as d:
        meta = prepare_movielens(Path(d) / "ds", src_dir, rating_threshold=rating_threshold, max_len=max_len,
                                 test_fraction=test_fraction, valid_fraction=valid_fraction,
                                 min_history=min_history, min_count=min_count, history=history,
                                 sample_rows=sample_rows, sample_seed=sample_seed)
        tables = {s: pq.read_table(Path(d) / "ds" / s) if meta["rows"][s] else None for s in SPLITS}
        empty = next(t for t in tables.values() if t is not None).schema.empty_table()
        out = {s: (t if t is not None else empty) for s, t in tables.items()}
    for k in ("files", "source", "seconds"):
        meta.pop(k, None)
    return out, meta


def movielens_frame(src_dir: Optional[PathLike] = None, *, rating_threshold: float = 4.0, max_len: int = 50,
                    min_history: int = 0, history: str = "rated", sample_rows: Optional[int] = None,
                    sample_seed: int = 0) -> Tuple[pa.Table, List[str]]:
    """The joined raw table of MovieLens, one row per rating in time order (``(timestamp, userId,
    movieId)``), and the genre names by id: the step before the schema reader
    (:func:`movielens_spec`), which then ranks, maps, splits and writes it.

    Columns (``B`` rows): ``label`` int8 (``rating >= rating_threshold``), ``rating`` float32,
    ``timestamp`` int64, ``user_id`` and ``movie_id`` (raw ``userId`` / ``movieId``), ``movie_genre``
    (the movie's first listed genre) and ``genres`` (all its genres, ``list<int64>``) as genre ids,
    ``hist_movie`` (raw ``movieId`` s of the user's ratings with a strictly earlier timestamp, oldest
    first, the last ``max_len``) and ``hist_genre`` (their first genres), ``hist_len_log`` float32
    (``log(1 + number of earlier ratings)``) and ``movie_year`` float32 (``(year - 1995) / 20`` from the
    title, 0 if absent). Genre ids rank genres by the number of movies carrying them (0 = most common,
    ties by name): a ranking over ``movies.csv``, not over rating rows, which is why the step gives ids
    and the schema reads them as given (``vocab: ids``). Rows with fewer than ``min_history`` earlier
    ratings are left out. ``history``, ``sample_rows``, ``sample_seed``: as in :func:`build_movielens_ctr`
    (``"liked"``: the histories hold only earlier positives; a sample is drawn before anything else).
    """
    if history not in ("rated", "liked"):
        raise ValueError(f"history must be 'rated' or 'liked', got {history!r}")
    if sample_rows is not None and sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, got {sample_rows}")
    ratings, movies = load_movielens(src_dir)
    if sample_rows is not None and sample_rows < len(ratings):
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
    label = (ratings["rating"].to_numpy() >= rating_threshold).astype(np.int8)
    # Behaviours in by-user order: every rating, or the liked ones only (positions of the kept ones).
    behaviour = np.ones(n_all, bool) if history == "rated" else label[by_user].astype(bool)
    kept_pos = np.flatnonzero(behaviour)
    before = np.concatenate(([0], np.cumsum(behaviour)))  # behaviours before each by-user position
    h_end = np.empty(n_all, np.int64)
    h_end[by_user] = before[ts_start]  # index into kept_pos, one past the last earlier behaviour
    h_len = np.empty(n_all, np.int64)
    h_len[by_user] = np.minimum(before[ts_start] - before[user_start], max_len)
    h_start = h_end - h_len

    rows = np.flatnonzero(prior >= min_history)
    hs, hl = h_start[rows], h_len[rows]
    take = kept_pos[ranges(hs, hl)]
    h_off = pa.array(np.concatenate(([0], np.cumsum(hl))).astype(np.int32))
    mr = movie_row[rows]
    gl = g_len[mr]
    gen_off = pa.array(np.concatenate(([0], np.cumsum(gl))).astype(np.int32))
    frame = pa.table({
        "label": pa.array(label[rows], pa.int8()),
        "rating": pa.array(ratings["rating"].to_numpy()[rows]),
        "timestamp": pa.array(ts[rows]),
        "user_id": pa.array(users[rows]),
        "movie_id": pa.array(movie[rows]),
        "movie_genre": pa.array(first_genre[mr]),
        "genres": pa.ListArray.from_arrays(gen_off, pa.array(g_ids[ranges(g_off[mr], gl)], pa.int64())),
        "hist_movie": pa.ListArray.from_arrays(h_off, pa.array(movie[by_user][take], pa.int64())),
        "hist_genre": pa.ListArray.from_arrays(h_off, pa.array(first_genre[movie_row][by_user][take], pa.int64())),
        "hist_len_log": pa.array(np.log1p(prior[rows]).astype(np.float32)),
        "movie_year": pa.array(year_feat[mr]),
    })
    return frame, names


def movielens_spec(genres: int, *, max_len: int = 50, test_fraction: float = 0.1,
                   valid_fraction: Optional[float] = None, min_count: MinCount = "auto") -> TableSpec:
    """The schema of :func:`movielens_frame`'s table (``genres``: the number of genre ids): ``user_id``
    and ``movie_id`` ranked by their training ratings (``values: int``: ties by raw id), ``hist_movie``
    in ``movie_id``'s vocabulary (counted over ``movie_id`` alone), the genre columns as given ids,
    ``rating`` and ``timestamp`` kept, split by position (the rows are in time order)."""
    ids = {"vocab": "ids", "buckets": genres}
    return TableSpec.from_dict({
        "format": "parquet", "label": "label", "keep": ["rating", "timestamp"],
        "categorical": ["user_id", "movie_id", "movie_genre"], "multi_valued": {"genres": "|"},
        "sequence": {"hist_movie": {"max_len": max_len, "candidate": "movie_id", "counts": "candidate"},
                     "hist_genre": {"max_len": max_len}},
        "dense": {"hist_len_log": "none", "movie_year": "none"}, "missing_flags": False, "min_count": min_count,
        "columns": {"user_id": {"values": "int"}, "movie_id": {"values": "int"}, "hist_movie": {"values": "int"},
                    "movie_genre": ids, "genres": ids, "hist_genre": ids},
        "split": {"valid": test_fraction if valid_fraction is None else valid_fraction, "test": test_fraction},
    }, source="movielens")


def prepare_movielens(out_dir: PathLike, src_dir: Optional[PathLike] = None, *, overwrite: bool = False,
                      rating_threshold: float = 4.0, max_len: int = 50, test_fraction: float = 0.1,
                      valid_fraction: Optional[float] = None, min_history: int = 0, min_count: MinCount = "auto",
                      history: str = "rated", sample_rows: Optional[int] = None, sample_seed: int = 0,
                      workers: Optional[int] = 1) -> Dict[str, Any]:
    """MovieLens as a processed dataset directory (Parquet splits + ``metadata.json``) that
    :class:`recsys_emb.data.batches.ParquetBatches` reads: :func:`movielens_frame` (the join and the
    histories) read by the schema reader (:func:`recsys_emb.data.tabular.preprocess_frame`) under
    :func:`movielens_spec`; the arguments are :func:`build_movielens_ctr`'s.

    The directory appears whole or not at all (written into a temporary sibling, then renamed); a
    non-empty ``out_dir`` is refused unless ``overwrite``, which replaces it whole.

    Example (needs MovieLens ml-latest-small, see :func:`build_movielens_ctr`; ``tmp``: any writable
    directory):
        >>> meta = prepare_movielens(tmp / "movielens", max_len=20)
        >>> sorted(p.name for p in (tmp / "movielens").iterdir())
        ['metadata.json', 'test', 'train', 'valid']
    """
    from recsys_emb.data.tabular.preprocess import DatasetFinish, preprocess_frame

    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    resolve_min_count(min_count, 0)  # refuses a bad setting before any work
    t0 = time.perf_counter()
    src = Path(src_dir) if src_dir is not None else default_movielens_dir()
    check_output_dir(out_dir, overwrite=overwrite, owned=DATASET_ENTRIES, command="generate movielens", inputs=[src])
    frame, names = movielens_frame(src, rating_threshold=rating_threshold, max_len=max_len, min_history=min_history,
                                   history=history, sample_rows=sample_rows, sample_seed=sample_seed)
    n_ratings = None if sample_rows is None else len(load_movielens(src)[0])
    spec = movielens_spec(len(names), max_len=max_len, test_fraction=test_fraction, valid_fraction=valid_fraction,
                          min_count=min_count)

    def metadata(table_meta: Dict[str, Any]) -> Dict[str, Any]:
        rows = table_meta["rows"]
        bounds = np.cumsum([0, rows["train"], rows["valid"], rows["test"]])
        label = frame.column("label").to_numpy()
        ts = frame.column("timestamp").to_numpy()
        part = {s: slice(int(bounds[i]), int(bounds[i + 1])) for i, s in enumerate(SPLITS)}
        sizes = table_meta["vocab_sizes"]
        vocab = {"user_id": sizes["user_id"], "movie_id": sizes["movie_id"], "movie_genre": len(names),
                 "genres": len(names), "hist_movie": sizes["movie_id"], "hist_genre": len(names)}
        schema = TableSchema(dense=MOVIELENS_SCHEMA.dense, sparse=MOVIELENS_SCHEMA.sparse,
                             jagged=MOVIELENS_SCHEMA.jagged, label="label", vocab_sizes=vocab)
        return {
            "dataset": "movielens-latest-small",
            "format_version": 1,
            "rows": rows,
            "rating_threshold": rating_threshold,
            "max_len": max_len,
            "min_history": min_history,
            "min_count": table_meta["min_count"],
            **({"sample": {"rows": sample_rows, "of": n_ratings, "seed": sample_seed}}
               if sample_rows is not None and n_ratings is not None and sample_rows < n_ratings else {}),
            **({"history": history} if history != "rated" else {}),  # "rated" (the default) keeps the old keys
            "positive_rate": {s: float(label[r].mean()) if r.stop > r.start else float("nan") for s, r in part.items()},
            "time_ranges": {s: [int(ts[r].min()), int(ts[r].max())] if r.stop > r.start else None
                            for s, r in part.items()},
            "genres": names,
            "vocab_sizes": vocab,
            "oov_ids": {"user_id": table_meta["oov_ids"]["user_id"], "movie_id": table_meta["oov_ids"]["movie_id"]},
            "schema": schema.to_dict(),
            "licence": "GroupLens MovieLens usage licence: research only, no endorsement, cite Harper & Konstan "
                       "(2015), redistribution only under the same conditions, no commercial use without permission",
            "files": table_meta["files"],
            "source": str(src),
            "seconds": round(time.perf_counter() - t0, 3),
        }

    meta = preprocess_frame(frame, spec, out_dir, overwrite=overwrite, workers=workers,
                            finish=DatasetFinish(metadata, save_vocabulary=False))
    logger.info("MovieLens CTR set: %s rows in %.1fs -> %s", meta["rows"], meta["seconds"], out_dir)
    return meta
