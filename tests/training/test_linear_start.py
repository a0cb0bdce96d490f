"""``model.linear``: DLRM's first-order term started as a logistic regression fitted on the training split
(``recsys_emb.training.linear_start``), its C chosen on the validation log loss, then held fixed; the model
of step 0 scores exactly that regression and is a candidate of early stopping."""

import json

import numpy as np
import pytest
import torch

from recsys_emb.config import config_from_dict
from recsys_emb.data.parquet import read_metadata
from recsys_emb.models.layers import LinearTerm
from recsys_emb.training import train
from recsys_emb.training.checkpoint import checkpoint_dir
from recsys_emb.training.linear_start import LINEAR_C_GRID, fit_linear_start, read_split_columns

from generated_data import criteo_like_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return criteo_like_dir(tmp_path_factory.mktemp("linear"), rows=6000)


def sklearn_design(path, split, mean, std):
    """The same features as scikit-learn sees them: one-hot ids (offset per field), standardised dense."""
    import scipy.sparse as sp

    cols = read_split_columns(path, split)
    vocab = read_metadata(path)["schema"]["vocab_sizes"]
    n = cols["labels"].shape[0]
    offsets = np.cumsum([0] + [int(vocab[k]) for k in cols["keys"]])
    rows = np.concatenate([np.arange(n)] * len(cols["values"]))
    ids = np.concatenate([v.numpy() + o for v, o in zip(cols["values"], offsets[:-1])])
    x = sp.csr_matrix((np.ones(rows.shape[0]), (rows, ids)), shape=(n, int(offsets[-1])))
    dense = cols["dense"].numpy()
    return sp.hstack([x, sp.csr_matrix((dense - mean) / std)], format="csr"), cols


def test_fit_is_scikit_learns_logistic_regression_at_the_validation_chosen_c(data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    schema = read_metadata(data)["schema"]
    keys = schema["sparse"]
    term = LinearTerm([int(schema["vocab_sizes"][k]) for k in keys], ["sum"] * len(keys), dense_in=len(schema["dense"]))
    head = torch.nn.Linear(5, 1)
    c, valid_ll, intercept = fit_linear_start(term, head, data, keys)

    train_dense = read_split_columns(data, "train")["dense"].numpy()
    mean, std = train_dense.mean(0), train_dense.std(0) + 1e-6
    x_train, train_cols = sklearn_design(data, "train", mean, std)
    x_valid, valid_cols = sklearn_design(data, "valid", mean, std)
    y_train, y_valid = train_cols["labels"].numpy(), valid_cols["labels"].numpy()
    fits = {g: LogisticRegression(C=g, solver="lbfgs", max_iter=5000, tol=1e-10).fit(x_train, y_train)
            for g in LINEAR_C_GRID}
    losses = {g: log_loss(y_valid, m.predict_proba(x_valid)[:, 1]) for g, m in fits.items()}
    assert c == min(losses, key=losses.get), losses
    assert valid_ll == pytest.approx(losses[c], abs=1e-5)

    # the term (raw dense input) plus the head's bias scores what scikit-learn's fit scores
    with torch.no_grad():
        ours = term(valid_cols["dense"].float(), valid_cols["values"], valid_cols["lengths"]).double() + intercept
    np.testing.assert_allclose(torch.sigmoid(ours).numpy(), fits[c].predict_proba(x_valid)[:, 1], atol=2e-4)
    assert float(head.weight.detach().abs().sum()) == 0.0 and float(head.bias.detach()) == pytest.approx(intercept)


def run_cfg(data, out, **model):
    return config_from_dict({
        "name": "lin", "seed": 0,
        "data": {"path": str(data), "batch_size": 256, "eval_batch_size": 4096},
        "model": {"kind": "dlrm", "bottom_mlp": [16, 8], "top_mlp": [16], **model},
        "embeddings": {"variant": "hashed", "dim": 8, "min_rows": 64, "compression": 4},
        "train": {"epochs": 2, "log_every": 0, "progress": False, "out_dir": str(out), "eval_every": 5,
                  "keep_last": 100},
    })


def test_training_starts_from_the_regression_and_holds_the_term_fixed(data, tmp_path):
    s = train(run_cfg(data, tmp_path))  # model.linear: auto, the default, on 4,800 training rows
    assert s["linear"] is True
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    first = next(r for r in rows if r.get("split") == "valid")
    assert first["step"] == 0  # the fitted regression, scored before the first step

    from recsys_emb.serving import load_model

    model, _, _ = load_model(tmp_path)
    start, _, _ = load_model(checkpoint_dir(tmp_path, 0))
    for a, b in zip(model.linear.parameters(), start.linear.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # held fixed while the deep part trained
    assert float(start.top.net[-1].weight.detach().abs().sum()) == 0.0  # step 0: the deep part adds nothing yet
    # early stopping kept step 0 or a later step that beat it on the validation log loss
    kept = next(r for r in rows if r.get("split") == "valid" and r["step"] == s["model_step"])
    assert kept["logloss"] <= first["logloss"]


def test_linear_false_trains_without_the_term(data, tmp_path):
    s = train(run_cfg(data, tmp_path, linear=False))
    assert s["linear"] is False
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert all(r["step"] > 0 for r in rows)
