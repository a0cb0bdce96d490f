"""``recsys-emb export`` and ``predict``: mistakes are one line on stderr with exit code 2 (the working
paths run in real processes in tests/test_scoring.py)."""

from recsys_emb.cli import build_parser, main


def test_export_offers_the_model_directory_format():
    args = build_parser().parse_args(["export", "--checkpoint", "runs/a", "--out", "models/a"])
    assert args.format == "model-dir" and not args.overwrite


def test_the_parser_offers_exactly_the_export_formats_of_model_dir():
    from recsys_emb.cli.serving import EXPORT_FORMAT_NAMES
    from recsys_emb.model_dir import EXPORT_FORMATS

    assert sorted(EXPORT_FORMAT_NAMES) == sorted(EXPORT_FORMATS)


def test_a_missing_model_or_run_is_one_line(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nowhere"), "--input", str(tmp_path / "x.tsv"),
                 "--out", str(tmp_path / "s.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere does not exist" in err and len(err.splitlines()) == 1
    assert main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is neither a checkpoint (no trainer.json) nor a run directory" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


# ``predict`` on a small model directory (random weights, the lines' vocabulary): what it refuses, what it
# bounds and what it reports, through the command's main in this process (tests/cli_helpers.py); standard
# input in real processes.

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from cli_helpers import recsys_here
from tests.scoring_helpers import criteo_lines, recsys, tiny_model_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    lines = criteo_lines(base, 300)
    return {"base": base, "lines": lines, "model": tiny_model_dir(base / "model", lines)}


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    err = proc.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_predict_fails_when_no_row_is_scored(served, tmp_path):
    # before: "scored 0 rows ... malformed lines skipped: 100", exit 0 and an empty scores file
    junk = tmp_path / "junk.tsv"
    junk.write_text("".join(f"{i}\tnot a criteo line\n" for i in range(100)))
    err = _one_error_line(recsys_here("predict", "--model", served["model"], "--input", junk, "--out",
                                 tmp_path / "s.parquet", "--on-bad-line", "skip"))
    assert "no row scored: all 100 lines of" in err and "junk.tsv:1: wrong column count" in err
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    err = _one_error_line(recsys_here("predict", "--model", served["model"], "--input", empty, "--out",
                                 tmp_path / "s.parquet"))
    assert f"no row scored: {empty} holds no rows" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tsv", "junk.tsv"]  # no scores, no temporary


def test_predict_bounds_the_malformed_share_and_reports_auc_and_log_loss(served, tmp_path):
    lines = list(served["lines"])
    for i in (10, 20, 30, 40, 50, 60):  # 6 of 300 lines (2%) malformed
        lines[i] = lines[i].replace("\t", " ", 1)
    day = tmp_path / "day.tsv"
    day.write_text("\n".join(lines) + "\n")
    args = ["predict", "--model", served["model"], "--input", day, "--out", tmp_path / "s.parquet",
            "--on-bad-line", "skip"]
    err = _one_error_line(recsys_here(*args))
    assert "6 of 300 lines (2.00%) of" in err and "more than --max-bad-fraction 0.01 allows" in err
    assert "day.tsv:11: wrong column count" in err and not (tmp_path / "s.parquet").exists()
    ok = recsys_here(*args, "--max-bad-fraction", "0.05")
    assert ok.returncode == 0, ok.stderr[-2000:]
    scores = pq.read_table(tmp_path / "s.parquet").to_pandas()
    assert len(scores) == 294 and scores.label.notna().all()
    auc = roc_auc_score(scores.label, scores.score)
    ll = log_loss(scores.label, scores.score.astype(np.float64))
    assert f"labelled rows: AUC {auc:.4f}  logloss {ll:.4f}" in ok.stdout, ok.stdout


def test_predict_reads_standard_input(served, tmp_path):
    from recsys_emb.model_dir import load_model
    from recsys_emb.scoring import predict

    data = ("\n".join(served["lines"]) + "\n").encode()
    (tmp_path / "day.tsv").write_bytes(data)
    predict(load_model(served["model"]), tmp_path / "day.tsv", tmp_path / "ref.parquet")
    ref = pq.read_table(tmp_path / "ref.parquet").to_pandas()
    for name, source, payload in (("dash", "-", gzip.compress(data)), ("dev", "/dev/stdin", data)):
        proc = recsys("predict", "--model", served["model"], "--input", source, "--out", tmp_path / f"{name}.parquet",
                      stdin=payload)
        assert proc.returncode == 0, proc.stderr[-2000:]  # before: "input file '-' does not exist"
        got = pq.read_table(tmp_path / f"{name}.parquet").to_pandas()
        assert got.line.tolist() == ref.line.tolist() and (got.file == "/dev/stdin").all()
        np.testing.assert_array_equal(got.logit.values, ref.logit.values)


def test_chunk_mb_of_zero_is_refused_naming_the_option(served, tmp_path):
    day = tmp_path / "day.tsv"
    day.write_text("\n".join(served["lines"]) + "\n")
    for args in (["predict", "--model", served["model"], "--out", tmp_path / "s.parquet"],
                 ["preprocess", "--out", tmp_path / "data"]):
        err = _one_error_line(recsys_here(*args, "--input", day, "--chunk-mb", "0"))
        assert "--chunk-mb 0: the MiB read per block must be > 0" in err  # before (preprocess): "no valid rows"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day.tsv"]


def test_bad_values_are_named_by_file_line_or_row_column_and_value(served, tmp_path):
    fields = served["lines"][2].split("\t")
    fields[1] = str(2 ** 70)
    lines = list(served["lines"])
    lines[2] = "\t".join(fields)
    (tmp_path / "day.tsv").write_text("\n".join(lines) + "\n")
    err = _one_error_line(recsys_here("predict", "--model", served["model"], "--input", tmp_path / "day.tsv",
                                 "--out", tmp_path / "s.parquet"))
    # before: "malformed line: non-integer I1", no value
    assert f"day.tsv:3: malformed line: I1 out of the int64 range (value '{2 ** 70}')" in err
    processed = pa.table({**{f"I{i}": pa.array(np.ones(4, np.float32)) for i in range(1, 14)},
                          **{f"C{i}": pa.array([0, 1, 0, 1]) for i in range(1, 27)},
                          "label": pa.array([0, 1, 1, 0], pa.int64())})
    processed = processed.set_column(processed.schema.get_field_index("I5"), "I5",
                                     pa.array([1.0, float("nan"), 2.0, 3.0], pa.float32()))
    pq.write_table(processed, tmp_path / "rows.parquet")
    err = _one_error_line(recsys_here("predict", "--model", served["model"], "--input", tmp_path / "rows.parquet",
                                 "--out", tmp_path / "s.parquet"))
    assert "rows.parquet: column I5, row 1: nan: non-finite I5" in err and "--on-bad-line skip" in err
