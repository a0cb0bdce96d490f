"""`recsys-emb search` refuses to run as a rank of a multi-process launch (each rank would be a separate
Optuna worker sharing one process group with the others' trials)."""

from pathlib import Path

from recsys_emb.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_search_under_torchrun_is_refused_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    storage = tmp_path / "study.db"
    code = main(["search", "--config", str(ROOT / "tests" / "configs" / "search_tiny.yaml"),
                 "--storage", f"sqlite:///{storage}"])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: recsys-emb search runs as one process per worker (WORLD_SIZE=2 here")
    assert not storage.exists()


def test_supernet_search_writes_the_report_and_a_model_that_predict_scores(tmp_path, capsys):
    import json

    from search_helpers import make_tiny_data, write_configs

    data = make_tiny_data(tmp_path / "data")
    # budget: the largest candidates within it are (large 16, rest 16) and (large 8, rest 32)
    config = write_configs(tmp_path / "cfg", data, budget_bytes=560000)
    code = main(["search", "--config", str(config), "--method", "supernet", "--study", "sn",
                 "--set", "supernet.population=4", "--set", "supernet.generations=1"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp_path / "cfg" / "runs" / "sn" / "report.json").read_text())
    assert report["bytes"] <= 560000 and report["bytes"] == report["retrain"]["embedding_bytes"]
    assert report["compute"] == {**report["compute"], "supernet_steps": 20, "retrain_steps": 20}
    rows = (tmp_path / "cfg" / "runs" / "sn" / "candidates.csv").read_text().splitlines()[1:]
    assert len(rows) == report["compute"]["candidates_scored"] >= 2
    assert all(int(r.split(",")[2]) <= 560000 for r in rows)
    assert f"{report['compute']['candidates_scored']} candidates scored" in out
    scores = tmp_path / "scores.parquet"
    assert main(["predict", "--model", report["retrain"]["model_dir"], "--input",
                 str(data / "test" / "part-00000.parquet"), "--out", str(scores)]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(scores).num_rows == 2000
    # a second run into the same study directory is refused, before any training
    assert main(["search", "--config", str(config), "--method", "supernet", "--study", "sn"]) == 2
    assert "already holds a supernet search" in capsys.readouterr().err
