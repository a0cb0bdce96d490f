"""The command line end to end (format checks only; timing is for bench/): in real processes where the
process is what is checked (its stderr free of planner warnings, its logging set-up), else through the
command's ``main`` in this process (tests/cli_helpers.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import recsys_here
from waiting import HANG_GUARD_S


ROOT = Path(__file__).resolve().parents[2]


PLANNER_WARNINGS = ("TopologyFactory", "StorageReservation", "dense_tensor_estimate", "torchrec.distributed.planner",
                    "torchrec/distributed/planner")


def run_cli(*args, timeout=HANG_GUARD_S):
    """stdout of a successful command; a plain run (no -v) prints no TorchRec planner warning."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines() if any(w in line for w in PLANNER_WARNINGS)]
    assert not noise, "\n".join(noise)
    return proc.stdout


def test_bad_arguments_fail_clearly():
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr


def test_train_on_cuda_without_fbgemms_cuda_build_fails_before_any_work(tmp_path):
    """Checked against the installed stack (here fbgemm-gpu-cpu): one line with the install command, and no
    data generated, no run directory, no process started."""
    import fbgemm_gpu

    if fbgemm_gpu.__variant__ != "cpu":
        pytest.skip("FBGEMM's CUDA build is installed")
    for nproc in ("1", "2"):  # the command's main here: the check comes before any process is started
        proc = recsys_here("train", "--config", ROOT / "configs" / "demo.yaml", "--nproc", nproc, "--set",
                           "train.device=cuda", "--set", f"data.path={tmp_path / 'd'}", "--set",
                           f"train.out_dir={tmp_path / 'run'}")
        assert proc.returncode == 2, proc.stderr[-3000:]
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: train.device='cuda' with train.embedding_backend='torchrec': fbgemm_gpu ")
        assert "pip install torch==2.13.0 fbgemm-gpu==1.8.0 --index-url https://download.pytorch.org/whl/cu" in line
        assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()


def test_plan_prints_placement_and_bytes_per_rank(tmp_path):
    sets = [f"data.path={tmp_path / 'cl'}", "data.generate={kind: criteo-like, rows: 3000, scale: 0.001, seed: 0}",
            "embeddings.variant=unified", "train.sharding_types=[column_wise]"]
    args = ["plan", "--config", "configs/demo.yaml", "--world-size", "2", *sum((["--set", s] for s in sets), [])]
    out = run_cli(*args)
    line = next(x for x in out.splitlines() if x.startswith("unified "))
    assert "column_wise" in line and "rank0:" in line and "rank1:" in line  # the unified table cut across ranks
    assert any(x.startswith("rank 0: ") for x in out.splitlines()) and "total: " in out
    # the same command's JSON and a refused sharding type: its main in this process (cwd: the checkout)
    args[2] = str(ROOT / args[2])
    rep = json.loads(recsys_here(*args, "--json").stdout)
    assert rep["world_size"] == 2 and len(rep["rank_bytes"]) == 2
    assert rep["rank_bytes"][0] == rep["rank_bytes"][1] > 0  # equal column slices
    assert sum(rep["rank_bytes"]) == sum(t["bytes"] for t in rep["tables"])
    refused = recsys_here(*args[:-1], "train.sharding_types=[row_wise]")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: train.sharding_types: table ") and "not available on device 'cpu'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_verbose_shows_info_logs(tmp_path):
    # importing fbgemm_gpu logs through the root logger, installing a WARNING handler before the CLI
    # configures logging; -v must still show the library's INFO lines
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", "import torchrec; from recsys_emb.cli import main; raise SystemExit(main())",
                           "-v", "generate", "criteo-like", "--rows", "500", "--scale", "0.0005", "--out",
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=HANG_GUARD_S, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INFO recsys_emb.data.synthetic: generated 500 Criteo-like rows" in proc.stderr



def test_evaluate_matches_sklearn_on_the_models_own_logits(tmp_path):
    """`recsys-emb evaluate` against an independent score: the split read straight from its Parquet
    files, the loaded model's logits on it in one forward, sklearn's AUC and log loss."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from sklearn.metrics import log_loss, roc_auc_score
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from recsys_emb.config import config_from_dict
    from recsys_emb.serving import load_model
    from recsys_emb.training import prepare_data, train

    data, run, split = tmp_path / "cl", tmp_path / "run", "valid"
    cfg = config_from_dict({
        "name": "e", "seed": 0,
        "data": {"path": str(data), "batch_size": 256, "eval_batch_size": 700,
                 "generate": {"kind": "criteo-like", "rows": 3000, "scale": 0.001, "seed": 0}},
        "model": {"kind": "dlrm", "bottom_mlp": [16, 8], "top_mlp": [16]},
        "embeddings": {"variant": "hashed", "dim": 8, "min_rows": 64},
        "train": {"epochs": 1, "max_steps": 8, "log_every": 0, "progress": False, "out_dir": str(run)}})
    prepare_data(cfg)
    train(cfg)
    got = json.loads(recsys_here("evaluate", "--checkpoint", run, "--split", split).stdout)

    meta = json.loads((data / "metadata.json").read_text())
    schema = meta["schema"]
    table = pa.concat_tables([pq.read_table(data / split / f["name"]) for f in meta["files"][split]])
    n = table.num_rows
    dense = torch.tensor(np.stack([table.column(c).to_numpy() for c in schema["dense"]], axis=1), dtype=torch.float32)
    ids = torch.tensor(np.concatenate([table.column(c).to_numpy() for c in schema["sparse"]]), dtype=torch.int64)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(schema["sparse"]), values=ids,
                                              lengths=torch.ones(len(schema["sparse"]) * n, dtype=torch.int32))
    model, _, _ = load_model(run)
    with torch.no_grad():
        p = torch.sigmoid(model(dense, kjt).double()).numpy()
    y = table.column(schema["label"]).to_numpy().astype(np.float64)
    assert 0 < y.sum() < n
    assert got["split"] == split and got["rows"] == n == meta["rows"][split]
    assert got["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert got["logloss"] == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-6)


def test_a_run_or_study_name_never_leaves_runs(tmp_path, monkeypatch):
    """A name is a directory under runs/: ``../../x`` is refused, naming the key and the value (before: the
    run was written to ../../x, outside runs/, and a study's database and reports beside it)."""
    from recsys_emb.config import ConfigError
    from recsys_emb.search import load_search_config, open_study

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    args = ["train", "--config", str(ROOT / "configs" / "demo.yaml"), "--set", "name=../../x",
            "--set", "data.generate.rows=2000", "--set", "train.max_steps=1"]
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"}, cwd=work)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "name='../../x' is not a plain name" in proc.stderr
    monkeypatch.chdir(work)
    cfg = load_search_config(ROOT / "configs" / "search_dlrm_criteo_like.yaml")
    with pytest.raises(ConfigError, match=r"^--study='\.\./\.\./x' is not a plain name"):
        open_study(cfg, None, "../../x")
    with pytest.raises(ConfigError, match=r"study_name='a/b' is not a plain name"):
        load_search_config(ROOT / "configs" / "search_dlrm_criteo_like.yaml", ["study_name=a/b"])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b"]  # nothing written
