"""The baseline rows against a direct scikit-learn computation on the same split."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from recsys_emb.baselines import baselines, constant_predictor
from recsys_emb.data.criteo import CAT_COLUMNS, INT_COLUMNS
from recsys_emb.data.parquet import split_files
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.data.criteo import preprocess


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("baselines")
    g = generate_criteo_like(base / "raw", 6000, scale=0.0005, seed=4)
    preprocess(g.tsv, base / "p")
    return base / "p"


def frame(directory, split):
    return pd.concat([pq.read_table(f).to_pandas() for f in split_files(directory, split)])


def test_constant_predictor_is_the_training_rate(data):
    rate = frame(data, "train")["label"].mean()
    y = frame(data, "test")["label"].to_numpy()
    c = constant_predictor(data)
    assert c.auc == 0.5 and c.logloss == pytest.approx(log_loss(y, np.full(len(y), rate)), abs=1e-9)


def test_logistic_regression_matches_scikit_learn_directly(data):
    got = baselines(data, c_grid=(0.1, 1.0))
    train, valid, test = (frame(data, s) for s in ("train", "valid", "test"))
    cards = {c: int(max(train[c].max(), valid[c].max(), test[c].max())) + 1 for c in CAT_COLUMNS}
    onehot = OneHotEncoder(categories=[list(range(cards[c])) for c in CAT_COLUMNS], handle_unknown="ignore")
    scaler = StandardScaler().fit(train[INT_COLUMNS].to_numpy(np.float64))

    def design(df):
        from scipy.sparse import hstack, csr_matrix

        return hstack([onehot.fit(train[CAT_COLUMNS]).transform(df[CAT_COLUMNS]),
                       csr_matrix(scaler.transform(df[INT_COLUMNS].to_numpy(np.float64)))], format="csr")

    scores = {}
    for c in (0.1, 1.0):
        m = LogisticRegression(C=c, solver="liblinear", max_iter=200).fit(design(train), train["label"])
        scores[c] = (log_loss(valid["label"], m.predict_proba(design(valid))[:, 1]), m)
    best_c = min(scores, key=lambda c: scores[c][0])
    p = scores[best_c][1].predict_proba(design(test))[:, 1]
    lr = got["logistic_regression"]
    assert lr.C == best_c
    assert lr.auc == pytest.approx(roc_auc_score(test["label"], p), abs=1e-4)
    assert lr.logloss == pytest.approx(log_loss(test["label"], p), abs=1e-4)
    assert lr.auc > 0.6 and lr.logloss < got["constant"].logloss


def test_a_large_training_split_chooses_c_on_a_subset_and_refits_on_all(data):
    """With ``select_rows`` below the training rows, the grid is fitted on a subset; the chosen C is the
    subset's choice and the scored model is the full refit (the same as a grid of that one C)."""
    sub = baselines(data, c_grid=(0.01, 1.0), select_rows=1000)["logistic_regression"]
    full_refit = baselines(data, c_grid=(sub.C,), select_rows=None)["logistic_regression"]
    assert sub.C in (0.01, 1.0)
    assert (sub.auc, sub.logloss) == pytest.approx((full_refit.auc, full_refit.logloss), abs=1e-9)
    assert sub.valid_logloss != pytest.approx(full_refit.valid_logloss, abs=1e-9)  # chosen on the subset fit
