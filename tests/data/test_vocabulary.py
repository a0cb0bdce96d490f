"""Vocabulary: frequency-rank ids with OOV, and its files round-trip exactly."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_emb.data.vocabulary import (AUTO_MIN_COUNT_ROWS, Vocabulary, auto_min_count, load_vocabulary,
                                        resolve_min_count, save_vocabularies)
from recsys_emb.errors import DataError


def test_ranks_by_count_then_value_and_rare_values_are_oov():
    keys = np.array([-1, 3, 8, 20, 41], dtype=np.int64)
    counts = np.array([5, 9, 5, 1, 2], dtype=np.int64)
    v = Vocabulary.from_counts(keys, counts, min_count=2)
    assert v.size == 5 and v.oov_id == 4
    # 3 (9 times) first; -1 and 8 tie at 5 and rank by raw value; 41 next; 20 (once) is OOV.
    assert v.lookup(np.array([3, -1, 8, 41, 20, 999])).tolist() == [0, 1, 2, 3, 4, 4]
    assert v.counts.tolist() == [9, 5, 5, 2, 1]
    empty = Vocabulary.from_counts(keys, counts, min_count=100)
    assert empty.size == 1 and empty.lookup(np.array([[3, 8]])).tolist() == [[0, 0]]


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    vocabs = {}
    for name in ("A", "B"):
        keys, counts = np.unique(rng.integers(0, 50, 1000), return_counts=True)
        vocabs[name] = Vocabulary.from_counts(keys.astype(np.int64), counts.astype(np.int64), min_count=15)
    save_vocabularies(tmp_path, vocabs)
    got = load_vocabulary(tmp_path)
    assert list(got) == ["A", "B"]
    probe = np.arange(-5, 60)
    for name, v in vocabs.items():
        for attr in ("keys", "ids", "counts"):
            assert np.array_equal(getattr(got[name], attr), getattr(v, attr))
        assert np.array_equal(got[name].lookup(probe), v.lookup(probe))
    with pytest.raises(DataError, match="counts.npz not found.*holds no vocabulary"):
        load_vocabulary(tmp_path / "nothing-here")


def test_auto_min_count_folds_ids_seen_once_below_ten_thousand_training_rows():
    """``min_count: auto`` (the default of preprocess, the schema and MovieLens): 2 on the small-data table's
    4,000 training rows, 1 on its 16,000 and 80,000 and on the quality tables' 1.6M rows."""
    assert AUTO_MIN_COUNT_ROWS == 10_000
    assert [auto_min_count(n) for n in (1, 2_400, 4_000, 7_200, AUTO_MIN_COUNT_ROWS - 1)] == [2] * 5
    assert [auto_min_count(n) for n in (AUTO_MIN_COUNT_ROWS, 16_000, 80_668, 1_600_000)] == [1] * 4
    assert resolve_min_count("auto", 4_000) == 2 and resolve_min_count(4, 80_000) == 4
    for bad in (0, "two", 2.0, True):
        with pytest.raises(ValueError, match="min_count must be an int >= 1 or 'auto'"):
            resolve_min_count(bad, 4_000)
