"""`recsys-emb bench train --quick`: the end-to-end DLRM benchmark runs and reports every variant next to
TorchRec's DLRM (format only; speed is for bench/, never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_every_variant_against_torchrec(tmp_path):
    out = tmp_path / "res.json"
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "train", "--quick", "--data-dir",
                           str(tmp_path), "--json", str(out), "--pipelined", "full"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    names = [r["variant"] for r in res["results"]]
    assert names == ["torchrec_dlrm", "full", "hashed", "multi_hash", "qr", "mixed", "unified", "full+sparse_dist"]
    assert res["results"][0]["ratio_to_torchrec"] == 1.0
    for r in res["results"]:
        assert r["samples_per_s"] > 0 and r["embedding_bytes"] > 0
    # the baseline and our full tables hold the same bytes; the compressed ones less
    by = {r["variant"]: r for r in res["results"]}
    assert by["full"]["embedding_bytes"] == by["torchrec_dlrm"]["embedding_bytes"]
    assert by["full+sparse_dist"]["embedding_bytes"] == by["full"]["embedding_bytes"]
    assert by["hashed"]["embedding_bytes"] < by["full"]["embedding_bytes"]
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["model", "samples/s", "ratio", "emb", "MiB"]
    assert [line.split()[0] for line in lines[2:]] == names


def test_non_dlrm_config_is_refused():
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "train", "--config",
                           "configs/din_sequences.yaml"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode != 0 and "model.kind='din'" in proc.stderr
