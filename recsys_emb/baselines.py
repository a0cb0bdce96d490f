"""Reference rows for a results table, computed on the same split as the models: the constant predictor
(the training positive rate) and a logistic regression on one-hot features, its regularisation chosen on
the validation split. A model that does not beat both has learned nothing a reader should trust.

Features of the logistic regression: every single-valued id column one-hot (each field its own block of
columns), every list column multi-hot (``1 / bag length`` per id, the mean of the bag's one-hots), and
the dense columns standardised with the training rows' mean and deviation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from recsys_emb.data.parquet import TableSchema, read_metadata, split_files
from recsys_emb.errors import DataError

__all__ = ["BaselineResult", "constant_predictor", "logistic_regression", "baselines", "baseline_report",
           "DEFAULT_C_GRID", "DEFAULT_SELECT_ROWS"]

logger = logging.getLogger(__name__)

DEFAULT_C_GRID: Tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""Inverse L2 strengths tried; the one with the lowest validation log loss is kept."""

DEFAULT_SELECT_ROWS = 200_000
"""Training rows each ``C`` of the grid is fitted on when choosing it (larger training splits)."""

PathLike = Union[str, Path]


@dataclass(frozen=True)
class BaselineResult:
    """One reference row: test AUC and log loss, the chosen regularisation and the validation log loss
    that chose it (None for the constant predictor), fit seconds."""

    name: str
    auc: float
    logloss: float
    C: Optional[float] = None
    valid_logloss: Optional[float] = None
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _read(directory: Path, split: str, schema: TableSchema) -> Dict[str, Any]:
    files = split_files(directory, split)
    if not files:
        raise DataError(f"{directory}/{split} has no Parquet shards; preprocess the dataset first")
    cols = list(schema.dense) + list(schema.keys) + [schema.label]
    table = pq.read_table(files if len(files) > 1 else files[0], columns=cols)
    return {c: table.column(c) for c in cols}


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, 1e-7, 1 - 1e-7)


def constant_predictor(directory: PathLike, split: str = "test") -> BaselineResult:
    """Predict the training positive rate for every row of ``split``: AUC 0.5, the log loss of knowing
    only the base rate.

    Example::

        constant_predictor("data/movielens").logloss
    """
    return _constant(Path(directory), (split,))[split]


def _constant(directory: Path, splits: Sequence[str]) -> Dict[str, BaselineResult]:
    schema = TableSchema.from_dict(read_metadata(directory)["schema"])
    y_train = _read(directory, "train", schema)[schema.label].to_numpy().astype(np.float64)
    rate = float(y_train.mean())
    out = {}
    for split in splits:
        y = _read(directory, split, schema)[schema.label].to_numpy().astype(np.float64)
        out[split] = BaselineResult("constant", auc=0.5,
                                    logloss=float(log_loss(y, _clip(np.full_like(y, rate)), labels=[0, 1])))
    return out


class _Encoder:
    """Rows of a processed split as a sparse design matrix (one-hot / multi-hot / standardised dense)."""

    def __init__(self, schema: TableSchema, train: Dict[str, Any]) -> None:
        self.schema = schema
        self.offsets: Dict[str, int] = {}
        width = 0
        for k in schema.keys:
            self.offsets[k] = width
            width += int(schema.vocab_sizes[k])
        self.sparse_width = width
        dense = self._dense(train) if schema.dense else np.zeros((0, 0))
        self.mean = dense.mean(0) if schema.dense else None
        self.std = dense.std(0) + 1e-6 if schema.dense else None

    def _dense(self, cols: Dict[str, Any]) -> np.ndarray:
        return np.stack([cols[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in self.schema.dense], 1)

    def __call__(self, cols: Dict[str, Any]) -> sp.csr_matrix:
        n = len(cols[self.schema.label])
        rows: List[np.ndarray] = []
        ids: List[np.ndarray] = []
        vals: List[np.ndarray] = []
        for k in self.schema.sparse:
            v = cols[k].to_numpy(zero_copy_only=False).astype(np.int64)
            rows.append(np.arange(n))
            ids.append(v + self.offsets[k])
            vals.append(np.ones(n))
        for k in self.schema.jagged:
            arr = cols[k].combine_chunks()
            offsets = arr.offsets.to_numpy().astype(np.int64)
            lengths = np.diff(offsets)
            flat = arr.values.to_numpy(zero_copy_only=False).astype(np.int64)[offsets[0]:offsets[-1]]
            rows.append(np.repeat(np.arange(n), lengths))
            ids.append(flat + self.offsets[k])
            vals.append(np.repeat(1.0 / np.maximum(lengths, 1), lengths))
        width = self.sparse_width
        x = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(ids))), shape=(n, width))
        x.sum_duplicates()
        if self.schema.dense:
            dense = (self._dense(cols) - self.mean) / self.std
            x = sp.hstack([x, sp.csr_matrix(dense)], format="csr")
        return x


def logistic_regression(directory: PathLike, split: str = "test", c_grid: Sequence[float] = DEFAULT_C_GRID,
                        max_iter: int = 200, select_rows: Optional[int] = DEFAULT_SELECT_ROWS) -> BaselineResult:
    """A logistic regression on one-hot features (see the module), fitted on ``train`` for every ``C`` of
    ``c_grid``; the ``C`` with the lowest validation log loss is scored on ``split``.

    ``select_rows``: when ``train`` has more rows, each ``C`` of the grid is fitted on that many training
    rows (a seeded random subset) and only the chosen ``C`` is refitted on all of them, so a grid of 4
    costs about one full fit (None: every ``C`` on every row). ``valid_logloss`` is then the subset fit's.

    Example::

        r = logistic_regression("data/criteo-like-2m")
        r.auc, r.C
    """
    return _logistic(Path(directory), (split,), c_grid, max_iter, select_rows)[split]


def _logistic(directory: Path, splits: Sequence[str], c_grid: Sequence[float], max_iter: int,
              select_rows: Optional[int]) -> Dict[str, BaselineResult]:
    """One fit (``C`` chosen on ``valid``), scored on every split of ``splits``."""
    schema = TableSchema.from_dict(read_metadata(directory)["schema"])
    t0 = time.perf_counter()
    train_cols = _read(directory, "train", schema)
    encode = _Encoder(schema, train_cols)
    x_train, y_train = encode(train_cols), train_cols[schema.label].to_numpy().astype(np.int64)
    valid_cols = _read(directory, "valid", schema)
    x_valid, y_valid = encode(valid_cols), valid_cols[schema.label].to_numpy().astype(np.int64)
    x_sel, y_sel = x_train, y_train
    subset = select_rows is not None and x_train.shape[0] > select_rows
    if select_rows is not None and subset:
        pick = np.sort(np.random.default_rng(0).choice(x_train.shape[0], select_rows, replace=False))
        x_sel, y_sel = x_train[pick], y_train[pick]
    best: Optional[Tuple[float, float, LogisticRegression]] = None
    for c in c_grid:
        model = LogisticRegression(C=c, solver="liblinear", max_iter=max_iter)
        model.fit(x_sel, y_sel)
        ll = float(log_loss(y_valid, _clip(model.predict_proba(x_valid)[:, 1]), labels=[0, 1]))
        logger.info("logistic regression C=%g on %d rows: valid log loss %.5f", c, x_sel.shape[0], ll)
        if best is None or ll < best[1]:
            best = (c, ll, model)
    assert best is not None
    c, valid_ll, model = best
    if subset:
        model = LogisticRegression(C=c, solver="liblinear", max_iter=max_iter).fit(x_train, y_train)
    seconds = round(time.perf_counter() - t0, 2)
    out = {}
    for split in splits:
        if split == "valid":
            x, y = x_valid, y_valid
        else:
            cols = _read(directory, split, schema)
            x, y = encode(cols), cols[schema.label].to_numpy().astype(np.int64)
        p = _clip(model.predict_proba(x)[:, 1])
        auc = float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else math.nan
        out[split] = BaselineResult("logistic_regression", auc=auc, logloss=float(log_loss(y, p, labels=[0, 1])),
                                    C=c, valid_logloss=valid_ll, seconds=seconds)
    return out


def baselines(directory: PathLike, split: str = "test", c_grid: Sequence[float] = DEFAULT_C_GRID,
              select_rows: Optional[int] = DEFAULT_SELECT_ROWS) -> Dict[str, BaselineResult]:
    """Both reference rows for a processed dataset directory: ``{"constant": ..., "logistic_regression": ...}``."""
    return {"constant": constant_predictor(directory, split),
            "logistic_regression": logistic_regression(directory, split, c_grid, select_rows=select_rows)}


def baseline_report(directory: PathLike, splits: Sequence[str] = ("valid", "test"),
                    c_grid: Sequence[float] = DEFAULT_C_GRID,
                    select_rows: Optional[int] = DEFAULT_SELECT_ROWS) -> Dict[str, Dict[str, BaselineResult]]:
    """Both reference rows on every split of ``splits`` (the logistic regression fitted once):
    ``{"constant": {split: result}, "logistic_regression": {split: result}}`` (``recsys-emb baseline``).
    Its ``C`` is chosen on ``valid``, so its ``valid`` row is the optimistic one; ``test`` is the fair one.

    Example::

        report = baseline_report("data/criteo-like-2m")
        report["logistic_regression"]["test"].auc
    """
    directory = Path(directory)
    return {"constant": _constant(directory, splits),
            "logistic_regression": _logistic(directory, splits, c_grid, 200, select_rows)}
