"""The command line end to end, in real processes (format checks only; timing is for bench/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]


PLANNER_WARNINGS = ("TopologyFactory", "StorageReservation", "dense_tensor_estimate", "torchrec.distributed.planner",
                    "torchrec/distributed/planner")


def run_cli(*args, timeout=300):
    """stdout of a successful command; a plain run (no -v) prints no TorchRec planner warning."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines() if any(w in line for w in PLANNER_WARNINGS)]
    assert not noise, "\n".join(noise)
    return proc.stdout


def test_demo_prints_memory_table():
    out = run_cli("demo", "--cap", "20000", "--batch", "64")
    lines = out.splitlines()
    for variant in ("full", "hashed", "multi_hash", "qr", "mixed", "unified"):
        row = next(line for line in lines if line.startswith(variant + " "))
        assert "MiB" in row or "KiB" in row
    assert "100.0%" in next(line for line in lines if line.startswith("full "))


def test_bench_embeddings_quick_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    out = run_cli("bench", "embeddings", "--quick", "--json", str(path))
    assert "torchrec_baseline" in out
    data = json.loads(path.read_text())
    names = [r["variant"] for r in data["results"]]
    assert names[0] == "torchrec_baseline"
    assert {"full", "hashed", "multi_hash", "qr", "mixed", "unified"} <= set(names)
    for r in data["results"]:
        assert set(r) >= {"samples_per_s", "ratio_to_torchrec", "params", "bytes"}
        assert r["samples_per_s"] > 0 and r["bytes"] == 4 * r["params"]
    assert data["results"][0]["ratio_to_torchrec"] == 1.0


def test_bench_embeddings_measures_extra_presets_and_writes_the_doc_block(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n<!-- embedding_throughput:begin -->\nold\n<!-- embedding_throughput:end -->\n")
    path = tmp_path / "bench.json"
    run_cli("bench", "embeddings", "--quick", "--variants", "qr", "qr_big", "--preset", "qr_big=qr:min_rows=1000",
            "--json", str(path), "--readme", str(doc))
    rows = {r["variant"]: r for r in json.loads(path.read_text())["results"]}
    assert set(rows) == {"torchrec_baseline", "qr", "qr_big"}
    assert rows["qr_big"]["params"] > rows["qr"]["params"]  # fields of 64..999 ids stay full tables
    text = doc.read_text()
    assert "old" not in text and "qr_big " in text and "--preset qr_big=qr:min_rows=1000" in text


@pytest.mark.parametrize("preset, message", [("qr_big", "NAME=VARIANT"), ("x=qr:rows=3", "knob=value with a knob in"),
                                             ("x=nope", "embeddings.variant='nope'"), ("qr=qr", "built-in variant")])
def test_bench_embeddings_bad_preset_is_refused_with_the_fix(preset, message):
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "embeddings", "--quick", "--variants", "qr",
                           "--preset", preset], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_bad_arguments_fail_clearly():
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr


def test_plan_prints_placement_and_bytes_per_rank(tmp_path):
    sets = [f"data.path={tmp_path / 'cl'}", "data.generate={kind: criteo-like, rows: 3000, scale: 0.001, seed: 0}",
            "embeddings.variant=unified", "train.sharding_types=[column_wise]"]
    args = ["plan", "--config", "configs/demo.yaml", "--world-size", "2", *sum((["--set", s] for s in sets), [])]
    out = run_cli(*args)
    line = next(x for x in out.splitlines() if x.startswith("unified "))
    assert "column_wise" in line and "rank0:" in line and "rank1:" in line  # the unified table cut across ranks
    assert any(x.startswith("rank 0: ") for x in out.splitlines()) and "total: " in out
    rep = json.loads(run_cli(*args, "--json"))
    assert rep["world_size"] == 2 and len(rep["rank_bytes"]) == 2
    assert rep["rank_bytes"][0] == rep["rank_bytes"][1] > 0  # equal column slices
    assert sum(rep["rank_bytes"]) == sum(t["bytes"] for t in rep["tables"])
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args[:-1], "train.sharding_types=[row_wise]"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "not available on device 'cpu'" in proc.stderr


def test_verbose_shows_info_logs(tmp_path):
    # importing fbgemm_gpu logs through the root logger, installing a WARNING handler before the CLI
    # configures logging; -v must still show the library's INFO lines
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", "import torchrec; from recsys_emb.cli import main; raise SystemExit(main())",
                           "-v", "generate", "criteo-like", "--rows", "500", "--scale", "0.0005", "--out",
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INFO recsys_emb.data.synthetic: generated 500 Criteo-like rows" in proc.stderr
