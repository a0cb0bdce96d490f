"""`recsys-emb bench train --quick`: the end-to-end DLRM benchmark runs and reports every variant next to
TorchRec's DLRM (format only; speed is for bench/, never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_every_variant_against_torchrec(tmp_path):
    out = tmp_path / "res.json"
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "train", "--quick", "--data-dir",
                           str(tmp_path), "--json", str(out), "--pipelined", "full"], capture_output=True, text=True, cwd=ROOT, timeout=HANG_GUARD_S,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    names = [r["variant"] for r in res["results"]]
    assert names == ["torchrec_dlrm", "full", "hashed", "multi_hash", "qr", "mixed", "unified", "lowrank", "tt", "robe", "mch",
                     "full+sparse_dist"]
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
                           "configs/din_sequences.yaml"], capture_output=True, text=True, cwd=ROOT, timeout=HANG_GUARD_S,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode != 0 and "model.kind='din'" in proc.stderr


def test_cardinalities_widen_each_criteo_table_to_its_published_size():
    import pytest

    from recsys_emb.benchmarks.train_throughput import _widened
    from recsys_emb.data.criteo import CAT_COLUMNS, CRITEO_KAGGLE_CARDINALITIES
    from recsys_emb.data.parquet import TableSchema

    small = {c: 10 for c in CAT_COLUMNS}
    small["C1"] = 5_000  # a field the data already makes larger than published (1460) keeps its size
    schema = TableSchema(dense=("I1",), sparse=tuple(CAT_COLUMNS), vocab_sizes=small)
    wide = _widened(schema, "kaggle", "data/x").vocab_sizes
    assert wide["C1"] == 5_000
    assert [wide[c] for c in CAT_COLUMNS[1:]] == [max(10, n) for n in CRITEO_KAGGLE_CARDINALITIES[1:]]
    assert sum(wide.values()) > 33_000_000
    with pytest.raises(ValueError, match="lacks the Criteo fields"):
        _widened(TableSchema(dense=(), sparse=("user_id",), vocab_sizes={"user_id": 5}), "kaggle", "data/ml")
    with pytest.raises(ValueError, match="not a preset"):
        _widened(schema, "avazu", "data/x")
