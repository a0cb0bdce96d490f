"""The ceiling: Bayes-optimal AUC / log loss from true probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recsys_emb.data.metrics import ceiling, expected_auc


def test_expected_auc_matches_monte_carlo():
    rng = np.random.default_rng(0)
    p = rng.beta(1.0, 3.0, 20_000)
    mc = np.mean([roc_auc_score(rng.random(p.size) < p, p) for _ in range(20)])
    assert expected_auc(p) == pytest.approx(mc, abs=0.003)


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
