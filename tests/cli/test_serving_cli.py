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
