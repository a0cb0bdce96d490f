"""``preprocess --schema`` and ``generate avazu-like`` through argparse: the summary, split by files, and
mistakes as one line ``error: ...`` with exit code 2."""

from __future__ import annotations

import json

from recsys_emb.cli import main


def test_generate_and_preprocess_with_a_schema_and_split_by_files(tmp_path, capsys):
    assert main(["generate", "avazu-like", "--rows", "600", "--out", str(tmp_path / "raw")]) == 0
    lines = (tmp_path / "raw" / "avazu_like.csv").read_text().splitlines(keepends=True)
    (tmp_path / "train.csv").write_text("".join(lines[:401]))
    (tmp_path / "valid.csv").write_text("".join(lines[:1] + lines[401:501]))
    (tmp_path / "test.csv").write_text("".join(lines[:1] + lines[501:]))
    (tmp_path / "s.yaml").write_text("label: click\ndrop: [id, hour]\ncolumns: {device_ip: {vocab: hash, buckets: 64}}\n")
    capsys.readouterr()
    assert main(["preprocess", "--schema", str(tmp_path / "s.yaml"), "--input", str(tmp_path / "train.csv"),
                 "--valid", str(tmp_path / "valid.csv"), "--test", str(tmp_path / "test.csv"),
                 "--out", str(tmp_path / "ds"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "600 rows" in out and "train 400, valid 100, test 100; split by files" in out and "device_ip=64" in out
    meta = json.loads((tmp_path / "ds" / "metadata.json").read_text())
    assert meta["inputs"][0].endswith("train.csv") and meta["schema"]["true_prob"] is None


def test_schema_mistakes_are_one_line(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("click,a\n1,x\n0,y\n")
    (tmp_path / "y.csv").write_text("click,a\n1,x\nyes,y\n")
    (tmp_path / "s.yaml").write_text("label: click\ncategorical: [b]\n")
    (tmp_path / "twice.yaml").write_text("label: click\ncategorical: [a]\ndense: {a: log1p}\n")
    (tmp_path / "ok.yaml").write_text("label: click\n")
    cases = [
        (["--schema", str(tmp_path / "s.yaml"), "--input", str(tmp_path / "t.csv")],
         "categorical: no column 'b' in the columns of"),
        (["--schema", str(tmp_path / "nope.yaml"), "--input", str(tmp_path / "t.csv")], "nope.yaml' does not exist"),
        (["--input", str(tmp_path / "t.csv"), "--valid", str(tmp_path / "t.csv")], "--valid / --test need --schema"),
        (["--schema", str(tmp_path / "twice.yaml"), "--input", str(tmp_path / "t.csv")],
         "twice.yaml: dense.a: column 'a' is named twice (also under categorical)"),
        (["--schema", str(tmp_path / "ok.yaml"), "--input", str(tmp_path / "y.csv")],
         "y.csv:3: malformed line: label column 'click' not 0/1 (value 'yes')"),
        (["--schema", str(tmp_path / "ok.yaml"), "--input", str(tmp_path / "gone.csv")],
         "input file '" + str(tmp_path / "gone.csv") + "' does not exist"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["preprocess", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_preprocess_schema_criteo_takes_the_criteo_options(tmp_path, capsys):
    row = ["1"] + ["5"] * 13 + ["0a1b2c3d"] * 26
    (tmp_path / "d.tsv").write_text("".join("\t".join([str(i % 2)] + row[1:]) + "\n" for i in range(20)))
    assert main(["preprocess", "--schema", "criteo", "--input", str(tmp_path / "d.tsv"), "--out", str(tmp_path / "o"),
                 "--min-count", "3", "--test-fraction", "0.2", "--workers", "1"]) == 0
    assert "20 rows" in capsys.readouterr().out
    meta = json.loads((tmp_path / "o" / "metadata.json").read_text())
    assert (meta["dataset"], meta["min_count"], meta["rows"]["test"], meta["valid_fraction"]) == ("criteo", 3, 4, 0.2)
