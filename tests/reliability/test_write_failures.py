"""What the environment refuses is one ``error:`` line with exit code 2 and no partial output: a full disk
(a file size limit, ``RLIMIT_FSIZE`` in the child, stands in for it: the write gets ``EFBIG``), a read-only
location, an output path that is a directory or under a file, sizes that cannot fit in memory or on disk, and
YAML tags that would build objects. Real files; the disk-full cases run the CLI in a subprocess."""

import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from recsys_emb.cli import main
from recsys_emb.config import config_from_dict
from recsys_emb.data.criteo import preprocess
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.errors import ConfigError
from recsys_emb.training import train
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]
FULL = "the disk is full or a file size limit was reached"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run (its model directory included), its raw TSV and its training config."""
    base = tmp_path_factory.mktemp("writes")
    g = generate_criteo_like(base / "raw", rows=2000, scale=0.001, seed=1)
    preprocess(g.tsv, base / "data", min_count=2)
    (base / "run.yaml").write_text(
        f"name: w\nseed: 0\ndata: {{path: {base / 'data'}, batch_size: 256}}\n"
        "model: {kind: dlrm, bottom_mlp: [16, 8], top_mlp: [16]}\nembeddings: {variant: full, dim: 8}\n"
        f"train: {{epochs: 1, log_every: 0, progress: false, out_dir: {base / 'run'}}}\n")
    from recsys_emb.config import load_config

    train(load_config(base / "run.yaml"))
    return {"base": base, "tsv": g.tsv, "config": base / "run.yaml", "run": base / "run"}


def _limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the child
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def cli(*args, limit=None):
    env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env=env, preexec_fn=_limit_file_size(limit) if limit else None)
    return proc.returncode, [line for line in proc.stderr.strip().splitlines() if "Warning" not in line
                             and "return func(" not in line]


def _error_line(lines):
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines[-8:]
    return errors[0]


def _leftovers(folder, keep=()):
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in keep) if Path(folder).exists() else []


@pytest.mark.parametrize("command", ["predict", "export", "preprocess", "train"])
def test_a_full_disk_is_one_line_and_leaves_no_partial_output(run, tmp_path, command):
    """Before: an OSError (errno 27/28) traceback from pyarrow, numpy or DCP; export said only
    ``RuntimeError: unexpected pos 54720 vs 54640`` (torch's zip writer hides the errno)."""
    out = tmp_path / "out" / "dest"
    args = {"predict": ["predict", "--model", run["run"] / "model", "--input", run["tsv"], "--out", out],
            "export": ["export", "--checkpoint", run["run"], "--out", out],
            "preprocess": ["preprocess", "--input", run["tsv"], "--out", out],
            "train": ["train", "--config", run["config"], "--set", f"train.out_dir={out}",
                      "--set", "train.checkpoint_every=2"]}[command]
    rc, lines = cli(*args, limit=20_000)
    assert rc == 2, lines[-8:]
    line = _error_line(lines)
    assert FULL in line and "[Errno 27]" in line and str(out) in line, line
    if command == "train":  # the half-written checkpoint is removed; `latest` names none
        assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir()), \
            sorted(p.name for p in (out / "checkpoints").iterdir())
    else:
        assert _leftovers(tmp_path / "out") == [], _leftovers(tmp_path / "out")


@contextmanager
def read_only_dir(path):
    """An empty directory nobody may write into: a read-only tmpfs as root (root ignores permissions),
    else a directory without write permission."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_output_is_one_line_naming_it(run, tmp_path, capsys):
    """Before: predict's cleanup (unlinking its temporary on a read-only filesystem) raised its own EROFS
    traceback, which hid the first error."""
    with read_only_dir(tmp_path / "ro") as ro:
        for args in (["predict", "--model", run["run"] / "model", "--input", run["tsv"], "--out", ro / "s.parquet"],
                     ["export", "--checkpoint", run["run"], "--out", ro / "m"],
                     ["preprocess", "--input", run["tsv"], "--out", ro / "pp"]):
            assert main(list(map(str, args))) == 2
            line = _error_line(capsys.readouterr().err.strip().splitlines())
            assert "the location is read-only or not writable" in line and str(ro) in line, line
            assert _leftovers(ro) == []


def test_output_paths_that_are_directories_or_under_a_file_are_named(run, tmp_path, capsys):
    """Before: IsADirectoryError (predict --out DIR --overwrite) and FileExistsError tracebacks."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    cases = [(["predict", "--model", run["run"] / "model", "--input", run["tsv"], "--out", tmp_path / "dir",
               "--overwrite"], "dir is a directory; predict writes one scores file"),
             (["predict", "--model", run["run"] / "model", "--input", run["tsv"], "--out",
               tmp_path / "file" / "s.parquet"], "its parent"),
             (["export", "--checkpoint", run["run"], "--out", tmp_path / "file" / "m"], "its parent"),
             (["preprocess", "--input", run["tsv"], "--out", tmp_path / "file" / "a" / "pp"], "its parent"),
             (["generate", "criteo-like", "--rows", "100", "--out", tmp_path / "file" / "g"], "its parent")]
    for args, what in cases:
        assert main(list(map(str, args))) == 2, args
        line = _error_line(capsys.readouterr().err.strip().splitlines())
        assert what in line, line
        if what == "its parent":
            assert f"its parent {tmp_path / 'file'} is a file, not a directory" in line, line
    assert _leftovers(tmp_path / "dir") == [] and (tmp_path / "file").read_text() == ""


def test_a_run_directory_under_a_file_is_named(run, tmp_path):
    (tmp_path / "file").write_text("")
    rc, lines = cli("train", "--config", run["config"], "--set", f"train.out_dir={tmp_path / 'file' / 'run'}")
    assert rc == 2 and f"its parent {tmp_path / 'file'} is a file, not a directory" in _error_line(lines)


def test_sizes_that_cannot_fit_are_refused_before_allocating(run, tmp_path):
    """Before: ``embeddings.dim: 1000000000`` or an MLP width of 1e9 ran until the allocator failed
    (a RuntimeError traceback after 35 s)."""
    rc, lines = cli("train", "--config", run["config"], "--set", f"train.out_dir={tmp_path / 'run'}",
                    "--set", "embeddings.dim=1000000000")
    line = _error_line(lines)
    assert rc == 2 and line.startswith("error: ") and "embeddings.dim=1000000000 (its largest table" in line, line
    assert "more than this machine's available memory" in line
    assert not (tmp_path / "run" / "checkpoints").exists()
    from recsys_emb.data.parquet import read_metadata, schema_from_metadata
    from recsys_emb.training.build import build_features, check_model_fits

    cfg = config_from_dict({"data": {"path": str(run["base"] / "data")},
                            "model": {"kind": "dlrm", "bottom_mlp": [16, 8], "top_mlp": [1_000_000_000]},
                            "embeddings": {"variant": "full", "dim": 8}})
    schema = schema_from_metadata(read_metadata(run["base"] / "data"))
    specs, _ = build_features(cfg, schema)
    with pytest.raises(ConfigError, match=r"model.top_mlp=\[1000000000\] \(its largest parameter, top.net.0.weight, "
                                          r"is 1,000,000,000 x \d+\): .* lower the MLP widths"):
        check_model_fits(cfg, schema, specs, training=True)
    assert check_model_fits(cfg, schema, specs, training=True, available=1 << 60) is not None


def test_generate_refuses_rows_that_cannot_fit_on_disk(tmp_path, capsys):
    """Before: ``OSError: [Errno 22] Invalid argument`` from numpy's seek to the end of a 1e18-row memmap."""
    assert main(["generate", "criteo-like", "--rows", str(10**18), "--out", str(tmp_path / "g")]) == 2
    line = _error_line(capsys.readouterr().err.strip().splitlines())
    assert "rows=1,000,000,000,000,000,000: generate criteo-like writes at least 5 bytes a row" in line, line
    assert _leftovers(tmp_path) == []


def test_yaml_tags_in_overrides_and_search_configs_are_one_line(run, tmp_path, capsys):
    """Before: a ConstructorError traceback (safe_load refused the tag, but nothing caught it)."""
    tag = "!!python/object/apply:os.getpid []"
    assert main(["train", "--config", str(run["config"]), "--set", f"seed={tag}"]) == 2
    line = _error_line(capsys.readouterr().err.strip().splitlines())
    assert "--set 'seed=!!python/object/apply:os.getpid []': the value is not plain YAML" in line, line
    (tmp_path / "search.yaml").write_text(f"name: s\nbase_config: {tag}\n")
    assert main(["search", "--config", str(tmp_path / "search.yaml")]) == 2
    line = _error_line(capsys.readouterr().err.strip().splitlines())
    assert "search.yaml: not valid YAML at line 2" in line and "python/object/apply:os.getpid" in line, line
    assert main(["search", "--config", str(ROOT / "tests" / "configs" / "search_tiny.yaml"), "--set",
                 f"n_trials={tag}"]) == 2
    assert "the value is not plain YAML" in _error_line(capsys.readouterr().err.strip().splitlines())
