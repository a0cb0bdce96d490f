"""bench/predict.py in a real process on a small generated dataset: every path scores every row, the
baseline's ratio is 1, the table and the JSON agree (format only; speed is never asserted)."""

import json

from bench_helpers import run_cli, run_script


def test_quick_run_scores_every_row_on_every_path(tmp_path):
    out = tmp_path / "res.json"
    table = run_script("predict.py", "--quick", "--workdir", str(tmp_path / "work"), "--json", str(out))
    res = json.loads(out.read_text())
    assert res["rows"] == 20000 and res["torch_threads"] == 1 and res["variant"] == "qr"
    paths = res["paths"]
    assert [p["path"] for p in paths] == ["eager forward (baseline)", "exported, fp32 tables", "exported, int8 tables",
                                          "predict, raw TSV", "predict, Parquet"]
    assert all(p["samples"] == 20000 and p["samples_per_s"] > 0 for p in paths)
    assert paths[0]["ratio"] == 1.0
    assert all(abs(p["ratio"] - p["samples_per_s"] / paths[0]["samples_per_s"]) < 1e-3 for p in paths)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["path", "samples", "samples/s", "vs"]
    assert [line.split(",")[0] for line in lines[2:]] == ["exported", "exported", "predict", "predict"]
    assert len(lines) == 6
    assert (tmp_path / "work" / "rows20000-scale0.001" / "scores.parquet").exists()


def test_the_cli_runs_it():
    assert "--variant" in run_cli("bench", "predict", "--help").stdout
