"""A streaming reader of Criteo TSV files (plain or gzip): blocks of whole lines, validated vectorized, with
malformed lines raised (``on_bad_line="error"``) or counted and skipped (``"skip"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys_emb.data.criteo.blocks import (
    LINE_REASONS,
    OVERLONG,
    Block,
    DamagedStream,
    OverlongLine,
    iter_line_blocks,
    line_byte_codes,
)
from recsys_emb.data.criteo.fields import parse_hex
from recsys_emb.data.criteo.fields import int64_overflow
from recsys_emb.data.criteo.fields import parse_ints as _parse_ints
from recsys_emb.data.criteo.inputs import expand_inputs, true_prob_path
from recsys_emb.data.criteo.schema import CAT_COLUMNS, INT_COLUMNS, LABEL_COLUMN, MISSING_ID, TSV_COLUMNS
from recsys_emb.errors import BadLineError, DataError

__all__ = [
    "BadLineError",
    "BadLine",
    "ReadReport",
    "CriteoChunk",
    "expand_inputs",
    "iter_criteo_tsv",
    "iter_file_chunks",
    "true_prob_path",
    "MAX_LINE_BYTES",
    "CHUNK_BYTES",
    "parse_hex",
]

logger = logging.getLogger(__name__)

_UNLABELLED_COLUMNS = TSV_COLUMNS[1:]  # the real test day: no label column
PathLike = Union[str, Path]

CHUNK_BYTES = 8 << 20
"""Bytes read and validated per block. Blocks of a few MiB keep the vectorised passes over a block in the CPU
caches: preprocessing 1M Criteo-like rows on the 2-core test machine took about twice the CPU time and
twice the peak memory with 64 MiB blocks (the earlier default)."""

MAX_LINE_BYTES = 4096
"""Longest line read (a valid Criteo line has at most 677 bytes); a longer one is a malformed line."""



@dataclass(frozen=True)
class BadLine:
    """One malformed line: file, 1-based physical line number, reason."""

    path: str
    line: int
    reason: str


@dataclass
class ReadReport:
    """What a read saw: valid rows, malformed lines (counted always; the first ``max_examples`` kept with
    their line numbers), counts per reason, and files whose compressed stream broke off (``truncated``:
    ``{"path", "last_good_line", "error"}`` each; the rest of such a file was not read)."""

    rows: int = 0
    bad_lines: int = 0
    by_reason: Dict[str, int] = field(default_factory=dict)
    examples: List[BadLine] = field(default_factory=list)
    max_examples: int = 1000
    truncated: List[Dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    """Physical lines read (not in :meth:`to_dict`): numbers the lines of the next piece of a file."""
    unit: str = "line"
    """What the examples' numbers count, their key in :meth:`to_dict`: ``"line"`` (1-based line of a text
    file) or ``"row"`` (0-based row of a Parquet file)."""

    def add_bad(self, path: str, lines: np.ndarray, reason: str) -> None:
        self.bad_lines += int(len(lines))
        self.by_reason[reason] = self.by_reason.get(reason, 0) + int(len(lines))
        room = self.max_examples - len(self.examples)
        for ln in lines[:max(room, 0)].tolist():
            self.examples.append(BadLine(path, int(ln), reason))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "rows": self.rows,
            "bad_lines": self.bad_lines,
            "by_reason": dict(sorted(self.by_reason.items())),
            "examples": [{"path": b.path, self.unit: b.line, "reason": b.reason} for b in self.examples],
            "examples_truncated": self.bad_lines > len(self.examples),
            "truncated": [dict(t) for t in self.truncated],
        }


@dataclass
class CriteoChunk:
    """Validated rows from one block of one file (``n`` rows).

    Attributes:
        labels: int8 ``(n,)``, 0 or 1; -1 in a file without a label column (``label="optional"``).
        ints: int64 ``(n, 13)`` raw counts (negatives kept), 0 where missing.
        int_missing: bool ``(n, 13)``.
        cats: int64 ``(26, n)`` (feature-major) raw hex values, ``MISSING_ID`` where empty.
        lines: int64 ``(n,)`` 1-based line numbers in ``path``.
        path: the file.
    """

    labels: np.ndarray
    ints: np.ndarray
    int_missing: np.ndarray
    cats: np.ndarray
    lines: np.ndarray
    path: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> "CriteoChunk":
        return CriteoChunk(self.labels[idx], self.ints[idx], self.int_missing[idx], self.cats[:, idx],
                           self.lines[idx], self.path)


def _overlong(max_line_bytes: int) -> str:
    return f"line longer than {max_line_bytes} bytes"


def _overlong_line(path: str, event: OverlongLine, max_line_bytes: int, skip_before_line: int, on_bad_line: str,
                   report: Optional[ReadReport]) -> None:
    """Count a line with no end within ``max_line_bytes`` and treat it as malformed (unless it lies before
    ``skip_before_line``, a resumed read's part already done): one rule for every text reader."""
    if report is not None:
        report.lines += 1
    if event.line >= skip_before_line:
        _bad(path, np.array([event.line]), _overlong(max_line_bytes), on_bad_line, report,
             detail=[f"no line end within {max_line_bytes} bytes"])


def _byte_detail(data: np.ndarray, tabs: np.ndarray, start: int, end: int, pos: int, columns: Sequence[str]) -> str:
    if pos < 0:
        return f"{end - start} bytes"
    k = int(np.searchsorted(tabs, pos) - np.searchsorted(tabs, start))
    where = columns[k] if k < len(columns) else f"field {k + 1}"
    return f"byte 0x{int(data[pos]):02x} at byte {pos - start + 1} of the line, in {where}"


def _columns_of(block: bytes) -> List[str]:
    """The columns of a file whose label column is optional, from its first block: 39 (no label) when
    more of its lines have 38 tabs than 39, else 40."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    tabs = np.flatnonzero(data == 9)
    ntabs = np.searchsorted(tabs, ends) - np.searchsorted(tabs, np.concatenate(([0], ends[:-1] + 1)))
    unlabelled = int((ntabs == len(_UNLABELLED_COLUMNS) - 1).sum())
    return _UNLABELLED_COLUMNS if unlabelled > int((ntabs == len(TSV_COLUMNS) - 1).sum()) else TSV_COLUMNS


def _parse_block(block: bytes, first_line: int, path: str, on_bad_line: str,
                 report: Optional[ReadReport], max_line_bytes: int = MAX_LINE_BYTES,
                 columns: Sequence[str] = TSV_COLUMNS) -> Optional[CriteoChunk]:
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lines = first_line + np.arange(len(ends), dtype=np.int64)
    tabs = np.flatnonzero(data == 9)
    ntabs = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts)
    # Lines are checked as bytes before any is parsed as text: the CSV parser would stop the whole block
    # at invalid UTF-8 or split a line at a stray \r.
    groups: List[Tuple[np.ndarray, str, str]] = []  # (line indices, reason, detail of the first)
    byte_bad = np.zeros(len(ends), dtype=bool)
    checked = line_byte_codes(data, starts, ends, len(tabs), max_line_bytes)
    if checked is not None:
        codes, first = checked
        byte_bad = codes > 0
        for code in np.unique(codes[byte_bad]).tolist():
            idx = np.flatnonzero(codes == code)
            i = int(idx[0])
            reason = _overlong(max_line_bytes) if code == OVERLONG else LINE_REASONS[code]
            groups.append((idx, reason, _byte_detail(data, tabs, int(starts[i]), int(ends[i]), int(first[i]),
                                                     columns)))
    col_bad = (ntabs != len(columns) - 1) & ~byte_bad
    if col_bad.any():
        idx = np.flatnonzero(col_bad)
        groups.append((idx, f"wrong column count (expected {len(columns)})", f"got {int(ntabs[idx[0]]) + 1}"))
    if groups:
        for idx, reason, detail in sorted(groups, key=lambda g: int(g[0][0])):  # "error" names the first line
            _bad(path, lines[idx], reason, on_bad_line, report, detail=[detail])
        good = ~(byte_bad | col_bad)
        keep = np.repeat(good, ends - starts + 1)
        data = data[keep]
        lines = lines[good]
        if data.size == 0:
            return None
        block = data.tobytes()
    table = pacsv.read_csv(
        pa.py_buffer(block),
        read_options=pacsv.ReadOptions(column_names=list(columns), block_size=max(len(block) + 1, 1 << 20)),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                                         double_quote=False, newlines_in_values=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    n = table.num_rows
    if n != len(lines):  # cannot happen after the tab count; guard against silent misalignment
        raise RuntimeError(f"{path}: parsed {n} rows from a block of {len(lines)} lines at line {first_line}")
    bad_rows = np.zeros(n, dtype=bool)
    reasons: List[Tuple[np.ndarray, str, str]] = []  # (rows, reason, column)

    if LABEL_COLUMN in columns:
        label_col = table.column(LABEL_COLUMN)
        is1 = pc.equal(label_col, "1").to_numpy(zero_copy_only=False)
        is0 = pc.equal(label_col, "0").to_numpy(zero_copy_only=False)
        bad_label = ~(is0 | is1)
        if bad_label.any():
            reasons.append((bad_label, "label not 0/1", LABEL_COLUMN))
        labels = is1.astype(np.int8)
    else:
        labels = np.full(n, -1, dtype=np.int8)

    ints = np.empty((n, len(INT_COLUMNS)), dtype=np.int64)
    int_missing = np.empty((n, len(INT_COLUMNS)), dtype=bool)
    for j, c in enumerate(INT_COLUMNS):
        v, m, b = _parse_ints(table.column(c))
        ints[:, j], int_missing[:, j] = v, m
        if b.any():
            big = int64_overflow(table.column(c), b)
            if big.any():
                reasons.append((big, f"{c} out of the int64 range", c))
            reasons.append((b & ~big, f"non-integer {c}", c))
    cats = np.empty((len(CAT_COLUMNS), n), dtype=np.int64)
    for j, c in enumerate(CAT_COLUMNS):
        v, b = parse_hex(table.column(c))
        cats[j] = v
        if b.any():
            reasons.append((b, f"non-hex {c}", c))
    for mask, _, _ in reasons:
        bad_rows |= mask
    if bad_rows.any():
        # One reason per line (the first that applies), so counts add up to bad lines.
        claimed = np.zeros(n, dtype=bool)
        if on_bad_line == "error":  # the error names the first bad line, whichever its reason
            reasons.sort(key=lambda r: int(np.argmax(r[0])) if r[0].any() else n)
        for mask, reason, column in reasons:
            mine = mask & ~claimed
            claimed |= mine
            if mine.any():
                first = table.column(column)[int(np.flatnonzero(mine)[0])].as_py()
                _bad(path, lines[mine], reason, on_bad_line, report, detail=[f"value {first!r}"])
        keep = ~bad_rows
        chunk = CriteoChunk(labels[keep], ints[keep], int_missing[keep], cats[:, keep], lines[keep], path)
    else:
        chunk = CriteoChunk(labels, ints, int_missing, cats, lines, path)
    return chunk if len(chunk) else None


def _bad(path: str, lines: np.ndarray, reason: str, on_bad_line: str, report: Optional[ReadReport],
         detail: Sequence[str] = ()) -> None:
    if on_bad_line == "error":
        extra = f" ({detail[0]})" if detail else ""
        raise BadLineError(f"{path}:{int(lines[0])}: malformed line: {reason}{extra}; "
                           f"pass on_bad_line='skip' (--on-bad-line skip) to skip and count such lines")
    if report is not None:
        report.add_bad(path, lines, reason)


def iter_criteo_tsv(inputs: Union[PathLike, Sequence[PathLike]], *, chunk_bytes: int = CHUNK_BYTES,
                    on_bad_line: str = "error", report: Optional[ReadReport] = None,
                    max_line_bytes: int = MAX_LINE_BYTES, label: str = "required") -> Iterator[CriteoChunk]:
    """Stream validated rows from Criteo TSV files (plain or gzip), one block of whole lines at a time.

    Memory is bounded by ``chunk_bytes`` (a few times it), whatever the file size. Files are read as bytes
    and lines validated vectorized: a byte that has no place in a Criteo line (non-ASCII, as in invalid
    UTF-8; NUL; another control character; a ``\r`` that does not end the line), a line longer than
    ``max_line_bytes``, a wrong column count, a label other than 0/1, a non-integer count or a categorical
    that is not 1-15 hex digits makes a line malformed. ``on_bad_line="error"`` raises
    :class:`BadLineError` naming the file and line; ``"skip"`` drops it and records it in ``report``
    (counted always, line numbers kept). Line ends may be LF, CRLF or CR-only (the same rows).

    A ``.gz`` stream that breaks off (truncated, corrupt) raises :class:`~recsys_emb.errors.DataError` naming
    the file and its last complete line under ``"error"``; under ``"skip"`` the rows before it are kept, the
    loss is recorded in ``report.truncated`` and reading goes on with the next file.

    Args:
        inputs: file paths or glob patterns (``.gz`` decompressed on the fly).
        chunk_bytes: bytes read per block.
        on_bad_line: ``"error"`` or ``"skip"``.
        report: a :class:`ReadReport` to fill (rows, bad lines, truncated files).
        max_line_bytes: longest line accepted.
        label: ``"required"`` (40 columns) or ``"optional"``: each file may also come without its label
            column (39 columns, as Criteo's test day), decided by the majority of its first block's lines;
            its rows get label -1, and lines of the other width are malformed.
    Yields:
        :class:`CriteoChunk` per block, rows in file order.

    Example:
        >>> from recsys_emb.data.synthetic import generate_criteo_like
        >>> g = generate_criteo_like(tmp / "raw", rows=1000, scale=0.001, seed=0)
        >>> rep = ReadReport()
        >>> sum(len(c) for c in iter_criteo_tsv(g.tsv, on_bad_line="skip", report=rep)), rep.bad_lines
        (1000, 0)

        On the real Kaggle files (not in the repository, so not run here):

        >>> rows = sum(len(c) for c in iter_criteo_tsv("day_0.gz", on_bad_line="skip", report=rep))  # doctest: +SKIP
    """
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
    if label not in ("required", "optional"):
        raise ValueError(f"label must be 'required' or 'optional', got {label!r}")
    for path in expand_inputs(inputs, streams=True):  # each read once, from its start
        yield from iter_file_chunks(path, chunk_bytes=chunk_bytes, on_bad_line=on_bad_line, report=report,
                                    max_line_bytes=max_line_bytes, label=label)


def iter_file_chunks(path: PathLike, *, chunk_bytes: int = CHUNK_BYTES, on_bad_line: str = "error",
                     report: Optional[ReadReport] = None, max_line_bytes: int = MAX_LINE_BYTES,
                     byte_range: Optional[Tuple[int, Optional[int]]] = None,
                     first_line: int = 1, skip_before_line: int = 0,
                     label: str = "required") -> Iterator[CriteoChunk]:
    """:func:`iter_criteo_tsv` for one file, or for the byte range ``byte_range=(start, end)`` of a plain
    file cut at line starts (:func:`recsys_emb.data.criteo.blocks.iter_line_blocks`), its first line
    numbered ``first_line``: the reading of one work unit of a parallel preprocess. Blocks whose lines
    all come before line ``skip_before_line`` are read but not parsed (their lines are not checked).
``label="optional"`` takes the columns (39 or 40) from the first block read, as :func:`iter_criteo_tsv`.

    Example:
        >>> from recsys_emb.data.synthetic import generate_criteo_like
        >>> g = generate_criteo_like(tmp / "raw", rows=100, scale=0.001, seed=0)
        >>> data = g.tsv.read_bytes(); cut = data.index(b"\\n", len(data) // 2) + 1
        >>> first = data[:cut].count(b"\\n") + 1  # the number of the range's first line
        >>> chunks = list(iter_file_chunks(g.tsv, byte_range=(cut, None), first_line=first))
        >>> sum(len(c) for c in chunks) == 100 - (first - 1), int(chunks[0].lines[0]) == first
        (True, True)
    """
    path = Path(path)
    columns: Optional[List[str]] = None if label == "optional" else TSV_COLUMNS
    for event in iter_line_blocks(path, chunk_bytes, max_line_bytes, byte_range=byte_range, first_line=first_line):
        if isinstance(event, Block):
            n_lines = event.data.count(b"\n")
            if report is not None:
                report.lines += n_lines
            if event.first_line + n_lines <= skip_before_line:
                continue
            columns = columns or _columns_of(event.data)
            chunk = _parse_block(event.data, event.first_line, str(path), on_bad_line, report, max_line_bytes,
                                 columns)
            if chunk is not None:
                if report is not None:
                    report.rows += len(chunk)
                yield chunk
        elif isinstance(event, OverlongLine):
            _overlong_line(str(path), event, max_line_bytes, skip_before_line, on_bad_line, report)
        else:
            _damaged(path, event, on_bad_line, report)


def _damaged(path: Path, event: DamagedStream, on_bad_line: str, report: Optional[ReadReport]) -> None:
    where = f"{path}: {event.error}"
    if on_bad_line == "error":
        raise DataError(f"{where}: nothing after line {event.last_line} (the last complete line) can be read; "
                        "re-download or re-compress the file, or pass on_bad_line='skip' (--on-bad-line skip) "
                        "to keep the rows before it")
    if report is None:
        logger.warning("%s: the rest of the file after line %d is lost", where, event.last_line)
    else:
        report.truncated.append({"path": str(path), "last_good_line": event.last_line, "error": event.error})
