"""A streaming reader of a user's table (CSV / TSV, plain or gzip, or Parquet) under a :class:`TableSpec`:
blocks of whole lines (the Criteo reader's :func:`~recsys_emb.data.criteo.blocks.iter_line_blocks`:
gzip on the fly, exact line numbers, overlong lines and broken streams reported), parsed into
:class:`RowChunk` s of raw values, with malformed lines raised naming ``file:line`` and the column
(``on_bad_line="error"``) or counted and skipped (``"skip"``).

Categorical values of any type (integers, strings, hex) become int64 keys: the 64-bit BLAKE2b hash of
their text (:func:`recsys_emb.hashing.hash_raw_value`), so ``"123"`` in a CSV file and ``123`` in a
Parquet file are one value; an empty value is ``MISSING_ID`` (-1), a category of its own.

Example:
    >>> _ = (tmp / "t.csv").write_text("click,site,price\\n1,a,3\\n0,b,\\n")
    >>> spec = TableSpec.from_dict({"label": "click", "dense": {"price": "none"}})
    >>> cols = read_columns(spec, tmp / "t.csv")
    >>> chunk = next(iter_table_chunks(tmp / "t.csv", spec, spec.resolve(cols)))
    >>> chunk.labels.tolist(), chunk.dense[:, 0].tolist(), chunk.lines.tolist()
    ([1, 0], [3.0, nan], [2, 3])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_emb.data.criteo.blocks import Block, OverlongLine, iter_line_blocks
from recsys_emb.data.criteo.fields import parse_hex
from recsys_emb.data.criteo.reader import ReadReport, _bad, _damaged, _overlong_line
from recsys_emb.data.criteo.schema import MISSING_ID
from recsys_emb.data.tabular.schema import ResolvedColumns, TableSpec
from recsys_emb.errors import DataError
from recsys_emb.hashing import hash_raw_value

__all__ = ["RowChunk", "iter_table_chunks", "read_columns", "hash_keys", "int_keys", "ranges", "frame_chunk", "TEXT_MAX_LINE_BYTES", "SPLIT_BY_POSITION"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
TEXT_MAX_LINE_BYTES = 1 << 20
"""Longest text line read (histories make long lines); a longer one is a malformed line."""
SPLIT_BY_POSITION = -1
"""``RowChunk.split`` of a row whose split follows from its position among all rows (split by fractions)."""
_PARQUET_BATCH_ROWS = 1 << 16


@dataclass
class RowChunk:
    """Validated rows of one block of one file (``n`` rows), raw values.

    Attributes:
        labels: int8 ``(n,)`` 0/1; -1 where the file has no label column.
        dense: float64 ``(n, D)``, NaN where missing (``D`` = the spec's dense columns).
        cats: int64 ``(K, n)`` keys of the categorical columns (:func:`hash_keys`).
        bags: per multi-valued then sequence column, ``(offsets (n + 1,), keys)``.
        split: int8 ``(n,)``: 0/1/2 (train/valid/test) or :data:`SPLIT_BY_POSITION`.
        lines: int64 ``(n,)`` 1-based line numbers (Parquet: row numbers) in ``path``.
        path: the file as messages name it.
        kept: the spec's ``keep`` columns, as read (``n`` values each).
    """

    labels: np.ndarray
    dense: np.ndarray
    cats: np.ndarray
    bags: List[Tuple[np.ndarray, np.ndarray]]
    split: np.ndarray
    lines: np.ndarray
    path: str
    kept: Dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _as_binary(arr: Union[pa.Array, pa.ChunkedArray]) -> pa.Array:
    """Any column as binary text, null -> empty."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_null(arr.type):
        return pa.array([b""] * len(arr), pa.binary())
    if not (pa.types.is_binary(arr.type) or pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return pc.cast(arr, pa.binary()).fill_null(b"")


def hash_keys(arr: Union[pa.Array, pa.ChunkedArray]) -> np.ndarray:
    """int64 keys of a column of raw categorical values: each distinct text hashed once
    (:func:`~recsys_emb.hashing.hash_raw_value`); empty or null -> ``MISSING_ID``.

    Example:
        >>> k = hash_keys(pa.array(["a", "", None, "a"]))
        >>> bool(k[0] == k[3]), k[1:3].tolist()
        (True, [-1, -1])
    """
    enc = pc.dictionary_encode(_as_binary(arr))
    distinct = enc.dictionary.to_pylist()
    table = np.fromiter((MISSING_ID if not v else hash_raw_value(v) for v in distinct), np.int64, len(distinct))
    idx = enc.indices.to_numpy(zero_copy_only=False)
    return table[idx] if len(idx) else np.zeros(0, np.int64)


def _dense_values(arr: Union[pa.Array, pa.ChunkedArray]) -> Tuple[np.ndarray, np.ndarray]:
    """(float64 values, NaN where missing; bool bad mask) of a numeric or text column."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        v = pc.cast(arr, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        return v, np.zeros(len(v), bool)
    b = _as_binary(arr)
    missing = pc.equal(pc.binary_length(b), 0)
    try:
        v = pc.cast(pc.cast(pc.if_else(missing, pa.scalar(b"nan"), b), pa.string()), pa.float64())
        return v.to_numpy(zero_copy_only=False), np.zeros(len(b), bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out = np.full(len(b), np.nan)
    bad = np.zeros(len(b), bool)
    for i, raw in enumerate(b.to_pylist()):
        if raw:
            try:
                out[i] = float(raw.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                bad[i] = True
    return out, bad


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each pair, vectorized.

    Example:
        >>> ranges(np.array([5, 0]), np.array([2, 3])).tolist()
        [5, 6, 0, 1, 2]
    """
    total = int(lengths.sum())
    out_start = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - out_start, lengths)


def int_keys(arr: Union[pa.Array, pa.ChunkedArray]) -> Tuple[np.ndarray, np.ndarray]:
    """``(int64 keys, bool bad mask)`` of a column of decimal integers (``values: int``): each value's
    number; empty or null -> ``MISSING_ID``; a value that is no integer is bad.

    Example:
        >>> k, bad = int_keys(pa.array(["12", "", "x", "7"]))
        >>> k.tolist(), bad.tolist()
        ([12, -1, -1, 7], [False, False, True, False])
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type):
        return pc.cast(arr, pa.int64()).fill_null(MISSING_ID).to_numpy(zero_copy_only=False), np.zeros(len(arr), bool)
    b = pc.cast(_as_binary(arr), pa.string())
    empty = pc.equal(pc.utf8_length(b), 0)
    try:
        v = pc.cast(pc.if_else(empty, pa.scalar(str(MISSING_ID)), b), pa.int64())
        return v.to_numpy(zero_copy_only=False), np.zeros(len(b), bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out = np.full(len(b), MISSING_ID, np.int64)
    bad = np.zeros(len(b), bool)
    for i, raw in enumerate(b.to_pylist()):
        if raw:
            try:
                out[i] = int(raw.strip())
            except ValueError:
                bad[i] = True
    return out, bad


def _whole_ids(arr: Union[pa.Array, pa.ChunkedArray], buckets: Optional[int]) -> bool:
    """Whether ``arr`` is a list column of integers, each within ``[0, buckets)`` when ``buckets`` is given."""
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) or not pa.types.is_integer(arr.type.value_type):
        return False
    if buckets is None:
        return True
    mm = pc.min_max(pc.list_flatten(arr)).as_py()
    return mm["min"] is None or (mm["min"] >= 0 and mm["max"] < buckets)


def _bag(arr: Union[pa.Array, pa.ChunkedArray], separator: str, max_len: Optional[int], values: str = "text",
         bad_rows: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(offsets (n + 1,), keys)`` of a column of lists: text split on ``separator`` (empty pieces
    dropped), or a Parquet list column; with ``max_len`` only each row's last ``max_len`` values.
    ``values: int``: the keys are the values' numbers (:func:`int_keys`), and ``bad_rows`` (a bool
    ``(n,)`` array), when given, is set where a row holds a value that is no integer."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lists = arr.fill_null([])
    else:
        lists = pc.split_pattern(_as_binary(arr), separator)
    flat = pc.list_flatten(lists)
    lens = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    row_of = np.repeat(np.arange(len(lens)), lens)
    if values == "int":
        keys, bad = int_keys(flat)
        if bad_rows is not None and bad.any():
            bad_rows |= np.bincount(row_of[bad], minlength=len(lens)) > 0
    else:
        keys = hash_keys(flat)
    keep = keys != MISSING_ID  # empty pieces: "a||b", or an empty cell
    if keep.all() and (max_len is None or not len(lens) or lens.max() <= max_len):  # nothing to drop
        return np.concatenate(([0], np.cumsum(lens))).astype(np.int64), keys
    if max_len is not None:
        rows_kept = row_of[keep]
        n_kept = np.bincount(rows_kept, minlength=len(lens))
        rank = np.arange(len(rows_kept)) - (np.cumsum(n_kept) - n_kept)[rows_kept]  # index within its row
        keep[keep] = rank >= n_kept[rows_kept] - max_len
    new_lens = np.bincount(row_of[keep], minlength=len(lens)).astype(np.int64)
    return np.concatenate(([0], np.cumsum(new_lens))).astype(np.int64), keys[keep]


class _Bads:
    """The malformed lines of a block, by reason; :meth:`flush` raises for the earliest under ``"error"``."""

    def __init__(self) -> None:
        self.groups: List[Tuple[np.ndarray, str, str]] = []

    def add(self, lines: np.ndarray, reason: str, detail: str = "") -> None:
        if len(lines):
            self.groups.append((np.asarray(lines, np.int64), reason, detail))

    def flush(self, path: str, on_bad_line: str, report: Optional[ReadReport]) -> None:
        for lines, reason, detail in sorted(self.groups, key=lambda g: int(g[0].min())):
            _bad(path, np.sort(lines), reason, on_bad_line, report, detail=[detail] if detail else [])


def _value_detail(arr: pa.Array, i: int) -> str:
    v = arr[i].as_py()
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return f"value {v!r}"


def _convert(columns: Dict[str, pa.Array], n: int, lines: np.ndarray, spec: TableSpec, cols: ResolvedColumns,
             role: Optional[int], bads: _Bads, hex_keys: Dict[str, np.ndarray]
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(keep, labels, dense, split)`` of a chunk's rows: the bool mask of rows to keep, after recording
    bad ones in ``bads`` (one reason per row: the first that applies), and the labels, dense values and
    splits of all rows."""
    reasons: List[Tuple[np.ndarray, str, pa.Array]] = []
    if cols.label in columns:
        lab = columns[cols.label]
        if pa.types.is_integer(lab.type) or pa.types.is_boolean(lab.type) or pa.types.is_floating(lab.type):
            v = pc.cast(lab, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
            is1, is0 = v == 1, v == 0
        else:
            b = _as_binary(lab)
            is1 = pc.equal(b, pa.scalar(b"1")).to_numpy(zero_copy_only=False)
            is0 = pc.equal(b, pa.scalar(b"0")).to_numpy(zero_copy_only=False)
        reasons.append((~(is0 | is1), f"label column {cols.label!r} not 0/1", lab))
        labels = is1.astype(np.int8)
    else:  # a file to score, without labels
        labels = np.full(n, -1, np.int8)
    dense = np.empty((n, len(cols.dense)), np.float64)
    for j, c in enumerate(cols.dense):
        dense[:, j], b_ = _dense_values(columns[c])
        reasons.append((b_, f"non-numeric value in dense column {c!r}", columns[c]))
    for c in cols.categorical:
        o = spec.vocab_options(c)
        if o.values == "hex":
            hex_keys[c], hbad = parse_hex(pc.cast(_as_binary(columns[c]), pa.string()))
            reasons.append((hbad, f"non-hex value in column {c!r}", columns[c]))
        elif o.values == "int" or o.vocab == "ids":
            hex_keys[c], ibad = int_keys(columns[c])
            reasons.append((ibad, f"non-integer value in column {c!r}", columns[c]))
        if o.vocab == "ids":
            assert o.buckets is not None
            out = ((hex_keys[c] < 0) | (hex_keys[c] >= o.buckets)) & ~reasons[-1][0]
            reasons.append((out, f"id out of [0, {o.buckets}) in column {c!r}", columns[c]))
    for c in cols.bags:
        o = spec.vocab_options(c)
        if _whole_ids(columns[c], o.buckets if o.vocab == "ids" else None):
            continue  # a list column of integers (within the buckets): no value can be bad
        if o.values == "int" or o.vocab == "ids":
            sep = spec.multi_valued[c] if c in spec.multi_valued else spec.sequence[c].separator
            ibad = np.zeros(n, bool)
            off, keys = _bag(columns[c], sep, None, "int", ibad)
            reasons.append((ibad, f"non-integer value in column {c!r}", columns[c]))
            if o.vocab == "ids":
                assert o.buckets is not None
                out = np.bincount(np.repeat(np.arange(n), np.diff(off))[(keys < 0) | (keys >= o.buckets)],
                                  minlength=n) > 0
                reasons.append((out, f"id out of [0, {o.buckets}) in column {c!r}", columns[c]))
    split = np.full(n, SPLIT_BY_POSITION if role is None else role, np.int8)
    tc = spec.split.time_column
    if role is None and tc is not None:
        if isinstance(spec.split.valid, str):
            t = pc.cast(_as_binary(columns[tc]), pa.string())
            ge_valid = pc.greater_equal(t, spec.split.valid).to_numpy(zero_copy_only=False)
            ge_test = pc.greater_equal(t, spec.split.test).to_numpy(zero_copy_only=False)
            reasons.append((pc.equal(pc.binary_length(t), 0).to_numpy(zero_copy_only=False),
                            f"empty time column {tc!r}", columns[tc]))
        else:
            tv, tbad = _dense_values(columns[tc])
            reasons.append((tbad | np.isnan(tv), f"time column {tc!r} not a number", columns[tc]))
            ge_valid, ge_test = tv >= spec.split.valid, tv >= spec.split.test
        split = np.where(ge_test, 2, np.where(ge_valid, 1, 0)).astype(np.int8)
    bad = np.zeros(n, bool)
    for mask, reason, arr in reasons:
        mine = mask & ~bad
        if mine.any():
            i = int(np.flatnonzero(mine)[0])
            bads.add(lines[mine], reason, _value_detail(arr, i))
        bad |= mask
    return ~bad, labels, dense, split


def _chunk(columns: Dict[str, pa.Array], lines: np.ndarray, path: str, spec: TableSpec, cols: ResolvedColumns,
           role: Optional[int], bads: _Bads) -> Optional[RowChunk]:
    n = len(lines)
    hex_keys: Dict[str, np.ndarray] = {}
    keep, labels, dense, split = _convert(columns, n, lines, spec, cols, role, bads, hex_keys)
    idx = np.flatnonzero(keep)
    if len(idx) < n:
        columns = {k: v.take(pa.array(idx)) for k, v in columns.items()}
        lines, labels, dense, split = lines[idx], labels[idx], dense[idx], split[idx]
        hex_keys = {k: v[idx] for k, v in hex_keys.items()}
    if not len(lines):
        return None
    cats = np.empty((len(cols.categorical), len(lines)), np.int64)
    for j, c in enumerate(cols.categorical):
        cats[j] = hex_keys[c] if c in hex_keys else hash_keys(columns[c])
    def values(c: str) -> str:
        o = spec.vocab_options(c)
        return "int" if o.vocab == "ids" else o.values

    bags = [_bag(columns[c], spec.multi_valued[c], None, values(c)) for c in cols.multi_valued]
    bags += [_bag(columns[c], spec.sequence[c].separator, spec.sequence[c].max_len, values(c)) for c in cols.sequence]
    return RowChunk(labels, dense, cats, bags, split, lines, path, {c: columns[c] for c in spec.keep if c in columns})


def _needed(spec: TableSpec, cols: ResolvedColumns) -> List[str]:
    need = [cols.label, *cols.dense, *cols.categorical, *cols.bags, *spec.keep]
    if spec.split.time_column is not None:
        need.append(spec.split.time_column)
    return list(dict.fromkeys(need))


def _csv_options(spec: TableSpec, names: Sequence[str], invalid: List[Tuple[int, int]]) -> Tuple[
        pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    def handler(row: pacsv.InvalidRow) -> str:
        invalid.append((int(row.number or 0), int(row.actual_columns)))
        return "skip"

    return (pacsv.ReadOptions(column_names=list(names), use_threads=False, block_size=1 << 30),
            pacsv.ParseOptions(delimiter=spec.field_delimiter, quote_char='"', newlines_in_values=False,
                               ignore_empty_lines=False, invalid_row_handler=handler),
            pacsv.ConvertOptions(column_types={c: pa.binary() for c in names}, strings_can_be_null=False,
                                 quoted_strings_can_be_null=False))


def _parse_lines(data: bytes, spec: TableSpec, names: Sequence[str], want: Sequence[str]
                 ) -> Tuple[Optional[pa.Table], List[Tuple[int, int]]]:
    """The block parsed, and its rows of a wrong width ``(1-based row, columns)``; ``None`` when the
    parser's rows do not line up with the lines (a quote left open across lines)."""
    invalid: List[Tuple[int, int]] = []
    ro, po, co = _csv_options(spec, names, invalid)
    co.include_columns = list(want)
    try:
        table = pacsv.read_csv(pa.py_buffer(data), read_options=ro, parse_options=po, convert_options=co)
    except pa.ArrowInvalid:
        return None, invalid
    if table.num_rows + len(invalid) != data.count(b"\n"):
        return None, invalid
    return table, invalid


def _text_chunk(block: Block, path: str, spec: TableSpec, cols: ResolvedColumns, role: Optional[int],
                on_bad_line: str, report: Optional[ReadReport], header: bool) -> Optional[RowChunk]:
    data, first = block.data, block.first_line
    if header:  # the file's first line
        cut = data.index(b"\n") + 1
        data, first = data[cut:], first + 1
    if not data:
        return None
    arr = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lines = first + np.arange(len(ends), dtype=np.int64)
    bads = _Bads()
    content = ends - starts - (arr[np.maximum(ends - 1, 0)] == 13)
    empty = content <= 0
    bads.add(lines[empty], "empty line")
    bad = empty.copy()
    cr = np.flatnonzero(arr == 13)
    lone = cr[arr[cr + 1] != 10]
    if lone.size:
        m = np.zeros(len(ends), bool)
        m[np.searchsorted(ends, lone)] = True
        bads.add(lines[m & ~bad], "carriage return inside a line")
        bad |= m
    names = cols.file_columns
    want = [c for c in _needed(spec, cols) if c in names]
    if bad.any():
        keep_bytes = np.repeat(~bad, ends - starts + 1)
        data = arr[keep_bytes].tobytes()
        lines = lines[~bad]
    table, invalid = _parse_lines(data, spec, names, want) if data else (None, [])
    if data and table is None:  # a quote open across lines: find the lines that do not parse alone
        pieces = data.split(b"\n")[:-1]
        ok = np.ones(len(pieces), bool)
        for i, piece in enumerate(pieces):
            t, inv = _parse_lines(piece + b"\n", spec, names, want)
            if t is None or inv or t.num_rows != 1:
                ok[i] = False
        bads.add(lines[~ok], "unbalanced quotes", "a quoted field must close on its line")
        data = b"".join(p + b"\n" for p, k in zip(pieces, ok) if k)
        lines = lines[ok]
        table, invalid = _parse_lines(data, spec, names, want) if data else (None, [])
    if invalid:
        rows = np.array([r for r, _ in invalid], np.int64) - 1
        bads.add(lines[rows], f"wrong column count (expected {len(names)})", f"got {invalid[0][1]}")
        lines = np.delete(lines, rows)
    chunk = None
    if table is not None and table.num_rows:
        columns = {c: table.column(c).combine_chunks() for c in want}
        chunk = _chunk(columns, lines, path, spec, cols, role, bads)
    bads.flush(path, on_bad_line, report)
    return chunk


def _header(path: Path, spec: TableSpec) -> List[str]:
    for event in iter_line_blocks(path, 1 << 16, TEXT_MAX_LINE_BYTES):
        if isinstance(event, Block):
            line = event.data[: event.data.index(b"\n") + 1]
            try:
                t = pacsv.read_csv(pa.py_buffer(line), read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                                   parse_options=pacsv.ParseOptions(delimiter=spec.field_delimiter),
                                   convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False))
                names = [str(t.column(i)[0].as_py()) for i in range(t.num_columns)]
            except (pa.ArrowInvalid, IndexError):
                raise DataError(f"{path}:1: the header line cannot be read as {spec.format}") from None
            return [n.strip().lstrip("\ufeff") for n in names]
        break
    raise DataError(f"{path} is empty: its header line (header: true in the schema) is missing")


def read_columns(spec: TableSpec, path: PathLike) -> List[str]:
    """The columns of a file in order: its header, the spec's ``names``, or its Parquet schema."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {str(p)!r} does not exist")
    if spec.format == "parquet":
        try:
            return list(pq.ParquetFile(p).schema_arrow.names)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{p} is not a readable Parquet file ({' '.join(str(e).split())})") from None
    return _header(p, spec) if spec.header else list(spec.names)


def _parquet_chunks(path: Path, shown: str, spec: TableSpec, cols: ResolvedColumns, role: Optional[int],
                    on_bad_line: str, report: Optional[ReadReport], label_required: bool,
                    skip_before_line: int) -> Iterator[RowChunk]:
    f = pq.ParquetFile(path)
    names = f.schema_arrow.names
    want = [c for c in _needed(spec, cols) if c in names or (c != cols.label and c not in spec.keep) or label_required]
    lacking = [c for c in want if c not in names]
    if lacking:
        raise DataError(f"{shown}: lacks the schema's columns {lacking}")
    row = 1
    for rb in f.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=want):
        n = rb.num_rows
        lines = np.arange(row, row + n, dtype=np.int64)
        row += n
        if report is not None:
            report.lines += n
        if row <= skip_before_line:
            continue
        bads = _Bads()
        columns = {c: rb.column(c) for c in want}
        chunk = _chunk(columns, lines, shown, spec, cols, role, bads)
        bads.flush(shown, on_bad_line, report)
        if chunk is not None:
            if report is not None:
                report.rows += len(chunk)
            yield chunk


def iter_table_chunks(path: PathLike, spec: TableSpec, cols: ResolvedColumns, *, role: Optional[int] = None,
                      chunk_bytes: int = 8 << 20, on_bad_line: str = "error", report: Optional[ReadReport] = None,
                      byte_range: Optional[Tuple[int, Optional[int]]] = None, first_line: int = 1,
                      skip_before_line: int = 0, shown: Optional[str] = None,
                      label_required: bool = True) -> Iterator[RowChunk]:
    """Validated rows of one file (or the byte range of a plain text file cut at line starts, its first
    line numbered ``first_line``), one block at a time.

    Args:
        path: the file (text, ``.gz`` decompressed on the fly; or Parquet, by the spec's format).
        spec, cols: the spec and its columns resolved against the file's.
        role: the split of every row (0/1/2, a file given as training, validation or test input), or None
            (by the spec's time column, or by position).
        on_bad_line: ``"error"`` raises :class:`~recsys_emb.errors.BadLineError` naming ``file:line``,
            the column and the value; ``"skip"`` drops the line and counts it in ``report``.
        skip_before_line: blocks whose lines all come before this line are read but not parsed.
        shown: the file's name in messages (default ``path``).
        label_required: a file without the label column is an error (else its rows get label -1).
    Yields:
        :class:`RowChunk` per block, rows in file order.
    """
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    p = Path(path)
    name = shown or str(p)
    if spec.format == "parquet":
        yield from _parquet_chunks(p, name, spec, cols, role, on_bad_line, report, label_required, skip_before_line)
        return
    header = spec.header and (byte_range is None or byte_range[0] == 0)
    for event in iter_line_blocks(p, chunk_bytes, TEXT_MAX_LINE_BYTES, byte_range=byte_range, first_line=first_line):
        if isinstance(event, Block):
            at_header, header = header, False
            n_lines = event.data.count(b"\n")
            if report is not None:
                report.lines += n_lines
            if event.first_line + n_lines <= skip_before_line:
                continue
            chunk = _text_chunk(event, name, spec, cols, role, on_bad_line, report, at_header)
            if chunk is not None:
                if report is not None:
                    report.rows += len(chunk)
                yield chunk
        elif isinstance(event, OverlongLine):
            _overlong_line(name, event, TEXT_MAX_LINE_BYTES, skip_before_line, on_bad_line, report)
        else:
            _damaged(Path(name), event, on_bad_line, report)


def frame_chunk(table: pa.Table, spec: TableSpec, cols: ResolvedColumns, shown: str = "<frame>") -> RowChunk:
    """The rows of a pyarrow Table in the schema's raw column names as one :class:`RowChunk` (rows
    numbered from 1); the label column may be absent (label -1). A malformed row raises
    :class:`~recsys_emb.errors.BadLineError` naming ``<frame>:row``, the column and the value."""
    need = [c for c in _needed(spec, cols) if c != cols.label and c not in spec.keep]
    lacking = [c for c in need if c not in table.column_names]
    if lacking:
        raise DataError(f"{shown}: lacks the schema's columns {lacking}")
    lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
    columns = {c: table.column(c).combine_chunks() for c in need + [cols.label, *spec.keep] if c in table.column_names}
    bads = _Bads()
    chunk = _chunk(columns, lines, shown, spec, cols, None, bads)
    bads.flush(shown, "error", None)
    if chunk is None:
        return RowChunk(np.zeros(0, np.int8), np.zeros((0, len(cols.dense))), np.zeros((len(cols.categorical), 0),
                        np.int64), [(np.zeros(1, np.int64), np.zeros(0, np.int64)) for _ in cols.bags],
                        np.zeros(0, np.int8), lines[:0], shown)
    return chunk
