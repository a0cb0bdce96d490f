"""The input files of a preprocess: paths, glob patterns (numbers sorted by value) and Criteo 1TB day
directories expanded into files in time order, and the ground-truth side file of a generated TSV.
"""

from __future__ import annotations

import glob as _glob
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from recsys_emb.errors import DataError

__all__ = ["expand_inputs", "true_prob_path"]

PathLike = Union[str, Path]
_DAY_RE = re.compile(r"day_(\d+)(?:\.gz)?")


def _natural_key(path: str) -> List[Any]:
    """Sort key that orders numbers by value: ``day_2`` before ``day_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _day_files(directory: Path) -> List[Path]:
    """The ``day_<N>`` files (plain or ``.gz``) of a Criteo 1TB directory, in day order, checked for gaps."""
    days: Dict[int, Path] = {}
    for p in directory.iterdir():
        m = _DAY_RE.fullmatch(p.name)
        if m is None or not p.is_file():
            continue
        day = int(m.group(1))
        if day in days:
            raise DataError(f"{directory}: day {day} is there twice ({days[day].name} and {p.name}); keep one")
        days[day] = p
    if not days:
        raise DataError(f"input directory {str(directory)!r} holds no day_<N> or day_<N>.gz file (the Criteo 1TB "
                        "layout); pass the files themselves, or a glob pattern")
    missing = sorted(set(range(max(days) + 1)) - set(days))
    if missing:
        raise DataError(f"input directory {str(directory)!r} lacks day_{missing[0]} (days 0..{max(days)} expected, "
                        f"{len(missing)} missing): the time split would be wrong; add it or pass the files explicitly")
    return [days[d] for d in sorted(days)]


def expand_inputs(inputs: Union[PathLike, Sequence[PathLike]], *, streams: bool = False) -> List[Path]:
    """Files named by paths, glob patterns and directories, in time order; errors if none exist.

    A pattern's matches are sorted with numbers by value (``day_2`` before ``day_10``); a directory stands
    for its ``day_0`` .. ``day_N`` files, plain or ``.gz`` (the Criteo 1TB layout), with no day missing.
    ``streams=True`` (a reader that reads each input once, from its start) also takes ``"-"`` (standard
    input, as ``/dev/stdin``) and pipes or character devices (``/dev/stdin``, ``<(zcat day.gz)``);
    otherwise these are refused, naming the path: they can be read only once.

    Example:
        >>> for n in (10, 2, 0, 1):
        ...     _ = (tmp / f"day_{n}").write_text("")
        >>> [p.name for p in expand_inputs(str(tmp / "day_*"))]
        ['day_0', 'day_1', 'day_2', 'day_10']
    """
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out: List[Path] = []
    for item in items:
        s = str(item)
        if any(ch in s for ch in "*?["):
            matches = sorted(_glob.glob(s), key=_natural_key)
            if not matches:
                raise DataError(f"no file matches {s!r}")
            out.extend(Path(m) for m in matches)
        elif Path(s).is_dir():
            out.extend(_day_files(Path(s)))
        elif s == "-" or Path(s).exists() and not Path(s).is_file():
            p = Path("/dev/stdin") if s == "-" else Path(s)
            if not streams:
                raise DataError(f"input {s!r} is a pipe or device, not a regular file: it can be read only once, "
                                "and this command reads its inputs more than once; write it to a file first")
            out.append(p)
        else:
            if not Path(s).is_file():
                raise DataError(f"input file {s!r} does not exist")
            out.append(Path(s))
    return out


def true_prob_path(tsv_path: PathLike) -> Path:
    """The ground-truth side file of a generated TSV: ``X.tsv[.gz]`` -> ``X.true_prob.npy``."""
    p = Path(tsv_path)
    name = p.name
    for suffix in (".gz", ".tsv", ".txt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return p.with_name(name + ".true_prob.npy")
