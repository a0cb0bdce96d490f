"""The ceiling: Bayes-optimal AUC and log loss of a split, computed from the true click probabilities
that the synthetic generators keep. Every model result on generated data is reported next to it.

Also the two scores themselves, :func:`roc_auc` and :func:`log_loss` (NumPy, float64): scikit-learn's
``roc_auc_score`` and ``log_loss`` give the same numbers (tests/data/test_data_metrics.py), but importing
scikit-learn costs every ``recsys-emb train`` / ``evaluate`` process seconds of start-up.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import pyarrow.parquet as pq
from recsys_emb.data.parquet import read_metadata, split_files, time_split_sizes

__all__ = ["Ceiling", "ceiling", "expected_auc", "ceiling_from_dir", "roc_auc", "log_loss"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
_EPS = 1e-7


@dataclass(frozen=True)
class Ceiling:
    """Bayes-optimal scores of a split: the true probability used as the prediction.

    Attributes:
        auc, logloss: on the realized labels (what a perfect model would score on this very split).
        expected_auc, expected_logloss: their expectations over the label noise (labels ~ Bernoulli(p)),
            free of the sampling noise of the realized labels.
        rows, positive_rate: of the split.
    """

    auc: float
    logloss: float
    expected_auc: float
    expected_logloss: float
    rows: int
    positive_rate: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _weighted_auc(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outscores a negative, ties counting one half, where row ``i`` weighs
    ``pos[i]`` as a positive and ``neg[i]`` as a negative (pairs of a row with itself left out); NaN when
    there is no such pair."""
    order = np.argsort(scores, kind="stable")
    s, pos, neg = scores[order], pos[order], neg[order]
    first = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))  # groups of tied scores
    pos_g = np.add.reduceat(pos, first)
    neg_g = np.add.reduceat(neg, first)
    neg_below = np.concatenate(([0.0], np.cumsum(neg_g)[:-1]))
    self_pairs = float(np.sum(pos * neg))
    num = float(np.sum(pos_g * (neg_below + 0.5 * neg_g))) - 0.5 * self_pairs
    den = float(pos.sum() * neg.sum()) - self_pairs
    return num / den if den > 0 else float("nan")


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``labels`` (both ``(N,)``), ties counting one half:
    scikit-learn's ``roc_auc_score``; NaN when one class is absent.

    Example:
        >>> roc_auc(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.4, 0.4]))
        0.875
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    return _weighted_auc(s, y, 1.0 - y)


def log_loss(labels: np.ndarray, prob: np.ndarray) -> float:
    """Mean binary cross-entropy of the click probabilities ``prob`` for 0/1 ``labels`` (both ``(N,)``),
    ``prob`` clipped to float64's epsilon from 0 and 1: scikit-learn's ``log_loss(labels, prob,
    labels=[0, 1])``.

    Example:
        >>> round(log_loss(np.array([0, 1]), np.array([0.5, 0.5])), 6)
        0.693147
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    eps = np.finfo(np.float64).eps
    p = np.clip(np.asarray(prob, dtype=np.float64).ravel(), eps, 1 - eps)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and prob {p.shape} differ in shape")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def expected_auc(p: np.ndarray) -> float:
    """Expected AUC of the score ``p`` when each label is Bernoulli(``p``): the probability that a random
    positive outscores a random negative (ties count one half), weighting pairs by ``p_i (1 - p_j)``.

    Example:
        >>> round(expected_auc(np.array([0.0, 1.0])), 3)
        1.0
    """
    p = np.asarray(p, dtype=np.float64)
    return _weighted_auc(p, p, 1.0 - p)


def ceiling(labels: np.ndarray, true_prob: np.ndarray) -> Ceiling:
    """Bayes-optimal AUC and log loss from the labels and true probabilities of a split.

    Args:
        labels: 0/1 ``(N,)``.
        true_prob: the planted click probability of each row ``(N,)``.

    Example:
        >>> rng = np.random.default_rng(0); p = rng.uniform(size=10_000)
        >>> c = ceiling((rng.uniform(size=p.size) < p).astype(int), p)
        >>> 0.8 < c.auc < 0.87
        True
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    p = np.clip(np.asarray(true_prob, dtype=np.float64).ravel(), _EPS, 1 - _EPS)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and true_prob {p.shape} differ in shape")
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    return Ceiling(
        auc=roc_auc(y, p) if 0 < y.sum() < y.size else float("nan"),
        logloss=log_loss(y, p),
        expected_auc=expected_auc(p),
        expected_logloss=float(entropy.mean()),
        rows=int(y.size),
        positive_rate=float(y.mean()),
    )


def ceiling_from_dir(directory: PathLike, split: str = "test", test_fraction: float = 0.1) -> Ceiling:
    """The ceiling of one split of a processed dataset (``metadata.json`` + Parquet with ``true_prob``),
    or of a raw ``generate criteo-like`` directory (the last ``test_fraction`` of its rows, from its side
    files; ``split`` must then be ``"test"``).

    Example (``tmp``: any writable directory):
        >>> from recsys_emb.data.criteo import preprocess
        >>> from recsys_emb.data.synthetic import generate_criteo_like
        >>> g = generate_criteo_like(tmp / "raw", rows=20_000, scale=0.001, seed=0)
        >>> _ = preprocess(g.tsv, tmp / "processed")
        >>> c = ceiling_from_dir(tmp / "processed")
        >>> c.rows, 0.7 < c.auc < 1.0
        (2000, True)
        >>> ceiling_from_dir(tmp / "raw").rows  # the raw directory: its last 10% of rows
        2000
    """
    d = Path(directory)
    gen = d / "generator.json"
    if not (d / "metadata.json").exists() and gen.exists():
        if split != "test":
            raise ValueError("a raw generated directory has only its last rows as a test split; preprocess it first")
        info = json.loads(gen.read_text())
        p = np.load(d / info["true_prob"], mmap_mode="r")
        y = np.load(d / info["labels"], mmap_mode="r")
        _, _, n_test = time_split_sizes(len(p), test_fraction)
        return ceiling(np.asarray(y[len(y) - n_test:]), np.asarray(p[len(p) - n_test:]))
    meta = read_metadata(d)
    schema = meta["schema"]
    label, truth = schema.get("label", "label"), schema.get("true_prob")
    if not truth:
        raise ValueError(f"{d} has no true probabilities (real data has no ceiling); "
                         "only generated data (criteo-like, sequences) does")
    files = split_files(d, split)
    if not files:
        raise FileNotFoundError(f"{d}/{split} has no Parquet shards")
    ys, ps = [], []
    for f in files:
        t = pq.read_table(f, columns=[label, truth])
        ys.append(t.column(label).to_numpy())
        ps.append(t.column(truth).to_numpy())
    return ceiling(np.concatenate(ys), np.concatenate(ps))
