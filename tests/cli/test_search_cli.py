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
