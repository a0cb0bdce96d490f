"""Work units of a Criteo preprocess: the input files cut into pieces that are read, counted and written
independently, with results that merge exactly. :func:`~recsys_emb.data.criteo.preprocess` runs them in a
process pool on one machine; an engine for several machines (datasets/criteo.md recommends Ray) runs the
same functions as its tasks.

One function per pass, each a function of its arguments only (files in, a small result out):

- :func:`scan_unit` (pass 1): validate, count rows and lines, and count values (:class:`ValueCounts`);
- :func:`count_unit` (pass 2): count the values of the unit's rows from a given row on (the rows after
  the training split, whose counts are subtracted from pass 1's to get the training counts);
- :func:`write_unit` (pass 3): map values to ids and write the unit's rows as Parquet shards.

The plan (:func:`plan_units`) depends on the files, ``unit_bytes`` and ``chunk_bytes`` only, never on the
number of workers, so the output is the same whichever machine or pool runs the units.

With a ``cache_dir``, pass 1 also saves each chunk it parsed (the unit's valid rows as narrow binary
arrays, about 0.7 bytes per byte of Criteo text: :func:`save_chunk`), and passes 2 and 3 read those
arrays instead of parsing the text again; :func:`write_unit` deletes its unit's cache once written. The
rows are the same either way (the cache holds what the parser returned), so the output is too.

Example (``tmp``: any writable directory):
    >>> from recsys_emb.data.synthetic import generate_criteo_like
    >>> g = generate_criteo_like(tmp / "raw", rows=2000, scale=0.001, seed=0)
    >>> units = plan_units([g.tsv], unit_bytes=100_000)
    >>> scans = [scan_unit(u) for u in units]
    >>> len(units) > 1, sum(s.rows for s in scans)
    (True, 2000)
    >>> total = ValueCounts.merged(s.counts for s in scans)
    >>> int(total.counts[8].sum())  # C9: one count per row
    2000
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from recsys_emb.data.criteo.blocks import is_compressed
from recsys_emb.data.criteo.reader import (
    CHUNK_BYTES,
    MAX_LINE_BYTES,
    BadLine,
    CriteoChunk,
    ReadReport,
    iter_file_chunks,
)
from recsys_emb.data.criteo.schema import CAT_COLUMNS, INT_COLUMNS, LABEL_COLUMN
from recsys_emb.data.parquet import SPLITS, ShardedParquetWriter
from recsys_emb.data.vocabulary import Vocabulary

__all__ = [
    "UNIT_BYTES",
    "Unit",
    "UnitScan",
    "ValueCounts",
    "plan_units",
    "scan_unit",
    "count_unit",
    "write_unit",
    "UnitOutput",
    "chunk_table",
    "merge_scans",
    "save_vocab_arrays",
    "save_chunk",
    "load_chunk",
    "CACHE_BYTES_PER_INPUT_BYTE",
]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]

UNIT_BYTES = 256 << 20
"""Bytes of a plain input file per work unit (a compressed file is one unit: it can only be read from its
start). 256 MiB, about a million Criteo rows: the Kaggle file makes 43 units, enough for 16 cores, and a
unit's Parquet shards stay large."""


CACHE_BYTES_PER_INPUT_BYTE = 0.75
"""Parse-cache bytes per byte of plain Criteo text, rounded up from the 0.67 measured on Criteo-like rows
(163 bytes per row against 245 of text): what :func:`~recsys_emb.data.criteo.preprocess` plans disk
space with."""


def save_chunk(path: PathLike, chunk: CriteoChunk) -> None:
    """Write ``chunk``'s rows to ``path`` (an uncompressed ``.npz``) in the narrowest exact form: raw
    categorical values as ``uint32`` of value + 1 when they fit (Criteo's 8-digit hex values and the
    empty value -1 do), counts as ``int32`` when they fit, missing flags as bits, line numbers as
    offsets from the first. :func:`load_chunk` gives back equal arrays.

    Example:
        >>> c = CriteoChunk(np.array([1, 0], np.int8), np.array([[5] * 13, [-2] * 13]),
        ...                 np.zeros((2, 13), bool), np.full((26, 2), -1), np.array([7, 9]), "a.tsv")
        >>> save_chunk(tmp / "c.npz", c)
        >>> d = load_chunk(tmp / "c.npz", "a.tsv")
        >>> d.cats.dtype, d.lines.tolist(), bool((d.ints == c.ints).all())
        (dtype('int64'), [7, 9], True)
    """
    arrays: Dict[str, np.ndarray] = {"labels": chunk.labels, "missing": np.packbits(chunk.int_missing, axis=1)}
    cats, ints, lines = chunk.cats, chunk.ints, chunk.lines
    if cats.size == 0 or (cats.min() >= -1 and cats.max() < np.iinfo(np.uint32).max):
        arrays["cats_u32"] = (cats + 1).astype(np.uint32)
    else:
        arrays["cats"] = cats
    i32 = np.iinfo(np.int32)
    arrays["ints"] = ints.astype(np.int32) if ints.size == 0 or (ints.min() >= i32.min and ints.max() <= i32.max) else ints
    first = int(lines[0]) if len(lines) else 0
    arrays["first_line"] = np.array([first], np.int64)
    arrays["line_offsets"] = (lines - first).astype(np.uint32)
    np.savez(path, **arrays)  # type: ignore[arg-type]  # mypy matches the unpacked dict against allow_pickle


def load_chunk(path: PathLike, source: str) -> CriteoChunk:
    """The chunk :func:`save_chunk` wrote to ``path``, with ``source`` (the text file) as its path."""
    with np.load(path) as z:
        return _chunk_of(z, source)


def _chunk_of(z: "np.lib.npyio.NpzFile", source: str) -> CriteoChunk:
    cats = z["cats_u32"].astype(np.int64) - 1 if "cats_u32" in z.files else z["cats"]
    missing = np.unpackbits(z["missing"], axis=1, count=len(INT_COLUMNS)).astype(bool)
    lines = z["line_offsets"].astype(np.int64) + int(z["first_line"][0])
    return CriteoChunk(z["labels"], z["ints"].astype(np.int64), missing, cats, lines, source)


def _cache_present(cache: Optional[str]) -> bool:
    """Whether pass 1's cache of a unit is there (a unit written again, e.g. retried by an engine after
    its first write deleted the cache, parses the text instead)."""
    return cache is not None and (Path(cache) / "first_line").exists()


def _cached_chunks(cache: str, source: str, first_line: int, skip_rows: int = 0) -> Iterator[Tuple[int, CriteoChunk]]:
    """``(rows before it, chunk)`` for the cached chunks of a unit, in order, with line numbers counted
    from ``first_line`` (pass 1 may have numbered them from another start); chunks that end at or before
    ``skip_rows`` are skipped without reading their values."""
    d = Path(cache)
    shift = first_line - int((d / "first_line").read_text())
    seen = 0
    for f in sorted(d.glob("chunk-*.npz")):
        with np.load(f) as z:  # members are read on access: a skipped chunk reads its labels only
            n = len(z["labels"])
            chunk = _chunk_of(z, source) if seen + n > skip_rows else None
        if chunk is not None:
            chunk.lines += shift
            yield seen, chunk
        seen += n


@dataclass(frozen=True)
class Unit:
    """Bytes ``[start, end)`` of a file (``end`` None: to its end), cut at line starts; ``index`` orders
    the units (and their output shards) in time."""

    path: str
    start: int = 0
    end: Optional[int] = None
    index: int = 0

    @property
    def byte_range(self) -> Optional[Tuple[int, Optional[int]]]:
        return None if self.start == 0 and self.end is None else (self.start, self.end)


class ValueCounts:
    """Exact counts of the values of each of ``n_fields`` fields: sorted distinct ``keys[j]`` (int64) and
    their ``counts[j]``. Adding merges sorted arrays; memory ~ distinct values, never rows.

    Example:
        >>> a = ValueCounts(1); a.add_values(0, np.array([5, 3, 5]))
        >>> b = ValueCounts(1); b.add_values(0, np.array([3, 9]))
        >>> m = ValueCounts.merged([a, b], n_fields=1); m.keys[0].tolist(), m.counts[0].tolist()
        ([3, 5, 9], [2, 2, 1])
        >>> d = m.subtract(b); d.keys[0].tolist(), d.counts[0].tolist()
        ([3, 5], [1, 2])
    """

    def __init__(self, n_fields: int = len(CAT_COLUMNS)) -> None:
        self.keys = [np.zeros(0, np.int64) for _ in range(n_fields)]
        self.counts = [np.zeros(0, np.int64) for _ in range(n_fields)]
        self._pending: List[List[Tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n_fields)]
        self._pending_size = [0] * n_fields

    def add_values(self, j: int, values: np.ndarray) -> None:
        """Count ``values`` (any int64 array) in field ``j``."""
        k, c = np.unique(values, return_counts=True)
        self.add_counts(j, k, c.astype(np.int64))

    def add_counts(self, j: int, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add counts of distinct ``keys`` to field ``j`` (compacted when the pending pieces outgrow it)."""
        self._pending[j].append((keys, counts))
        self._pending_size[j] += len(keys)
        if self._pending_size[j] > max(len(self.keys[j]), 1 << 16):
            self._compact(j)

    def _compact(self, j: int) -> None:
        if not self._pending[j]:
            return
        keys = np.concatenate([self.keys[j]] + [k for k, _ in self._pending[j]])
        counts = np.concatenate([self.counts[j]] + [c for _, c in self._pending[j]])
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else np.zeros(0, np.int64)
        self.keys[j] = keys[first]
        self.counts[j] = np.add.reduceat(counts, first) if len(first) else counts
        self._pending[j], self._pending_size[j] = [], 0

    def compact(self) -> "ValueCounts":
        """Fold the pending pieces in (``keys``/``counts`` are complete after this); returns self."""
        for j in range(len(self.keys)):
            self._compact(j)
        return self

    def add(self, other: "ValueCounts") -> None:
        """Add another unit's counts (field by field)."""
        other.compact()
        for j in range(len(self.keys)):
            self.add_counts(j, other.keys[j], other.counts[j])

    @classmethod
    def merged(cls, parts: Iterable[Optional["ValueCounts"]], n_fields: int = len(CAT_COLUMNS)) -> "ValueCounts":
        """The sum of ``parts`` (None entries skipped)."""
        out = cls(n_fields)
        for p in parts:
            if p is not None:
                out.add(p)
        return out.compact()

    def subtract(self, other: "ValueCounts") -> "ValueCounts":
        """These counts minus ``other``'s (``other`` must count a subset of the same rows); values left
        with a count of 0 are dropped. Raises ValueError if ``other`` counts a value more often."""
        self.compact()
        other.compact()
        out = ValueCounts(len(self.keys))
        for j in range(len(self.keys)):
            keys, counts = self.keys[j], self.counts[j].copy()
            pos = np.searchsorted(keys, other.keys[j])
            if len(other.keys[j]) and (pos.max() >= len(keys) or not np.array_equal(keys[pos], other.keys[j])):
                raise ValueError(f"field {j}: the subtracted counts hold values these counts lack")
            counts[pos] -= other.counts[j]
            if (counts < 0).any():
                raise ValueError(f"field {j}: the subtracted counts exceed these counts")
            keep = counts > 0
            out.keys[j], out.counts[j] = keys[keep], counts[keep]
        return out

    def __getstate__(self) -> Dict[str, List[np.ndarray]]:
        self.compact()
        return {"keys": self.keys, "counts": self.counts}

    def __setstate__(self, state: Dict[str, List[np.ndarray]]) -> None:
        self.keys, self.counts = state["keys"], state["counts"]
        self._pending = [[] for _ in self.keys]
        self._pending_size = [0] * len(self.keys)


@dataclass
class UnitScan:
    """What :func:`scan_unit` saw in one unit: valid ``rows``, physical ``lines`` (to number the next
    unit's lines), the ``report`` with line numbers counted from the unit's ``first_line``, and the value
    counts of all its rows (None unless asked)."""

    unit: Unit
    first_line: int
    rows: int
    lines: int
    report: ReadReport
    counts: Optional[ValueCounts] = field(default=None, repr=False)
    chunk_starts: List[Tuple[int, int]] = field(default_factory=list, repr=False)
    """Per chunk read: its first row's line (from ``first_line``) and the unit's rows before it."""
    cache: Optional[str] = None
    """The directory of the unit's parsed chunks (:func:`save_chunk`), when pass 1 was given a cache."""

    def resume_at(self, row: int) -> Tuple[int, int]:
        """``(line, rows before it)`` of the chunk holding the unit's row ``row`` (0-based), with line
        numbers from ``first_line``: where :func:`count_unit` starts parsing to reach that row."""
        k = max(bisect.bisect_right([r for _, r in self.chunk_starts], row) - 1, 0)
        return self.chunk_starts[k] if self.chunk_starts else (self.first_line, 0)


def _next_line_start(f, offset: int, size: int) -> int:
    """The first line start at or after ``offset`` (``size`` if none)."""
    if offset <= 0:
        return 0
    f.seek(offset - 1)
    pos = offset - 1
    while True:
        data = f.read(1 << 16)
        if not data:
            return size
        nl = data.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(data)


def plan_units(paths: Sequence[PathLike], unit_bytes: int = UNIT_BYTES, chunk_bytes: int = CHUNK_BYTES) -> List[Unit]:
    """Cut the input files into units of about ``unit_bytes``, in file order.

    A plain file is cut at line starts if its first ``chunk_bytes`` hold a ``\\n`` (the test by which the
    reader decides that its lines end in ``\\n``, not in a lone ``\\r``); a compressed file, and a file
    read as CR-only, is one unit.
    """
    if unit_bytes < 1:
        raise ValueError(f"unit_bytes must be >= 1, got {unit_bytes}")
    units: List[Unit] = []
    for p in paths:
        path = str(p)
        size = os.path.getsize(path)
        cuts = [0]
        if not is_compressed(path) and size > unit_bytes:
            with open(path, "rb") as f:
                if b"\n" in f.read(chunk_bytes):
                    k = 1
                    while k * unit_bytes < size:
                        cut = _next_line_start(f, max(k * unit_bytes, cuts[-1] + 1), size)
                        if cut >= size:
                            break
                        cuts.append(cut)
                        k = max(k + 1, cut // unit_bytes + 1)
        for i, start in enumerate(cuts):
            end = cuts[i + 1] if i + 1 < len(cuts) else None
            units.append(Unit(path, start, end, len(units)))
    return units


def scan_unit(unit: Unit, *, first_line: int = 1, count_values: bool = True, on_bad_line: str = "skip",
              chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES,
              max_examples: int = 1000, cache_dir: Optional[PathLike] = None) -> UnitScan:
    """Pass 1 over one unit: validate every line (``on_bad_line`` as in
    :func:`~recsys_emb.data.criteo.iter_criteo_tsv`; line numbers start at ``first_line``, 1 when the
    lines before the unit are not known yet: :func:`merge_scans` renumbers), count rows and lines, and
    with ``count_values`` the values of every field over all rows. With ``cache_dir``, each parsed chunk
    is also saved under ``cache_dir/unit-{index}/`` for the later passes (:attr:`UnitScan.cache`)."""
    report = ReadReport(max_examples=max_examples)
    counts = ValueCounts() if count_values else None
    starts: List[Tuple[int, int]] = []
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"unit-{unit.index:06d}"
        if cache.exists():  # a leftover of an earlier try of this unit
            shutil.rmtree(cache)
        cache.mkdir(parents=True)
        (cache / "first_line").write_text(str(first_line))
    for chunk in iter_file_chunks(unit.path, chunk_bytes=chunk_bytes, on_bad_line=on_bad_line, report=report,
                                  max_line_bytes=max_line_bytes, byte_range=unit.byte_range, first_line=first_line):
        if cache is not None:
            save_chunk(cache / f"chunk-{len(starts):06d}.npz", chunk)
        starts.append((int(chunk.lines[0]), report.rows - len(chunk)))
        if counts is not None:
            for j in range(len(CAT_COLUMNS)):
                counts.add_values(j, chunk.cats[j])
    lines = report.lines
    return UnitScan(unit, first_line, report.rows, lines, report, counts.compact() if counts is not None else None,
                    starts, None if cache is None else str(cache))


def merge_scans(scans: Sequence[UnitScan], max_examples: int = 1000) -> Tuple[ReadReport, List[int], List[int]]:
    """The report of all units in order (line numbers renumbered per file, the first ``max_examples`` bad
    lines kept), each unit's first line in its file and each unit's first row overall."""
    report = ReadReport(max_examples=max_examples)
    first_lines: List[int] = []
    first_rows: List[int] = []
    line_in_file: Dict[str, int] = {}
    for s in scans:
        base = line_in_file.get(s.unit.path, 0)
        first_lines.append(base + 1)
        first_rows.append(report.rows)
        shift = base + 1 - s.first_line
        r = s.report
        report.rows += r.rows
        report.bad_lines += r.bad_lines
        for reason, n in r.by_reason.items():
            report.by_reason[reason] = report.by_reason.get(reason, 0) + n
        room = max_examples - len(report.examples)
        report.examples.extend(BadLine(b.path, b.line + shift, b.reason) for b in r.examples[:max(room, 0)])
        report.truncated.extend({**t, "last_good_line": t["last_good_line"] + shift} for t in r.truncated)
        line_in_file[s.unit.path] = base + s.lines
    return report, first_lines, first_rows


def count_unit(unit: Unit, skip_rows: int, *, first_line: int = 1, resume: Optional[Tuple[int, int]] = None,
               chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES,
               cache: Optional[str] = None) -> ValueCounts:
    """Pass 2 over one unit: the value counts of its valid rows from row ``skip_rows`` (0-based, within
    the unit) on; malformed lines are skipped as pass 1 counted them. ``resume=(line, rows before it)``
    (:meth:`UnitScan.resume_at`, lines numbered from ``first_line``): the blocks before that line are
    read without being parsed. ``cache`` (:attr:`UnitScan.cache`): read pass 1's parsed chunks instead
    of the text."""
    counts = ValueCounts()
    if _cache_present(cache):
        assert cache is not None
        chunks: Iterable[Tuple[int, CriteoChunk]] = _cached_chunks(cache, unit.path, first_line, skip_rows)
    else:
        line, seen = resume if resume is not None else (first_line, 0)
        chunks = _numbered(iter_file_chunks(unit.path, chunk_bytes=chunk_bytes, on_bad_line="skip",
                                            report=ReadReport(), max_line_bytes=max_line_bytes,
                                            byte_range=unit.byte_range, first_line=first_line,
                                            skip_before_line=line), seen)
    for before, chunk in chunks:
        lo = max(skip_rows - before, 0)
        if lo < len(chunk):
            for j in range(len(CAT_COLUMNS)):
                counts.add_values(j, chunk.cats[j, lo:])
    return counts.compact()


def _numbered(chunks: Iterable[CriteoChunk], seen: int = 0) -> Iterator[Tuple[int, CriteoChunk]]:
    """``(rows before it, chunk)`` for each chunk, counting from ``seen``."""
    for chunk in chunks:
        yield seen, chunk
        seen += len(chunk)


def save_vocab_arrays(directory: PathLike, vocabs: Sequence[Vocabulary]) -> None:
    """Write each field's vocabulary as ``.npy`` arrays that :func:`write_unit` maps into memory (every
    worker shares the pages instead of holding its own copy)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for c, v in zip(CAT_COLUMNS, vocabs):
        np.save(d / f"{c}.keys.npy", v.keys)
        np.save(d / f"{c}.ids.npy", v.ids)
        np.save(d / f"{c}.counts.npy", v.counts)


_VOCAB_CACHE: Dict[str, List[Vocabulary]] = {}


def _vocabs(directory: str) -> List[Vocabulary]:
    if directory not in _VOCAB_CACHE:
        _VOCAB_CACHE.clear()
        d = Path(directory)
        _VOCAB_CACHE[directory] = [
            Vocabulary(np.load(d / f"{c}.keys.npy", mmap_mode="r"), np.load(d / f"{c}.ids.npy", mmap_mode="r"),
                       np.load(d / f"{c}.counts.npy")) for c in CAT_COLUMNS]
    return _VOCAB_CACHE[directory]


def chunk_table(chunk: CriteoChunk, vocabs: Sequence[Vocabulary], true_prob: Optional[np.ndarray] = None,
                missing_flags: bool = False) -> pa.Table:
    """The processed columns of a chunk: ``label`` int8, ``I1..I13`` float32 ``log(1 + max(x, 0))``
    (``M1..M13`` if ``missing_flags``), ``C1..C26`` int64 ids through ``vocabs`` (one per field, in
    ``CAT_COLUMNS`` order; unknown values -> OOV id), ``true_prob`` when given.

    Example:
        >>> from recsys_emb.data.criteo.reader import iter_criteo_tsv
        >>> from recsys_emb.data.synthetic import generate_criteo_like
        >>> g = generate_criteo_like(tmp / "raw", rows=50, scale=0.001, seed=0)
        >>> chunk = next(iter(iter_criteo_tsv(g.tsv)))
        >>> empty = Vocabulary.from_counts(np.zeros(0, np.int64), np.zeros(0, np.int64), 1)
        >>> t = chunk_table(chunk, [empty] * 26)
        >>> t.num_rows, t.num_columns, set(t.column("C1").to_pylist())  # every value unseen: the OOV id 0
        (50, 40, {0})
    """
    dense = np.log1p(np.maximum(chunk.ints, 0).astype(np.float64)).astype(np.float32)
    cols: Dict[str, pa.Array] = {LABEL_COLUMN: pa.array(chunk.labels, pa.int8())}
    for j, c in enumerate(INT_COLUMNS):
        cols[c] = pa.array(dense[:, j])
    if missing_flags:
        for j, c in enumerate(INT_COLUMNS):
            cols[f"M{c[1:]}"] = pa.array(chunk.int_missing[:, j].astype(np.int8))
    for j, c in enumerate(CAT_COLUMNS):
        cols[c] = pa.array(vocabs[j].lookup(chunk.cats[j]))
    if true_prob is not None:
        cols["true_prob"] = pa.array(true_prob.astype(np.float32))
    return pa.table(cols)


class UnitOutput(NamedTuple):
    """What :func:`write_unit` wrote: ``shards`` ``{split: [(path relative to out_dir, rows), ...]}`` for the
    splits the unit has rows in, and ``oov_rows``: per field (``CAT_COLUMNS`` order), the unit's rows whose
    value the vocabulary lacks."""

    shards: Dict[str, List[Tuple[str, int]]]
    oov_rows: List[int]


def write_unit(unit: Unit, *, first_line: int, first_row: int, bounds: Sequence[int], vocab_dir: PathLike,
               out_dir: PathLike, true_prob: Optional[PathLike] = None, missing_flags: bool = False,
               rows_per_shard: int = 1 << 21, row_group_rows: int = 1 << 17, chunk_bytes: int = CHUNK_BYTES,
               max_line_bytes: int = MAX_LINE_BYTES, cache: Optional[str] = None) -> UnitOutput:
    """Pass 3 over one unit: its rows (overall rows ``first_row`` on) categorified with the vocabularies
    of ``vocab_dir`` (:func:`save_vocab_arrays`) and written to
    ``out_dir/{split}/.unit-{index}/part-*.parquet``; a row's split follows from ``bounds`` (the ends of
    train, valid and test in overall rows). ``true_prob``: the input's side file of true probabilities.
    ``cache`` (:attr:`UnitScan.cache`): read pass 1's parsed chunks instead of the text (the text when
    they are gone), and delete them once the unit is written.

    Returns:
        :class:`UnitOutput`: the shards written and the OOV rows per field.
    """
    vocabs = _vocabs(str(vocab_dir))
    truth = np.load(true_prob, mmap_mode="r") if true_prob is not None else None
    out = Path(out_dir)
    writers: Dict[str, ShardedParquetWriter] = {}
    edges = np.asarray(bounds, np.int64)
    row = first_row
    oov_rows = [0] * len(CAT_COLUMNS)
    if _cache_present(cache):
        assert cache is not None
        chunks: Iterable[CriteoChunk] = (c for _, c in _cached_chunks(cache, unit.path, first_line))
    else:
        chunks = iter_file_chunks(unit.path, chunk_bytes=chunk_bytes, on_bad_line="skip", report=ReadReport(),
                                  max_line_bytes=max_line_bytes, byte_range=unit.byte_range, first_line=first_line)
    for chunk in chunks:
        tp = np.asarray(truth[chunk.lines - 1]) if truth is not None else None
        table = chunk_table(chunk, vocabs, tp, missing_flags)
        for j, c in enumerate(CAT_COLUMNS):
            oov_rows[j] += int(np.count_nonzero(table.column(c).to_numpy() == vocabs[j].oov_id))
        split_of_row = np.searchsorted(edges, row + np.arange(table.num_rows), side="right")
        for s_idx, s in enumerate(SPLITS):
            sel = np.flatnonzero(split_of_row == s_idx)
            if len(sel):
                if s not in writers:
                    sub = out / s / f".unit-{unit.index:06d}"
                    if sub.exists():  # a leftover of an earlier try of this unit
                        shutil.rmtree(sub)
                    writers[s] = ShardedParquetWriter(sub, rows_per_shard=rows_per_shard, row_group_rows=row_group_rows)
                writers[s].write(table.slice(int(sel[0]), len(sel)))  # rows of a split are contiguous
        row += table.num_rows
    shards = {s: [(f"{s}/.unit-{unit.index:06d}/{name}", n) for name, n in w.close()] for s, w in writers.items()}
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    return UnitOutput(shards, oov_rows)
