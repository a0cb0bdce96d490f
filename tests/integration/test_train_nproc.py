"""`recsys-emb train --nproc 2`: two real processes on loopback, tables sharded by TorchRec, metrics
over every evaluation row (gathered from both ranks, none dropped)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_training_gathers_all_rows(tmp_path):
    sets = [f"data.path={tmp_path / 'cl'}", "data.generate={kind: criteo-like, rows: 20000, scale: 0.001, seed: 0}",
            "data.batch_size=256", "data.eval_batch_size=1500", "model.bottom_mlp=[16, 8]", "model.top_mlp=[16]",
            "embeddings.dim=8", "embeddings.min_rows=64", "train.progress=false", "train.log_every=0",
            f"train.out_dir={tmp_path / 'run'}"]
    args = [sys.executable, "-m", "recsys_emb.cli", "train", "--config", str(ROOT / "configs" / "demo.yaml"),
            "--nproc", "2", *sum((["--set", s] for s in sets), [])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    meta = json.loads((tmp_path / "cl" / "metadata.json").read_text())
    assert s["world_size"] == 2
    # eval batch 1500 over 2000 rows: 2 batches, one per rank -- and a third rank-less remainder
    # would have been dropped by the training reader's equal-steps rule
    assert s["valid"]["rows"] == meta["rows"]["valid"] and s["test"]["rows"] == meta["rows"]["test"]
    assert s["valid"]["auc"] > 0.6
