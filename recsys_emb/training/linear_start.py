"""DLRM's first-order term started as a logistic regression (``model.linear``): fitted on the training split
before the first step, its ``C`` chosen on the validation split's log loss, then held fixed while the
deep part learns what it leaves.

A logistic regression's strength on a few thousand rows is its one weight per id; DLRM reads an id only
through its embedding's dot products and the top MLP, which need more rows. Trained jointly from zero, the
term needs an L2 strength that differs between datasets by orders of magnitude (docs/training.md, "Small
data"). Fitted first, it takes the strength the data's own validation split picks, as
:func:`recsys_emb.baselines.logistic_regression` does, and the model starts where that baseline is: the
top MLP's last layer starts at weight 0 with the regression's intercept as its bias, so the model of step
0 scores exactly the fitted regression, and early stopping (on the validation log loss) keeps it unless a
later step does better.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.data.batches import ParquetBatches
from recsys_emb.models.layers import LinearTerm

__all__ = ["LINEAR_C_GRID", "LINEAR_FIT_MAX_ROWS", "fit_linear_start", "read_split_columns"]

logger = logging.getLogger(__name__)

LINEAR_C_GRID: Tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
"""The ``C`` values tried (scikit-learn's: the L2 per squared weight is ``1 / (2 C n)`` on ``n`` rows): the
grid of :data:`recsys_emb.baselines.DEFAULT_C_GRID` and one stronger penalty, since the fitted term is held
fixed and a smaller one leaves more to the deep part."""

LINEAR_FIT_MAX_ROWS = 200_000
"""At most this many training rows (a shuffled sample, seeded by the run's seed) fit the term."""


def read_split_columns(directory: Path, split: str, max_rows: Optional[int] = None, seed: int = 0,
                       batch_size: int = 65536) -> Dict[str, Any]:
    """One split as whole tensors: ``dense (N, D)`` float64, per feature ``values`` int64 and ``lengths``
    (``(N,)``) in the schema's key order, ``labels (N,)`` float64. With ``max_rows``, a shuffled sample of at
    most that many rows (seeded)."""
    shuffle = max_rows is not None
    ds = ParquetBatches(directory, split, batch_size=min(batch_size, max_rows or batch_size), shuffle=shuffle,
                        seed=seed, drop_last=False)
    keys: Optional[List[str]] = None
    dense, labels = [], []
    values: List[List[torch.Tensor]] = []
    lengths: List[List[torch.Tensor]] = []
    rows = 0
    for batch in ds:
        if keys is None:
            keys = list(batch.sparse.keys())
            values = [[] for _ in keys]
            lengths = [[] for _ in keys]
        dense.append(batch.dense.double())
        labels.append(batch.labels.double())
        for i, k in enumerate(keys):
            jt = batch.sparse[k]
            values[i].append(jt.values().long())
            lengths[i].append(jt.lengths().long())
        rows += batch.labels.shape[0]
        if max_rows is not None and rows >= max_rows:
            break
    assert keys is not None
    out: Dict[str, Any] = {"keys": keys, "dense": torch.cat(dense), "labels": torch.cat(labels),
           "values": [torch.cat(v) for v in values], "lengths": [torch.cat(n) for n in lengths]}
    if max_rows is not None and rows > max_rows:  # the last batch read past it: cut whole rows
        out["dense"], out["labels"] = out["dense"][:max_rows], out["labels"][:max_rows]
        for i in range(len(keys)):
            keep = int(out["lengths"][i][:max_rows].sum())
            out["values"][i], out["lengths"][i] = out["values"][i][:keep], out["lengths"][i][:max_rows]
    return out


class _Design:
    """A split as the sparse design matrix of a logistic regression (``scipy.sparse`` CSR, float64): per
    feature one column per id (1 per id of a summed bag, ``1 / length`` of a mean-pooled one), then the
    standardised dense features."""

    def __init__(self, cols: Dict[str, Any], rows: Sequence[int], mean_pooled: Sequence[bool],
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        import numpy as np
        import scipy.sparse as sp

        n = cols["labels"].shape[0]
        r, c, v = [], [], []
        offset = 0
        for ids, lengths, width, is_mean in zip(cols["values"], cols["lengths"], rows, mean_pooled):
            ids, lengths = ids.numpy(), lengths.numpy()
            r.append(np.repeat(np.arange(n), lengths))
            c.append(ids + offset)
            v.append(np.repeat(1.0 / np.maximum(lengths, 1), lengths) if is_mean else np.ones(ids.shape[0]))
            offset += width
        x = sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(n, offset))
        dense = ((cols["dense"] - mean) / std).numpy()
        if dense.shape[1]:
            x = sp.hstack([x, sp.csr_matrix(dense)], format="csr")
        self.x, self.xt = x, x.T.tocsr()
        self.n, self.width = n, x.shape[1]

    def matvec(self, w: torch.Tensor) -> torch.Tensor:
        """``x @ w``: ``(width,) -> (n,)``."""
        return torch.from_numpy(self.x @ w.numpy())

    def rmatvec(self, r: torch.Tensor) -> torch.Tensor:
        """``x.T @ r``: ``(n,) -> (width,)``."""
        return torch.from_numpy(self.xt @ r.numpy())


def _fit(x: _Design, y: torch.Tensor, theta: torch.Tensor, c: float, max_iter: int) -> None:
    """Weights then intercept (``theta``, updated in place) minimising the mean log loss plus
    ``||w||^2 / (2 C n)`` (the intercept unpenalised), by L-BFGS with a strong-Wolfe line search; the
    gradient is written out (``x.T @ (sigmoid(x w + b) - y) / n``), no autograd graph."""
    l2 = 1.0 / (2.0 * c * x.n)
    theta.grad = torch.zeros_like(theta)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        w, b = theta[:-1], theta[-1]
        z = x.matvec(w) + b
        loss = torch.nn.functional.softplus(z).mean() - (y * z).mean() + l2 * (w * w).sum()
        r = (torch.sigmoid(z) - y) / x.n
        theta.grad = torch.cat([x.rmatvec(r) + 2.0 * l2 * w, r.sum().reshape(1)])
        return loss

    with torch.no_grad():
        opt.step(closure)


def fit_linear_start(term: LinearTerm, head: nn.Linear, directory: Path, features: Sequence[str], seed: int = 0,
                     c_grid: Sequence[float] = LINEAR_C_GRID, max_rows: int = LINEAR_FIT_MAX_ROWS,
                     max_iter: int = 200) -> Tuple[float, float, float]:
    """Fit ``term`` as a logistic regression on ``directory``'s training split, for every ``C`` of
    ``c_grid``, keep the one with the lowest validation log loss, and start ``head`` (DLRM's last top layer,
    ``(hidden, 1)``) at weight 0 with the regression's intercept as its bias: the model then scores the
    regression. ``term``'s weights are set in place; the caller holds them fixed. Returns
    ``(C, valid log loss, intercept)``.

    Dense features are standardised inside the fit (the L2 then treats them as
    :func:`recsys_emb.baselines.logistic_regression` does) and folded back into ``term``'s raw-input map.

    Args:
        term: the first-order term, one weight vector per feature (``rows[f]``) and ``dense_in`` weights.
        head: a ``Linear(hidden, 1)``.
        directory: a processed dataset directory (``train`` and ``valid`` splits).
        features: the KJT key each of ``term``'s weight vectors reads, in order.
        seed: the training sample's shuffle, when the split has more than ``max_rows`` rows.

    Example::

        c, valid_logloss, intercept = fit_linear_start(model.linear, model.top.net[-1], "data/criteo-like",
                                                       model.feature_names)
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # vector operations on a few thousand weights: threads only add waiting
    try:
        return _fit_path(term, head, directory, features, seed, c_grid, max_rows, max_iter)
    finally:
        torch.set_num_threads(threads)


def _in_order(cols: Dict[str, Any], features: Sequence[str]) -> Dict[str, Any]:
    """``cols`` with its per-feature lists in the order of ``features`` (the term's weights)."""
    at = {k: i for i, k in enumerate(cols["keys"])}
    return {**cols, "keys": list(features), "values": [cols["values"][at[f]] for f in features],
            "lengths": [cols["lengths"][at[f]] for f in features]}


def _fit_path(term: LinearTerm, head: nn.Linear, directory: Path, features: Sequence[str], seed: int,
              c_grid: Sequence[float], max_rows: int, max_iter: int) -> Tuple[float, float, float]:
    if len(features) != len(term.weights):
        raise ValueError(f"fit_linear_start: {len(features)} feature names for {len(term.weights)} weight vectors")
    train = _in_order(read_split_columns(directory, "train", max_rows=max_rows, seed=seed), features)
    valid = _in_order(read_split_columns(directory, "valid"), features)
    rows = [int(w.shape[0]) for w in term.weights]
    dense_in = int(term.dense.shape[0])
    if dense_in:
        mean = train["dense"].mean(0)
        std = train["dense"].std(0, unbiased=False) + 1e-6
    else:
        mean = std = torch.zeros(0, dtype=torch.float64)
    x_train = _Design(train, rows, term.mean, mean, std)
    x_valid = _Design(valid, rows, term.mean, mean, std)
    y_train, y_valid = train["labels"], valid["labels"]
    theta = torch.zeros(x_train.width + 1, dtype=torch.float64)
    best: Optional[Tuple[float, float, torch.Tensor]] = None
    for c in sorted(c_grid):  # the strongest penalty first, each fit started from the last one's weights
        _fit(x_train, y_train, theta, c, max_iter)
        z = x_valid.matvec(theta[:-1]) + theta[-1]
        ll = float(torch.nn.functional.softplus(z).mean() - (y_valid * z).mean())
        logger.info("first-order term as a logistic regression, C=%g on %d rows: valid log loss %.5f", c,
                    x_train.n, ll)
        if best is None or ll < best[1]:
            best = (c, ll, theta.clone())
        elif c > best[0]:  # past the best C: weaker penalties only overfit more (the costliest fits, skipped)
            break
    assert best is not None
    c, ll, theta = best
    n_ids = sum(rows)
    intercept = float(theta[-1])
    with torch.no_grad():
        for t, fitted in zip(term.weights, theta[:n_ids].split(rows)):
            t.copy_((fitted / term.scale).to(t.dtype))
        if dense_in:
            raw = theta[n_ids:-1] / std
            term.dense.copy_((raw / term.scale).to(term.dense.dtype))
            intercept -= float((raw * mean).sum())
        head.weight.zero_()
        head.bias.fill_(intercept)
    if not math.isfinite(ll):
        raise FloatingPointError(f"the first-order term's logistic regression on {directory} diverged "
                                 f"(valid log loss {ll}); set model.linear: false")
    return c, ll, intercept
