"""``--overwrite`` replaces only what the command wrote: a file it did not write, at any depth, is refused
by name, and so is an output that is or contains one of the command's inputs (real files; the CLI as a
real process where the exit code matters)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_emb.data.criteo import preprocess
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.errors import DataError
from waiting import HANG_GUARD_S


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    return generate_criteo_like(tmp_path_factory.mktemp("raw") / "raw", 3000, scale=0.001, seed=3).tsv


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1"}
    return subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=HANG_GUARD_S)


def test_preprocess_overwrite_into_the_folder_of_its_own_input_is_refused(tsv, tmp_path):
    (tmp_path / "rawds" / "train").mkdir(parents=True)
    (tmp_path / "rawds" / "test").mkdir()
    shutil.copy(tsv, tmp_path / "rawds" / "train" / "day0.tsv")
    shutil.copy(tsv, tmp_path / "rawds" / "test" / "day1.tsv")
    proc = _cli("preprocess", "--input", "rawds/train/day0.tsv", "--out", "rawds", "--overwrite", cwd=tmp_path)
    # before: exit 0, and both TSVs were deleted with the old "dataset"
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: --out ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "contains preprocess's input rawds/train/day0.tsv" in proc.stderr
    assert (tmp_path / "rawds" / "train" / "day0.tsv").read_bytes() == tsv.read_bytes()
    assert (tmp_path / "rawds" / "test" / "day1.tsv").read_bytes() == tsv.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rawds"]  # no temporary left


def test_dataset_overwrite_refuses_a_nested_file_it_did_not_write(tsv, tmp_path):
    out = tmp_path / "processed"
    preprocess(tsv, out)
    (out / "train" / "NOTES.md").write_text("mine")
    (out / "valid" / "extra").mkdir()
    with pytest.raises(DataError, match=r"processed holds train/NOTES\.md, valid/extra/, which preprocess does not "
                                        r"write, so --overwrite will not delete it"):
        preprocess(tsv, out, min_count=2, overwrite=True)
    assert (out / "train" / "NOTES.md").read_text() == "mine" and (out / "valid" / "extra").is_dir()
    (out / "train" / "NOTES.md").unlink()
    (out / "valid" / "extra").rmdir()
    assert preprocess(tsv, out, min_count=2, overwrite=True)["min_count"] == 2  # only its own files: replaced


def test_an_output_that_is_or_holds_an_input_is_refused(tsv, tmp_path):
    out = tmp_path / "processed"
    preprocess(tsv, out)
    before = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(DataError, match=r"--out .*processed is preprocess's input .*processed: replacing it would "
                                        r"delete the input"):
        preprocess(tsv, out, vocab=out, overwrite=True)  # a new day mapped with this dataset's vocabulary
    with pytest.raises(DataError, match=r"contains preprocess's input"):
        preprocess(tsv, tsv.parent, overwrite=True)
    assert sorted(str(p) for p in out.rglob("*")) == before and tsv.is_file()
