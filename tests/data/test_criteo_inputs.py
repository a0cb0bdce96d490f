"""Input expansion: Criteo 1TB day directories in day order, numbers in globs sorted by value, and clear
errors for a missing or doubled day."""

from __future__ import annotations

import pytest

from recsys_emb.data.criteo import expand_inputs
from recsys_emb.errors import DataError


def _days(d, names):
    d.mkdir()
    for n in names:
        (d / n).write_text("")
    return d


def test_day_directory_in_day_order(tmp_path):
    d = _days(tmp_path / "days", ["day_10", "day_2.gz", "notes.txt"] + [f"day_{i}" for i in (0, 1, 3, 4, 5, 6, 7, 8, 9)])
    assert [p.name for p in expand_inputs(d)][:4] == ["day_0", "day_1", "day_2.gz", "day_3"]
    assert [p.name for p in expand_inputs(d)][-2:] == ["day_9", "day_10"] and len(expand_inputs(d)) == 11
    assert [p.name for p in expand_inputs(str(d / "day_1*"))] == ["day_1", "day_10"]


def test_missing_or_doubled_day_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"lacks day_1 \(days 0\.\.2 expected, 1 missing\)"):
        expand_inputs(_days(tmp_path / "a", ["day_0", "day_2"]))
    with pytest.raises(DataError, match=r"day 1 is there twice .*keep one"):
        expand_inputs(_days(tmp_path / "b", ["day_0", "day_1", "day_1.gz"]))
    with pytest.raises(DataError, match="holds no day_<N>"):
        expand_inputs(_days(tmp_path / "c", ["train.txt"]))


def test_pipes_are_inputs_of_a_single_pass_reader_only(tmp_path):
    import os
    from pathlib import Path

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert expand_inputs([str(fifo), "-"], streams=True) == [fifo, Path("/dev/stdin")]
    for name in (str(fifo), "-"):  # before: "input file ... does not exist"
        with pytest.raises(DataError, match=rf"input '{name}' is a pipe or device, not a regular file: it can be "
                                            "read only once.*write it to a file first"):
            expand_inputs(name)
