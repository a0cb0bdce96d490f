"""MovieLens latest-small as a CTR task, read from ../shared/data (never copied into the repository)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_emb.data.batches import ParquetBatches
from recsys_emb.data.movielens import build_movielens_ctr, default_movielens_dir, prepare_movielens


@pytest.fixture(scope="module")
def ml():
    return build_movielens_ctr(max_len=20, min_count=1)  # every training id its own rank (the reference below)


def test_default_dir_and_env(monkeypatch, tmp_path):
    assert default_movielens_dir().name == "ml-latest-small"
    assert (default_movielens_dir() / "ratings.csv").is_file()
    monkeypatch.setenv("RECSYS_EMB_DATA_DIR", str(tmp_path))
    assert default_movielens_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="RECSYS_EMB_DATA_DIR"):
        build_movielens_ctr()


def test_rows_labels_and_time_split(ml):
    tables, meta = ml
    assert meta["rows"]["total"] == 100_836
    assert sum(t.num_rows for t in tables.values()) == 100_836
    labels = np.concatenate([t["label"].to_numpy() for t in tables.values()])
    assert abs(labels.mean() - 0.482) < 0.001  # 48.2% of ratings are >= 4.0
    ts = {s: t["timestamp"].to_numpy() for s, t in tables.items()}
    assert ts["train"].max() <= ts["valid"].min() and ts["valid"].max() <= ts["test"].min()
    for t in tables.values():
        assert np.all(np.diff(t["timestamp"].to_numpy()) >= 0)
    _, meta3 = build_movielens_ctr(rating_threshold=3.0, max_len=5)
    assert meta3["positive_rate"]["train"] > meta["positive_rate"]["train"]


@pytest.mark.parametrize("history", ["rated", "liked"])
def test_history_is_strictly_earlier_and_matches_a_slow_reference(ml, history):
    tables, meta = ml if history == "rated" else build_movielens_ctr(max_len=20, history="liked")
    assert meta.get("history", "rated") == history  # "rated", the default, keeps the metadata keys as they were
    ratings = pd.read_csv(default_movielens_dir() / "ratings.csv")
    t = tables["valid"].slice(0, 300).to_pylist() + tables["train"].slice(5000, 300).to_pylist()
    train = tables["train"]
    # Movie ids are frequency ranks over training; map raw ids the same way to compare.
    vc = ratings.sort_values(["timestamp", "userId", "movieId"], kind="mergesort").iloc[:train.num_rows]["movieId"].value_counts()
    order = sorted(vc.index, key=lambda m: (-vc[m], m))
    rank = {m: i for i, m in enumerate(order)}
    oov = meta["oov_ids"]["movie_id"]
    inv_user = {}
    uvc = ratings.sort_values(["timestamp", "userId", "movieId"], kind="mergesort").iloc[:train.num_rows]["userId"].value_counts()
    for i, u in enumerate(sorted(uvc.index, key=lambda u: (-uvc[u], u))):
        inv_user[i] = u
    checked = 0
    for row in t:
        if row["user_id"] == meta["oov_ids"]["user_id"]:
            continue
        user = inv_user[row["user_id"]]
        mine = ratings[(ratings.userId == user) & (ratings.timestamp < row["timestamp"])]
        mine = mine.sort_values(["timestamp", "movieId"], kind="mergesort")
        behaviours = mine if history == "rated" else mine[mine.rating >= 4.0]  # "liked": the positives only
        want = [rank.get(m, oov) for m in behaviours["movieId"].tolist()[-20:]]
        assert row["hist_movie"] == want
        assert len(row["hist_genre"]) == len(want)
        assert row["hist_len_log"] == pytest.approx(np.log1p(len(mine)), rel=1e-6)
        checked += 1
    assert checked > 300


def test_genres_are_multi_valued(ml):
    tables, meta = ml
    names = meta["genres"]
    assert len(names) == 20 and names[0] == "Drama"
    row = tables["train"].slice(0, 1).to_pylist()[0]
    lens = np.diff(tables["train"]["genres"].combine_chunks().offsets.to_numpy())
    assert lens.max() > 3 and lens.min() >= 1
    assert row["movie_genre"] == row["genres"][0]


def test_prepared_directory_feeds_batches(tmp_path):
    meta = prepare_movielens(tmp_path, max_len=10)
    ds = ParquetBatches(tmp_path, "train", batch_size=1024, shuffle=True, seed=0)
    batch = next(iter(ds))
    assert batch.dense.shape == (1024, 2)
    assert batch.sparse.keys() == ["user_id", "movie_id", "movie_genre", "genres", "hist_movie", "hist_genre"]
    assert int(batch.sparse["hist_movie"].lengths().max()) <= 10
    assert int(batch.sparse["movie_id"].values().max()) < meta["vocab_sizes"]["movie_id"]
    with pytest.raises(ValueError, match="true_prob"):
        ParquetBatches(tmp_path, "train", with_true_prob=True)


def test_min_count_sends_rare_training_ids_to_the_oov_id(ml):
    """Users and movies rated fewer than ``min_count`` times in training share the OOV id (which training
    then covers); every other id keeps its frequency rank, and histories use the same movie ids."""
    tables, meta = ml
    rare_tables, rare = build_movielens_ctr(max_len=20, min_count=5)
    for field in ("user_id", "movie_id"):
        ids = tables["train"][field].to_numpy()
        counts = np.bincount(ids, minlength=meta["vocab_sizes"][field])
        kept = int((counts >= 5).sum())
        assert rare["vocab_sizes"][field] == kept + 1 and rare["oov_ids"][field] == kept
        new = rare_tables["train"][field].to_numpy()
        np.testing.assert_array_equal(new == kept, counts[ids] < 5)  # ranks: frequent ids keep theirs
        np.testing.assert_array_equal(new[new < kept], ids[new < kept])
    hist = rare_tables["test"]["hist_movie"].combine_chunks().values.to_numpy()
    assert hist.max() == rare["oov_ids"]["movie_id"] and rare["min_count"] == 5
    with pytest.raises(ValueError, match="min_count must be an int >= 1"):
        build_movielens_ctr(min_count=0)


def test_a_sample_of_the_ratings_is_split_and_counted_on_its_own():
    """``sample_rows``: a uniform sample of the ratings (seeded), histories and vocabularies from the sample
    alone; ``min_count: auto`` on its 4,000 training rows folds the ids seen once (2)."""
    tables, meta = build_movielens_ctr(max_len=5, sample_rows=5000, sample_seed=3)
    again, _ = build_movielens_ctr(max_len=5, sample_rows=5000, sample_seed=3)
    assert meta["rows"] == {"total": 5000, "train": 4000, "valid": 500, "test": 500}
    assert meta["sample"] == {"rows": 5000, "of": 100_836, "seed": 3} and meta["min_count"] == 2
    assert tables["test"].equals(again["test"])
    users = tables["train"].column("user_id").to_numpy()
    ids, counts = np.unique(users[users != meta["oov_ids"]["user_id"]], return_counts=True)
    assert counts.min() >= 2  # every user with an id of its own was rated at least twice in training
    with pytest.raises(ValueError, match="sample_rows must be >= 1"):
        build_movielens_ctr(sample_rows=0)
