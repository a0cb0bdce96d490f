"""TorchRec's sparse-dist train pipeline against the plain loop, in one process (two ranks:
tests/integration/test_train_nproc.py): the same losses, metrics and weights, and the runs it cannot
pipeline fall back to the plain loop."""

import json

import pytest
import torch

from recsys_emb.config import config_from_dict
from recsys_emb.errors import ConfigError
from recsys_emb.serving import load_model
from recsys_emb.training import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from recsys_emb.training import prepare_data

    base = tmp_path_factory.mktemp("pipeline_data")
    prepare_data(config_from_dict({"data": {"path": str(base / "cl"), "generate": {
        "kind": "criteo-like", "rows": 12000, "scale": 0.001, "seed": 0}}}))
    return base / "cl"


def cfg(data, out, pipeline, **over):
    d = {"name": "pipe", "seed": 0,
         "data": {"path": str(data), "batch_size": 1024, "eval_batch_size": 4096},
         "model": {"kind": "dlrm", "bottom_mlp": [16, 8], "top_mlp": [16], "dropout": 0.1},
         "embeddings": {"variant": "qr", "dim": 8, "min_rows": 64, "compression": 4},
         "optim": {"embedding_l2": 1e-4, "dense_warmup_steps": 4, "dense_decay": "cosine"},
         "train": {"epochs": 2, "eval_every": 7, "checkpoint_every": 5, "log_every": 1, "progress": False,
                   "out_dir": str(out), "pipeline": pipeline}}
    for key, value in over.items():
        section, name = key.split("__")
        d.setdefault(section, {})[name] = value
    return config_from_dict(d)


def train_losses(out):
    return [r["loss"] for r in map(json.loads, open(out / "metrics.jsonl")) if r.get("split") == "train"]


def test_pipelined_loop_trains_the_model_the_plain_loop_trains(data, tmp_path):
    # two epochs with evaluations, checkpoints, dropout, the L2 on rows read and a warmup + cosine schedule:
    # the pipeline reads ahead inside a segment only, and runs the same steps in the same order
    runs = {p: train(cfg(data, tmp_path / p, p)) for p in ("sparse_dist", "none")}
    a, b = runs["sparse_dist"], runs["none"]
    assert a["train_pipeline"] == "sparse_dist" and b["train_pipeline"] == "none"
    assert a["steps"] == b["steps"] > 14  # past the first epoch's end
    la, lb = train_losses(tmp_path / "sparse_dist"), train_losses(tmp_path / "none")
    assert len(la) == len(lb) == a["steps"]
    # in one process the two loops run the same float operations in the same order: equal to the last bit
    assert la == lb, max(abs(x - y) for x, y in zip(la, lb))
    for split in ("valid", "test"):
        for key in ("auc", "logloss"):
            assert a[split][key] == b[split][key], (split, key, a[split][key], b[split][key])
    wa = load_model(tmp_path / "sparse_dist")[0].state_dict()
    wb = load_model(tmp_path / "none")[0].state_dict()
    assert wa.keys() == wb.keys()
    unequal = {k: float((wa[k] - wb[k]).abs().max()) for k in wa if not torch.equal(wa[k], wb[k])}
    assert not unequal, unequal


def test_pipeline_falls_back_to_the_plain_loop_where_torchrec_cannot_pipeline(data, tmp_path):
    batched = train(cfg(data, tmp_path / "tb", "sparse_dist", train__embedding_backend="table_batched",
                        train__max_steps=3, train__eval_every=0, optim__embedding_l2=0.0))
    assert batched["train_pipeline"] == "none" and batched["steps"] == 3


def test_din_trains_with_the_plain_loop_under_the_default(tmp_path):
    from recsys_emb.data.sequences import SequenceConfig, generate_sequences

    generate_sequences(tmp_path / "seq", rows=3000, seed=0,
                       config=SequenceConfig(users=100, items=200, categories=10, max_len=5, seed=0))
    s = train(config_from_dict({
        "name": "din", "seed": 0, "data": {"path": str(tmp_path / "seq"), "batch_size": 256},
        "model": {"kind": "din", "item_pairs": [["cand_item", "hist_item"]], "attention_mlp": [8], "mlp": [8]},
        "embeddings": {"variant": "hashed", "dim": 4, "min_rows": 64},
        "train": {"max_steps": 3, "progress": False, "out_dir": str(tmp_path / "run")}}))
    assert s["train_pipeline"] == "none" and s["steps"] == 3


def test_unknown_pipeline_is_refused_with_the_choices(data, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.pipeline.*'ring'.*sparse_dist.*none"):
        cfg(data, tmp_path, "ring").validate()
