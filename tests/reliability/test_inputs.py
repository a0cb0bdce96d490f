"""Edge cases of input: a batch of size 0 gives an empty output for every table backend and model; bag
lengths that do not match the values name the feature; config mistakes are one line naming the file;
a run's data path relative to where it trained is named as such."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import recsys_here
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb import EmbeddingLayer, FeatureSpec, Full, Hashed, MixedDimension, QuotientRemainder, SequenceEmbeddingLayer
from recsys_emb.errors import DataError, InvalidInputError
from recsys_emb.models import DIN, DLRM
from recsys_emb.sharding import shard_model
from recsys_emb.tables import EmbeddingOptimizer, TableBatched
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]
SPECS = [FeatureSpec("a", Full(dim=8), cardinality=10), FeatureSpec("b", Hashed(dim=8, buckets=7, num_hashes=2)),
         FeatureSpec("c", QuotientRemainder(dim=8, collisions=3), cardinality=20),
         FeatureSpec("d", MixedDimension(8, boundaries=(3,), block_dims=(8, 4)), cardinality=12)]


def empty_kjt(keys):
    return KeyedJaggedTensor(keys=list(keys), values=torch.zeros(0, dtype=torch.long),
                             lengths=torch.zeros(0, dtype=torch.int32), stride=0)


@pytest.mark.parametrize("backend", ["torchrec", "sharded", "table_batched"])
def test_a_batch_of_size_zero_gives_an_empty_output(backend, single_process_group):
    layer = EmbeddingLayer(SPECS)
    model = {"torchrec": lambda: layer, "sharded": lambda: shard_model(layer, EmbeddingOptimizer("sgd")),
             "table_batched": lambda: TableBatched(layer, EmbeddingOptimizer("sgd"))}[backend]()
    out = model(empty_kjt("abcd"))
    assert out.values().shape == (0, 32) and out.keys() == ["a", "b", "c", "d"]


def test_models_score_an_empty_batch():
    dlrm = DLRM(EmbeddingLayer(SPECS), dense_in=3, bottom_mlp=(8,)).eval()
    assert dlrm(torch.zeros(0, 3), empty_kjt("abcd")).shape == (0,)
    item = FeatureSpec("item", Full(dim=8), cardinality=10, pooling="none")
    hist = FeatureSpec("hist", Full(dim=8), cardinality=10, pooling="none", shared_with="item")
    seq = SequenceEmbeddingLayer([item, hist])
    out = seq(empty_kjt(["item", "hist"]))
    assert out["hist"].values().shape == (0, 8) and out["hist"].lengths().numel() == 0
    din = DIN(seq, [("item", "hist")], attention_mlp=(4,), mlp=(4,)).eval()
    assert din(None, empty_kjt(["item", "hist"])).shape == (0,)


@pytest.mark.parametrize("lengths, values, match", [
    ([1, 2, 1, 1, 1, 1, 1, 1], list(range(8)), r"feature 'd': its bag lengths need ids 7..8 but the "
                                              r"KeyedJaggedTensor holds 8 values"),
    ([1, 1, 1, 1, 1, 1, 1, 1], list(range(9)), r"holds 9 values but its bag lengths add up to 8.*after feature 'd'"),
    ([1, 1, -1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6], r"feature 'b': negative bag lengths \[-1\]"),
])
def test_lengths_that_do_not_match_the_values_name_the_feature(lengths, values, match):
    kjt = KeyedJaggedTensor(keys=list("abcd"), values=torch.tensor(values), lengths=torch.tensor(lengths, dtype=torch.int32))
    with pytest.raises(InvalidInputError, match=match):
        EmbeddingLayer(SPECS)(kjt)


def test_lengths_per_key_that_contradict_the_lengths_name_the_feature():
    kjt = KeyedJaggedTensor(keys=["a", "b"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 1, 1, 0]),
                            stride=2, length_per_key=[1, 2])
    with pytest.raises(InvalidInputError, match=r"feature 'a': its bag lengths add up to 2 ids, but the "
                                                r"KeyedJaggedTensor declares 1"):
        EmbeddingLayer(SPECS[:2])(kjt)


def run_cli(*args, cwd=ROOT, verbose=False):
    return subprocess.run([sys.executable, "-m", "recsys_emb.cli", *(["-v"] if verbose else []), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=HANG_GUARD_S,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})


def test_config_mistakes_are_one_line_naming_the_file_key_and_type(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("base: " + str(ROOT / "configs" / "demo.yaml") + "\ntrain: {max_steps: 4.5}\n")
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == f"error: {cfg}: train.max_steps=4.5 has the wrong type; expected an integer or null\n"
    verbose = run_cli("train", "--config", str(cfg), verbose=True)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "ConfigError" in verbose.stderr
    cfg.write_text("train: {max_steps: 4\n")
    proc = run_cli("train", "--config", str(cfg))
    assert proc.returncode == 2 and f"error: {cfg}: not valid YAML at line" in proc.stderr


def test_a_relative_data_path_is_named_as_relative_to_where_training_ran(tmp_path, monkeypatch):
    from recsys_emb.config import config_from_dict
    from recsys_emb.serving import evaluate_checkpoint
    from recsys_emb.training import train

    work = tmp_path / "work"
    work.mkdir()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        summary = train(config_from_dict({
            "name": "rel", "data": {"path": "data/cl", "generate": {"kind": "criteo-like", "rows": 3000,
                                                                    "scale": 0.0005, "seed": 0}, "batch_size": 256},
            "model": {"kind": "dlrm", "bottom_mlp": [8], "top_mlp": [8]},
            "embeddings": {"variant": "hashed", "dim": 8, "min_rows": 64},
            "train": {"max_steps": 3, "log_every": 0, "progress": False, "out_dir": "runs/rel"}}))
    finally:
        os.chdir(cwd)
    # from another directory: found through the absolute path the checkpoint recorded
    m = evaluate_checkpoint(work / "runs" / "rel")
    assert m["auc"] == pytest.approx(summary["test"]["auc"], abs=1e-9)
    shutil.move(str(work / "data"), str(tmp_path / "moved"))
    with pytest.raises(DataError, match=r"data.path='data/cl' \(relative to the directory training ran in; here that "
                                        r"is .*\) has no metadata.json, nor at the recorded .*work/data/cl"):
        evaluate_checkpoint(work / "runs" / "rel")
    monkeypatch.chdir(tmp_path)  # the command's main in this process (tests/cli_helpers.py), from tmp_path
    proc = recsys_here("evaluate", "--checkpoint", work / "runs" / "rel")
    assert proc.returncode == 2 and "relative to the directory training ran in" in proc.stderr
