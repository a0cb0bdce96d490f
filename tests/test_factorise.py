"""Post-training truncated SVD of full tables (recsys_emb.factorise, ``recsys-emb factorise``)."""

import json

import pytest
import torch
import yaml

from recsys_emb.errors import ConfigError
from recsys_emb.factorise import factorise_layer
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.specs import FeatureSpec, Full, Hashed, LowRank


def _layer():
    torch.manual_seed(0)
    layer = EmbeddingLayer([FeatureSpec("big", Full(dim=16), cardinality=60),
                            FeatureSpec("small", Full(dim=16), cardinality=9),
                            FeatureSpec("tiny", Full(dim=16), cardinality=3),
                            FeatureSpec("h", Hashed(dim=16, buckets=7, num_hashes=2, combiner="weighted")),
                            FeatureSpec("cand", Full(dim=16), cardinality=60, shared_with="big")])
    with torch.no_grad():  # a rank-4 big table; trained-looking probe weights
        layer.ebc.embedding_bags["big"].weight.copy_(torch.randn(60, 4) @ torch.randn(4, 16))
        layer.variant("h").probe_weights.copy_(torch.tensor([0.3, -2.0]))
    return layer


BAGS = {"big": [[1], [59, 3], []], "small": [[0], [8], [4, 4]], "tiny": [[2], [], [0]], "h": [[-5], [], [10**12]], "cand": [[2], [59], [0]]}


def test_a_rank_r_table_factorised_at_rank_r_scores_the_same():
    layer = _layer()
    new, names = factorise_layer(layer, rank=4, min_rows=50)
    assert names == ["big"]  # min_rows 50
    kinds = {f.name: f.embedding for f in new.features}
    assert kinds["big"] == kinds["cand"] == LowRank(dim=16, rank=4) and kinds["small"] == kinds["tiny"] == Full(dim=16)
    with torch.no_grad():
        torch.testing.assert_close(new(kjt_from_lists(BAGS)).values(), layer(kjt_from_lists(BAGS)).values(),
                                   rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in new.parameters()) == sum(p.numel() for p in layer.parameters()) - 60 * 12 + 4 * 16


def test_a_lower_rank_keeps_the_best_approximation():
    layer = _layer()
    w = layer.ebc.embedding_bags["big"].weight.detach()
    with torch.no_grad():
        w.add_(0.01 * torch.randn_like(w))  # full rank now: rank 4 keeps the top 4 singular directions
    new, _ = factorise_layer(layer, rank=4, min_rows=50)
    approx = new.ebc.embedding_bags["big"].weight.detach() @ new.variant("big").projection.weight.detach().T
    s = torch.linalg.svdvals(w.double())
    err = torch.linalg.matrix_norm((approx - w).double())
    torch.testing.assert_close(err, s[4:].pow(2).sum().sqrt(), rtol=1e-3, atol=1e-5)  # Eckart-Young


def test_a_table_of_fewer_rows_than_the_rank_factorises_exactly():
    new, names = factorise_layer(_layer(), rank=4, min_rows=0)
    assert names == ["big", "small"]  # tiny (3 rows): 3 * 4 + 4 * 16 > 3 * 16, factorising would not save
    from recsys_emb.factorise import svd_factors
    w = torch.randn(3, 16)
    a, p = svd_factors(w, 8)  # 3 singular values, 5 zero columns
    assert a.shape == (3, 8) and p.shape == (16, 8)
    torch.testing.assert_close(a @ p.T, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank, min_rows, message", [
    (6, 0, r"--rank 6: LowRank.rank=6 must be a multiple of 4"),
    (16, 0, r"no full table has >= 0 ids and a dim above --rank 16: nothing to factorise"),
    (4, 1000, r"no full table has >= 1000 ids"),
])
def test_a_rank_that_cannot_factorise_is_refused(rank, min_rows, message):
    with pytest.raises(ConfigError, match=message):
        factorise_layer(_layer(), rank=rank, min_rows=min_rows)


def test_the_command_reports_auc_before_after_and_after_a_fine_tune(tmp_path, capsys):
    from recsys_emb.cli import main
    from recsys_emb.config import config_from_dict
    from recsys_emb.training import train
    from search_helpers import CONFIGS, make_tiny_data

    cfg = yaml.safe_load((CONFIGS / "search_tiny_train.yaml").read_text())
    cfg["data"]["path"] = str(make_tiny_data(tmp_path))
    cfg["train"]["out_dir"] = str(tmp_path / "run")
    train(config_from_dict(cfg))
    capsys.readouterr()
    assert main(["factorise", "--checkpoint", str(tmp_path / "run"), "--rank", "4", "--finetune-steps", "3",
                 "--batch-size", "2048"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fields"] and out["params_after"] < out["params_before"]
    for key in ("before", "after_svd", "after_finetune"):
        assert 0.5 < out[key]["auc"] <= 1.0 and out[key]["split"] == "valid", (key, out[key])
    assert out["after_svd"]["auc"] != out["before"]["auc"]  # rank 4 of 8: the scores changed
    assert main(["factorise", "--checkpoint", str(tmp_path / "run"), "--rank", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no full table has >= 0 ids and a dim above --rank 8") and len(err.splitlines()) == 1
