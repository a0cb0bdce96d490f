"""The ceiling: Bayes-optimal AUC / log loss from true probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from recsys_emb.data.metrics import ceiling, expected_auc, log_loss, roc_auc


def test_expected_auc_matches_monte_carlo():
    rng = np.random.default_rng(0)
    p = rng.beta(1.0, 3.0, 20_000)
    mc = np.mean([roc_auc_score(rng.random(p.size) < p, p) for _ in range(20)])
    assert expected_auc(p) == pytest.approx(mc, abs=0.003)


def test_auc_and_log_loss_equal_sklearns():
    """The library's own AUC and log loss (what every run reports) are scikit-learn's numbers: continuous
    scores, many ties (float16-rounded), a rare positive class, probabilities at 0 and 1, 2 rows."""
    rng = np.random.default_rng(2)
    for rows, rate, ties in ((50_000, 0.5, False), (20_000, 0.03, True), (2, 0.5, False)):
        p = rng.beta(0.5, 0.5, rows)
        if ties:
            p = p.astype(np.float16).astype(np.float64)
            p[:100] = 0.0
            p[100:200] = 1.0
        y = (rng.random(rows) < np.clip(p * 2 * rate, 0, 1)).astype(np.int64)
        y[0], y[-1] = 0, 1
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12), (rows, rate, ties)
        assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1]), rel=1e-12), (rows, rate, ties)
    assert np.isnan(roc_auc(np.zeros(5), rng.random(5)))
    with pytest.raises(ValueError, match="differ in shape"):
        roc_auc(np.zeros(5), np.zeros(4))


def test_ceiling_values():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, 50_000)
    y = (rng.random(p.size) < p).astype(int)
    c = ceiling(y, p)
    assert c.auc == pytest.approx(roc_auc_score(y, p))
    assert c.logloss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-6)
    assert c.expected_logloss == pytest.approx(c.logloss, abs=0.01)
    assert c.rows == 50_000 and 0.45 < c.positive_rate < 0.55
    with pytest.raises(ValueError):
        ceiling(y[:10], p[:11])
