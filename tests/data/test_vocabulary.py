"""Vocabulary: frequency-rank ids with OOV, and its files round-trip exactly."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_emb.data.vocabulary import Vocabulary, load_vocabulary, save_vocabularies
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
