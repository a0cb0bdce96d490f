"""Vocabularies: raw value -> frequency-rank id with an out-of-vocabulary id, per field, and the two files a
processed dataset keeps them in (``counts.npz``, ``vocab.npz``), so new data (a new day, a serving request)
is mapped to ids exactly as the training data was.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import numpy as np

from recsys_emb.errors import DataError

__all__ = ["Vocabulary", "COUNTS_FILE", "VOCAB_FILE", "AUTO_MIN_COUNT_ROWS", "MinCount", "auto_min_count",
           "resolve_min_count", "save_vocabularies", "load_vocabulary"]

PathLike = Union[str, Path]
MinCount = Union[int, str]
"""A ``min_count`` setting: an int >= 1, or ``"auto"`` (:func:`auto_min_count` of the training rows)."""

AUTO_MIN_COUNT_ROWS = 10_000
"""``min_count: auto`` folds the ids seen once into the OOV id below this many training rows."""


def auto_min_count(train_rows: int) -> int:
    """The ``min_count`` that ``auto`` picks for a training split of ``train_rows`` rows: 2 (ids seen once
    map to the OOV id) below :data:`AUTO_MIN_COUNT_ROWS` (10,000) training rows, else 1 (every id seen in
    training keeps its own row).

    An id seen once has a row trained by one example: on a few thousand rows such ids are most of every
    large field's ids, and their rows memorise one label each. Folded into the OOV id, they train its row
    to stand for "a rare id", which is also what ids unseen in training read at test time. Measured
    (docs/training.md, "Small data"): DLRM's test AUC rose with it on 4,000 generated Criteo-like
    training rows and on 7,200 real Criteo rows; on MovieLens's 16,000 and 80,000 training rows it
    lowered the logistic regression's by 0.009 to 0.015 (a rating seen once still says something about
    its movie), so from 10,000 rows on every id seen keeps its row.

    Example:
        >>> auto_min_count(4_000), auto_min_count(16_000)
        (2, 1)
    """
    return 2 if train_rows < AUTO_MIN_COUNT_ROWS else 1


def resolve_min_count(min_count: MinCount, train_rows: int, where: str = "min_count") -> int:
    """The int a ``min_count`` setting means for a training split of ``train_rows`` rows (``auto``:
    :func:`auto_min_count`). Raises ValueError naming ``where`` for anything but an int >= 1 or ``auto``.

    Example:
        >>> resolve_min_count("auto", 4_000), resolve_min_count(4, 4_000)
        (2, 4)
    """
    if isinstance(min_count, str) and min_count == "auto":
        return auto_min_count(train_rows)
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"{where} must be an int >= 1 or 'auto', got {min_count!r}")
    return min_count


COUNTS_FILE = "counts.npz"
"""Per field: the count of every id by rank, the last entry counting the OOV rows."""
VOCAB_FILE = "vocab.npz"
"""Per field: ``{field}_keys`` (sorted raw values) and ``{field}_ids`` (their ids)."""


@dataclass
class Vocabulary:
    """Raw value -> frequency-rank id for one field (id 0 = most frequent; ties by raw value).

    Values seen fewer than ``min_count`` times (and values never seen) map to ``oov_id = size - 1``.

    Attributes:
        keys: sorted raw values that got an id, int64.
        ids: their ids (aligned with ``keys``).
        counts: count of each id by rank, ``(size,)``; the last entry counts the OOV rows.

    Example:
        >>> v = Vocabulary.from_counts(np.array([5, 7, 9]), np.array([2, 10, 1]), min_count=2)
        >>> v.size, v.oov_id
        (3, 2)
        >>> v.lookup(np.array([7, 5, 9, 123])).tolist()
        [0, 1, 2, 2]
    """

    keys: np.ndarray
    ids: np.ndarray
    counts: np.ndarray

    @property
    def size(self) -> int:
        return int(self.counts.shape[0])

    @property
    def oov_id(self) -> int:
        return self.size - 1

    @classmethod
    def from_counts(cls, keys: np.ndarray, counts: np.ndarray, min_count: int) -> "Vocabulary":
        """The vocabulary of values ``keys`` (sorted, distinct, int64) seen ``counts`` times each."""
        kept = counts >= min_count
        k, c = keys[kept], counts[kept]
        order = np.lexsort((k, -c))  # count descending, raw value ascending
        ids = np.empty(len(k), np.int64)
        ids[order] = np.arange(len(k))
        rank_counts = np.concatenate((c[order], [int(counts[~kept].sum())])).astype(np.int64)
        return cls(keys=k, ids=ids, counts=rank_counts)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Ids of raw ``values`` (any shape), ``oov_id`` for unknown ones."""
        if len(self.keys) == 0:
            return np.full(values.shape, self.oov_id, np.int64)
        # The distinct values, sorted, are searched instead of every value: fewer searches, and sorted
        # needles let each binary search start where the previous one ended (2-3x faster on Criteo's
        # skewed fields).
        distinct, inverse = np.unique(values, return_inverse=True)
        pos = np.minimum(np.searchsorted(self.keys, distinct), len(self.keys) - 1)
        ids = np.where(self.keys[pos] == distinct, self.ids[pos], self.oov_id)
        return ids[inverse].reshape(np.shape(values))


def save_vocabularies(directory: PathLike, vocabs: Mapping[str, Vocabulary]) -> None:
    """Write ``directory/counts.npz`` and ``directory/vocab.npz`` for the fields of ``vocabs`` (in order).

    Example:
        >>> v = Vocabulary.from_counts(np.array([5, 7]), np.array([2, 10]), min_count=1)
        >>> save_vocabularies(tmp, {"C1": v})
        >>> load_vocabulary(tmp)["C1"].lookup(np.array([7, 5, 6])).tolist()
        [0, 1, 2]
    """
    d = Path(directory)
    counts: Dict[str, Any] = {c: v.counts for c, v in vocabs.items()}
    arrays: Dict[str, Any] = {**{f"{c}_keys": v.keys for c, v in vocabs.items()},
                              **{f"{c}_ids": v.ids for c, v in vocabs.items()}}
    _savez(d / COUNTS_FILE, counts)
    _savez(d / VOCAB_FILE, arrays)


def _savez(path: Path, arrays: Mapping[str, Any]) -> None:
    """``np.savez`` with a fixed time stamp on every entry: the same arrays give the same bytes (np.savez
    stamps the current time, so two runs of a preprocess would differ)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def load_vocabulary(directory: PathLike) -> Dict[str, Vocabulary]:
    """The raw-value -> id mapping of each field of a processed dataset, to categorify new data the same way.

    Raises:
        DataError: the directory lacks ``counts.npz`` / ``vocab.npz`` (preprocessed Criteo data has them, and
            so does the model directory of a model trained on it).
    """
    d = Path(directory)
    for name in (COUNTS_FILE, VOCAB_FILE):
        if not (d / name).is_file():
            raise DataError(f"{d / name} not found: {d} holds no vocabulary (a dataset written by "
                            "`recsys-emb preprocess` has one, and so does the model directory of a model trained on it)")
    with np.load(d / COUNTS_FILE) as z:
        counts = {k: z[k] for k in z.files}
    with np.load(d / VOCAB_FILE) as z:
        fields = [k[: -len("_keys")] for k in z.files if k.endswith("_keys")]
        return {c: Vocabulary(z[f"{c}_keys"], z[f"{c}_ids"], counts[c]) for c in fields}
