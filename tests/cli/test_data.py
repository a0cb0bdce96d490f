"""The data commands, end to end through argparse: generate, preprocess, data ceiling."""

from __future__ import annotations

import argparse
import json

from recsys_emb.cli import main
from recsys_emb.cli.data import add_data_commands


def test_commands_register_on_a_parser():
    p = argparse.ArgumentParser()
    add_data_commands(p.add_subparsers(dest="command"))
    args = p.parse_args(["generate", "criteo-like", "--rows", "10", "--out", "x"])
    assert callable(args.func) and args.scale == 0.01
    args = p.parse_args(["preprocess", "--input", "a.tsv", "b*.gz", "--out", "o", "--on-bad-line", "skip"])
    assert args.input == ["a.tsv", "b*.gz"] and args.on_bad_line == "skip"


def test_generate_preprocess_ceiling(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "p"
    assert main(["generate", "criteo-like", "--rows", "5000", "--out", str(raw), "--scale", "0.001"]) == 0
    assert main(["preprocess", "--input", str(raw / "criteo_like.tsv"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["data", "ceiling", str(out), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["rows"] == 500 and 0.5 < c["auc"] <= 1.0
    assert main(["data", "ceiling", str(raw)]) == 0
    assert "Bayes-optimal AUC" in capsys.readouterr().out
    assert main(["generate", "sequences", "--rows", "2000", "--out", str(tmp_path / "s"), "--users", "100",
                 "--items", "500", "--categories", "20", "--max-len", "8"]) == 0
    assert main(["data", "ceiling", str(tmp_path / "s")]) == 0


def test_bad_line_error_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\t3\n")
    assert main(["preprocess", "--input", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.tsv:1" in capsys.readouterr().err
    assert main(["preprocess", "--input", str(bad), "--out", str(tmp_path / "o"), "--on-bad-line", "skip"]) == 2
    assert "no valid rows" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_used_output_directories_are_refused_unless_overwrite(tmp_path, capsys):
    raw, out, seq = tmp_path / "raw", tmp_path / "p", tmp_path / "s"
    gen = ["generate", "criteo-like", "--rows", "3000", "--out", str(raw), "--scale", "0.001"]
    pre = ["preprocess", "--input", str(raw / "criteo_like.tsv"), "--out", str(out)]
    sq = ["generate", "sequences", "--rows", "1000", "--out", str(seq), "--users", "50", "--items", "200",
          "--categories", "10", "--max-len", "4"]
    for cmd in (gen, pre, sq):
        assert main(cmd) == 0
        capsys.readouterr()
        assert main(cmd) == 2
        err = _one_error_line(capsys)
        assert "is not empty" in err and "--overwrite" in err
        assert main(cmd + ["--overwrite"]) == 0
    capsys.readouterr()
    assert main(["data", "ceiling", str(out), "--json"]) == 0


def test_every_data_command_reports_library_errors_in_one_line(tmp_path, capsys):
    assert main(["data", "ceiling", str(tmp_path)]) == 2
    assert "metadata.json not found" in _one_error_line(capsys)
    assert main(["generate", "movielens", "--out", str(tmp_path / "m"), "--src", str(tmp_path / "nowhere")]) == 2
    assert "ratings.csv not found" in _one_error_line(capsys)
    assert main(["generate", "criteo-like", "--rows", "0", "--out", str(tmp_path / "c")]) == 2
    assert "rows must be >= 1" in _one_error_line(capsys)
    assert main(["generate", "sequences", "--rows", "10", "--out", str(tmp_path / "s"), "--max-len", "0"]) == 2
    assert "min_len <= max_len" in _one_error_line(capsys)
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists() and not (tmp_path / "m").exists()


def test_preprocess_a_directory_of_days_with_workers(tmp_path, capsys):
    """The Criteo 1TB layout (day_0, day_1.gz, ...) as --input, read by 2 workers; a missing day is refused."""
    import gzip

    raw, days = tmp_path / "raw", tmp_path / "days"
    assert main(["generate", "criteo-like", "--rows", "3000", "--out", str(raw), "--scale", "0.001"]) == 0
    lines = (raw / "criteo_like.tsv").read_bytes().splitlines(keepends=True)
    days.mkdir()
    (days / "day_0").write_bytes(b"".join(lines[:1000]))
    (days / "day_1.gz").write_bytes(gzip.compress(b"".join(lines[1000:2000])))
    (days / "day_2").write_bytes(b"".join(lines[2000:]))
    capsys.readouterr()
    assert main(["preprocess", "--input", str(days), "--out", str(tmp_path / "p"), "--workers", "2",
                 "--unit-mb", "0.1"]) == 0
    assert "3,000 rows" in capsys.readouterr().out
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in meta["inputs"]] == ["day_0", "day_1.gz", "day_2"]
    assert main(["preprocess", "--input", str(days), "--out", str(tmp_path / "r"), "--workers", "2",
                 "--unit-mb", "0.1", "--parse-cache", "off"]) == 0  # parsing the text in every pass: same files
    for f in sorted((tmp_path / "p").rglob("*.parquet")):
        assert f.read_bytes() == (tmp_path / "r" / f.relative_to(tmp_path / "p")).read_bytes()
    (days / "day_1.gz").unlink()
    assert main(["preprocess", "--input", str(days), "--out", str(tmp_path / "q")]) == 2
    assert "lacks day_1" in capsys.readouterr().err
