"""Output directories: refused when used, replaced whole with overwrite, untouched by a failed writer,
temporaries of dead writers removed (and only those)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys_emb.data import outdir
from recsys_emb.data.outdir import atomic_output_dir, check_output_dir
from recsys_emb.errors import DataError

OWNED = ("metadata.json", "train/part-*.parquet")


def _write(d, text):
    (d / "train").mkdir()
    (d / "train" / "part-00000.parquet").write_text(text)
    (d / "metadata.json").write_text(text)


def _read(d):
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*")), (d / "metadata.json").read_text()


def test_fresh_and_empty_destinations_are_filled(tmp_path):
    with atomic_output_dir(tmp_path / "a" / "b", owned=OWNED) as d:
        assert d.parent == tmp_path / "a" and d.name.startswith(".b.partial-")
        _write(d, "one")
    assert _read(tmp_path / "a" / "b") == (["metadata.json", "train", "train/part-00000.parquet"], "one")
    (tmp_path / "empty").mkdir()
    with atomic_output_dir(tmp_path / "empty", owned=OWNED) as d:
        _write(d, "two")
    assert _read(tmp_path / "empty")[1] == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "empty"]


@pytest.mark.parametrize("exchange", [True, False])
def test_overwrite_replaces_whole(tmp_path, monkeypatch, exchange):
    if not exchange:  # the path taken where renameat2 is not available
        monkeypatch.setattr(outdir, "_EXCHANGE", None)
    out = tmp_path / "out"
    with atomic_output_dir(out, owned=OWNED) as d:
        _write(d, "old")
        (d / "train" / "part-00001.parquet").write_text("old")
    with pytest.raises(DataError, match=r"out is not empty \(metadata\.json, train\): pass overwrite=True"):
        with atomic_output_dir(out, owned=OWNED):
            pass
    with atomic_output_dir(out, overwrite=True, owned=OWNED) as d:
        _write(d, "new")
    assert _read(out) == (["metadata.json", "train", "train/part-00000.parquet"], "new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_writer_leaves_the_destination_as_it_was(tmp_path, error):
    out = tmp_path / "out"
    with atomic_output_dir(out, owned=OWNED) as d:
        _write(d, "kept")
    with pytest.raises(error):
        with atomic_output_dir(out, overwrite=True, owned=OWNED) as d:
            _write(d, "half")
            raise error()
    assert _read(out)[1] == "kept" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(error):
        with atomic_output_dir(tmp_path / "new", owned=OWNED):
            raise error()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_refuses_foreign_entries_and_non_directories(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("x")
    with pytest.raises(DataError, match=r"home holds thesis\.tex, which preprocess does not write"):
        check_output_dir(tmp_path / "home", overwrite=True, owned=OWNED, command="preprocess")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"file exists and is not a directory"):
        check_output_dir(tmp_path / "file", overwrite=True, owned=OWNED, command="preprocess")
    with pytest.raises(DataError, match="root directory"):
        with atomic_output_dir("/", overwrite=True, owned=OWNED):
            pass


def test_symlinked_destination_is_written_through(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with atomic_output_dir(tmp_path / "link", owned=OWNED) as d:
        _write(d, "via link")
    assert (tmp_path / "link").is_symlink() and _read(tmp_path / "real")[1] == "via link"


def test_only_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path):
    # a pid no process can have: the kernel hands out pids below pid_max (a pid of a process that has
    # ended could be given to a new one before the check)
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text())
    live_pid = os.getppid()
    host = outdir._HOST
    names = {
        f".out.partial-{host}-{dead_pid}-00ff": False,     # a killed writer: removed
        f".out.old-{host}-{dead_pid}-0a0b": False,         # the old output of a killed overwrite: removed
        f".out.partial-{host}-{live_pid}-00ff": True,      # a writer still running: kept
        f".out.partial-otherhost-{dead_pid}-00ff": True,   # another machine's writer (shared disk): kept
        f".other.partial-{host}-{dead_pid}-00ff": True,    # another destination's: kept
        "out.partial-notes": True,                         # not a temporary at all
    }
    for n in names:
        (tmp_path / n).mkdir()
    with atomic_output_dir(tmp_path / "out", owned=OWNED) as d:
        _write(d, "x")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {n for n, keep in names.items() if keep} | {"out"}


def test_a_files_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    # predict's scores file: its temporaries are files, not directories (before: left forever)
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text())  # a pid no process can have
    host = outdir._HOST
    dead_name = f".s.parquet.partial-{host}-{dead_pid}-00ff"
    live_name = f".s.parquet.partial-{host}-{os.getppid()}-00ff"
    for n in (dead_name, live_name):
        (tmp_path / n).write_text("half a file")
    tmp = outdir.partial_sibling(tmp_path / "s.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live_name]
    assert tmp.parent == tmp_path and tmp.name.startswith(f".s.parquet.partial-{host}-{os.getpid()}-")
