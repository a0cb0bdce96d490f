"""Criteo Kaggle (Display Advertising Challenge) schema, a streaming TSV reader and preprocessing.

Raw TSV (label, I1..I13 counts, C1..C26 hex strings; empty = missing; plain or .gz) -> validated chunks ->
categorify by frequency -> time-ordered train / valid / test Parquet shards + ``metadata.json``.
"""

from __future__ import annotations

import glob as _glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys_emb.errors import BadLineError
from recsys_emb.data.parquet import (
    SPLITS,
    ShardedParquetWriter,
    TableSchema,
    time_split_sizes,
    write_metadata,
)

__all__ = [
    "CRITEO_KAGGLE_ROWS",
    "CRITEO_KAGGLE_CARDINALITIES",
    "INT_COLUMNS",
    "CAT_COLUMNS",
    "LABEL_COLUMN",
    "TSV_COLUMNS",
    "MISSING_ID",
    "BadLineError",
    "BadLine",
    "ReadReport",
    "CriteoChunk",
    "expand_inputs",
    "iter_criteo_tsv",
    "true_prob_path",
    "Vocabulary",
    "preprocess",
    "criteo_schema",
    "load_counts",
    "load_vocabulary",
]

logger = logging.getLogger(__name__)

CRITEO_KAGGLE_ROWS = 45_840_617
"""Rows in the Kaggle Display Advertising Challenge ``train.txt``."""

CRITEO_KAGGLE_CARDINALITIES: List[int] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]
"""Distinct values of C1..C26 in the Kaggle ``train.txt`` (45,840,617 rows)."""

LABEL_COLUMN = "label"
INT_COLUMNS: List[str] = [f"I{i}" for i in range(1, 14)]
CAT_COLUMNS: List[str] = [f"C{i}" for i in range(1, 27)]
TSV_COLUMNS: List[str] = [LABEL_COLUMN] + INT_COLUMNS + CAT_COLUMNS
MISSING_ID = -1
"""Raw value of an empty categorical: counted and ranked like any other value (its own category)."""

_N_TABS = len(TSV_COLUMNS) - 1
_MAX_HEX_DIGITS = 15  # keeps every raw value a non-negative int64, so MISSING_ID = -1 cannot collide
_HEX_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LUT[_c] = 10 + _i
_INT_RE = r"^(-?[0-9]{1,18})?$"
PathLike = Union[str, Path]


@dataclass(frozen=True)
class BadLine:
    """One malformed line: file, 1-based physical line number, reason."""

    path: str
    line: int
    reason: str


@dataclass
class ReadReport:
    """What a read saw: valid rows, malformed lines (counted always; the first ``max_examples`` kept with
    their line numbers), counts per reason."""

    rows: int = 0
    bad_lines: int = 0
    by_reason: Dict[str, int] = field(default_factory=dict)
    examples: List[BadLine] = field(default_factory=list)
    max_examples: int = 1000

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
            "examples": [{"path": b.path, "line": b.line, "reason": b.reason} for b in self.examples],
            "examples_truncated": self.bad_lines > len(self.examples),
        }


@dataclass
class CriteoChunk:
    """Validated rows from one block of one file (``n`` rows).

    Attributes:
        labels: int8 ``(n,)``, 0 or 1.
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


def expand_inputs(inputs: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    """Files named by paths and/or glob patterns, each pattern's matches sorted; errors if none exist."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out: List[Path] = []
    for item in items:
        s = str(item)
        if any(ch in s for ch in "*?["):
            matches = sorted(_glob.glob(s))
            if not matches:
                raise FileNotFoundError(f"no file matches {s!r}")
            out.extend(Path(m) for m in matches)
        else:
            if not Path(s).is_file():
                raise FileNotFoundError(f"input file {s!r} does not exist")
            out.append(Path(s))
    return out


def _iter_blocks(path: Path, chunk_bytes: int) -> Iterator[Tuple[bytes, int]]:
    """Blocks of whole lines (each ending in ``\\n``) and the 1-based line number of their first line."""
    line = 1
    rest = b""
    with pa.input_stream(str(path), compression="detect") as stream:
        while True:
            data = stream.read(chunk_bytes)
            if not data:
                break
            buf = rest + data
            cut = buf.rfind(b"\n")
            if cut < 0:  # a line longer than the block: keep reading
                rest = buf
                continue
            block, rest = buf[:cut + 1], buf[cut + 1:]
            yield block, line
            line += block.count(b"\n")
    if rest:
        yield rest + b"\n", line


def _parse_hex(arr: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """Hex strings -> (int64 values with MISSING_ID for empty, bool bad mask), vectorized."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.string():
        arr = arr.cast(pa.string())
    n = len(arr)
    offs = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + n + 1)[arr.offset:].astype(np.int64)
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lens = np.diff(offs)
    chars = data[offs[0]:offs[-1]]
    digits = _HEX_LUT[chars]
    bad = lens > _MAX_HEX_DIGITS
    values = np.full(n, MISSING_ID, dtype=np.int64)
    if chars.size:
        rows = np.repeat(np.arange(n, dtype=np.int64), lens)
        invalid = digits == 255
        if invalid.any():
            bad |= np.bincount(rows[invalid], minlength=n) > 0
            digits = np.where(invalid, 0, digits)
        pos = (offs[1:] - offs[0])[rows] - 1 - np.arange(chars.size, dtype=np.int64)
        pos = np.minimum(pos, 15)
        contrib = digits.astype(np.uint64) << (4 * pos).astype(np.uint64)
        nonempty = lens > 0
        starts = (offs[:-1] - offs[0])[nonempty]
        values[nonempty] = np.bitwise_or.reduceat(contrib, starts).view(np.int64)
    return values, bad


def _parse_ints(col: pa.Array) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer strings -> (int64 values, missing mask, bad mask)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    missing = pc.equal(pc.binary_length(col), 0)
    filled = pc.if_else(missing, pa.scalar("0"), col)
    try:
        values = pc.cast(filled, pa.int64())
        bad = np.zeros(len(col), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = pc.match_substring_regex(col, _INT_RE)
        bad = ~ok.to_numpy(zero_copy_only=False)
        values = pc.cast(pc.if_else(ok, filled, pa.scalar("0")), pa.int64())
    return values.to_numpy(zero_copy_only=False), missing.to_numpy(zero_copy_only=False), bad


def _parse_block(block: bytes, first_line: int, path: str, on_bad_line: str,
                 report: Optional[ReadReport]) -> Optional[CriteoChunk]:
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lines = first_line + np.arange(len(ends), dtype=np.int64)
    tabs = np.flatnonzero(data == 9)
    ntabs = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts)
    good = ntabs == _N_TABS
    if not good.all():
        bad_idx = np.flatnonzero(~good)
        _bad(path, lines[bad_idx], f"wrong column count (expected {len(TSV_COLUMNS)})", on_bad_line, report,
             detail=[f"got {int(ntabs[i]) + 1}" for i in bad_idx[:1]])
        keep = np.repeat(good, ends - starts + 1)
        data = data[keep]
        lines = lines[good]
        if data.size == 0:
            return None
        block = data.tobytes()
    table = pacsv.read_csv(
        pa.py_buffer(block),
        read_options=pacsv.ReadOptions(column_names=TSV_COLUMNS, block_size=max(len(block) + 1, 1 << 20)),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False,
                                         double_quote=False, newlines_in_values=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in TSV_COLUMNS},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    n = table.num_rows
    if n != len(lines):  # cannot happen after the tab count; guard against silent misalignment
        raise RuntimeError(f"{path}: parsed {n} rows from a block of {len(lines)} lines at line {first_line}")
    bad_rows = np.zeros(n, dtype=bool)
    reasons: List[Tuple[np.ndarray, str]] = []

    label_col = table.column(LABEL_COLUMN)
    is1 = pc.equal(label_col, "1").to_numpy(zero_copy_only=False)
    is0 = pc.equal(label_col, "0").to_numpy(zero_copy_only=False)
    bad_label = ~(is0 | is1)
    if bad_label.any():
        reasons.append((bad_label, "label not 0/1"))
    labels = is1.astype(np.int8)

    ints = np.empty((n, len(INT_COLUMNS)), dtype=np.int64)
    int_missing = np.empty((n, len(INT_COLUMNS)), dtype=bool)
    for j, c in enumerate(INT_COLUMNS):
        v, m, b = _parse_ints(table.column(c))
        ints[:, j], int_missing[:, j] = v, m
        if b.any():
            reasons.append((b, f"non-integer {c}"))
    cats = np.empty((len(CAT_COLUMNS), n), dtype=np.int64)
    for j, c in enumerate(CAT_COLUMNS):
        v, b = _parse_hex(table.column(c))
        cats[j] = v
        if b.any():
            reasons.append((b, f"non-hex {c}"))
    for mask, _ in reasons:
        bad_rows |= mask
    if bad_rows.any():
        # One reason per line (the first that applies), so counts add up to bad lines.
        claimed = np.zeros(n, dtype=bool)
        for mask, reason in reasons:
            mine = mask & ~claimed
            claimed |= mine
            if mine.any():
                _bad(path, lines[mine], reason, on_bad_line, report)
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


def iter_criteo_tsv(inputs: Union[PathLike, Sequence[PathLike]], *, chunk_bytes: int = 64 << 20,
                    on_bad_line: str = "error", report: Optional[ReadReport] = None) -> Iterator[CriteoChunk]:
    """Stream validated rows from Criteo TSV files (plain or gzip), one block of whole lines at a time.

    Memory is bounded by ``chunk_bytes`` (a few times it), whatever the file size. Lines are validated
    vectorized: a wrong column count, a label other than 0/1, a non-integer count or a categorical that is
    not 1-15 hex digits makes a line malformed. ``on_bad_line="error"`` raises :class:`BadLineError` naming
    the file and line; ``"skip"`` drops it and records it in ``report`` (counted always, line numbers kept).

    Args:
        inputs: file paths or glob patterns (``.gz`` decompressed on the fly).
        chunk_bytes: bytes read per block.
        on_bad_line: ``"error"`` or ``"skip"``.
        report: a :class:`ReadReport` to fill (rows, bad lines).
    Yields:
        :class:`CriteoChunk` per block, rows in file order.

    Example:
        >>> rep = ReadReport()
        >>> rows = sum(len(c) for c in iter_criteo_tsv("day_0.gz", on_bad_line="skip", report=rep))  # doctest: +SKIP
    """
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    for path in expand_inputs(inputs):
        for block, first_line in _iter_blocks(path, chunk_bytes):
            chunk = _parse_block(block, first_line, str(path), on_bad_line, report)
            if chunk is not None:
                if report is not None:
                    report.rows += len(chunk)
                yield chunk


def true_prob_path(tsv_path: PathLike) -> Path:
    """The ground-truth side file of a generated TSV: ``X.tsv[.gz]`` -> ``X.true_prob.npy``."""
    p = Path(tsv_path)
    name = p.name
    for suffix in (".gz", ".tsv", ".txt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return p.with_name(name + ".true_prob.npy")


class _Counter:
    """Exact value counts of int64 values, merged in sorted arrays (memory ~ distinct values)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._pending: List[Tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add(self, values: np.ndarray) -> None:
        k, c = np.unique(values, return_counts=True)
        self._pending.append((k, c.astype(np.int64)))
        self._pending_size += len(k)
        if self._pending_size > max(len(self.keys), 1 << 16):
            self.compact()

    def compact(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self.counts] + [c for _, c in self._pending])
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        self.keys, self.counts = keys[first], np.add.reduceat(counts, first) if len(first) else counts
        self._pending, self._pending_size = [], 0


@dataclass
class Vocabulary:
    """Raw value -> frequency-rank id for one field (id 0 = most frequent; ties by raw value).

    Values seen fewer than ``min_count`` times (and values never seen) map to ``oov_id = size - 1``.

    Attributes:
        keys: sorted raw values that got an id, int64.
        ids: their ids (aligned with ``keys``).
        counts: count of each id by rank, ``(size,)``; the last entry counts the OOV rows.
    """

    keys: np.ndarray
    ids: np.ndarray
    counts: np.ndarray

    @property
    def size(self) -> int:
        return int(self.counts.shape[0])

    @property
    def oov_id(self) -> int:
        return self.size - 1

    @classmethod
    def from_counts(cls, keys: np.ndarray, counts: np.ndarray, min_count: int) -> "Vocabulary":
        kept = counts >= min_count
        k, c = keys[kept], counts[kept]
        order = np.lexsort((k, -c))  # count descending, raw value ascending
        ids = np.empty(len(k), np.int64)
        ids[order] = np.arange(len(k))
        rank_counts = np.concatenate((c[order], [int(counts[~kept].sum())])).astype(np.int64)
        return cls(keys=k, ids=ids, counts=rank_counts)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Ids of raw ``values`` (any shape), ``oov_id`` for unknown ones."""
        if len(self.keys) == 0:
            return np.full(values.shape, self.oov_id, np.int64)
        pos = np.searchsorted(self.keys, values)
        pos = np.minimum(pos, len(self.keys) - 1)
        hit = self.keys[pos] == values
        return np.where(hit, self.ids[pos], self.oov_id)


def criteo_schema(vocab_sizes: Dict[str, int], with_true_prob: bool = False) -> TableSchema:
    """The batch schema of processed Criteo data: dense I1..I13, sparse C1..C26."""
    return TableSchema(dense=tuple(INT_COLUMNS), sparse=tuple(CAT_COLUMNS), label=LABEL_COLUMN,
                       true_prob="true_prob" if with_true_prob else None, vocab_sizes=dict(vocab_sizes))


def _to_table(chunk: CriteoChunk, vocabs: Sequence[Vocabulary], true_prob: Optional[np.ndarray],
              missing_flags: bool) -> pa.Table:
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


def preprocess(
    inputs: Union[PathLike, Sequence[PathLike]],
    out_dir: PathLike,
    *,
    min_count: int = 1,
    test_fraction: float = 0.1,
    valid_fraction: Optional[float] = None,
    on_bad_line: str = "error",
    chunk_bytes: int = 64 << 20,
    rows_per_shard: int = 1 << 21,
    row_group_rows: int = 1 << 17,
    vocab_from: str = "train",
    missing_flags: bool = False,
    max_reported_bad_lines: int = 1000,
    progress: Optional[Callable[[str, int], None]] = None,
) -> Dict[str, Any]:
    """Criteo TSV -> frequency-categorified, time-split Parquet shards + ``metadata.json``.

    Three streaming passes (two with ``vocab_from="all"``), memory bounded by ``chunk_bytes`` plus the
    distinct values per field (never by the number of rows):

    1. validate and count rows (malformed lines per ``on_bad_line``, always counted with line numbers);
    2. count each field's values over the training rows (``vocab_from="train"``: valid/test ids unseen in
       training become OOV, so no future leaks into the vocabulary) or over all rows;
    3. write ``out_dir/{train,valid,test}/part-*.parquet``: ``label`` int8, ``I1..I13`` float32
       ``log(1 + max(x, 0))`` (missing = 0; ``M1..M13`` int8 flags if ``missing_flags``), ``C1..C26`` int64
       ids (0 = most frequent; the empty value is its own category; values seen < ``min_count`` times map
       to the field's OOV id = vocab size - 1), and ``true_prob`` if a ``X.true_prob.npy`` side file from
       the generator lies beside the input ``X.tsv[.gz]``.

    Rows keep file order; the last ``test_fraction`` form the test split and the ``valid_fraction``
    (default: ``test_fraction``) before them the validation split.

    Args:
        inputs: TSV paths or glob patterns (plain or .gz), read in the order given (globs sorted).
        out_dir: output directory (created).
        progress: optional callback ``(phase, rows_done)`` after every block (the CLI draws a bar).
    Returns:
        The metadata dict also written to ``out_dir/metadata.json``: ``rows`` per split, ``vocab_sizes``,
        ``oov_ids``, ``bad_lines`` report, ``schema``, counts file names.

    Example:
        >>> meta = preprocess("train.txt.gz", "data/criteo", min_count=4, on_bad_line="skip")  # doctest: +SKIP
        >>> meta["vocab_sizes"]["C9"]  # doctest: +SKIP
        4
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if vocab_from not in ("train", "all"):
        raise ValueError(f"vocab_from must be 'train' or 'all', got {vocab_from!r}")
    paths = expand_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = ReadReport(max_examples=max_reported_bad_lines)
    counters = [_Counter() for _ in CAT_COLUMNS]
    tick = progress or (lambda phase, rows: None)

    # Pass 1: validation and row count (and the vocabulary if it comes from all rows).
    for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line=on_bad_line, report=report):
        if vocab_from == "all":
            for j, ctr in enumerate(counters):
                ctr.add(chunk.cats[j])
        tick("validate", report.rows)
    n_rows = report.rows
    if report.bad_lines:
        logger.warning("skipped %d malformed lines (%s); first: %s", report.bad_lines, report.by_reason,
                       ", ".join(f"{b.path}:{b.line}" for b in report.examples[:5]))
    if n_rows == 0:
        raise ValueError(f"no valid rows in {[str(p) for p in paths]}")
    n_train, n_valid, n_test = time_split_sizes(n_rows, test_fraction, valid_fraction)
    logger.info("pass 1: %d rows (%d bad lines) in %.1fs; split %d/%d/%d", n_rows, report.bad_lines,
                time.perf_counter() - t0, n_train, n_valid, n_test)

    # Pass 2: frequencies over the training rows.
    if vocab_from == "train":
        seen = 0
        for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line="skip"):
            take = min(len(chunk), n_train - seen)
            for j, ctr in enumerate(counters):
                ctr.add(chunk.cats[j, :take])
            seen += take
            tick("count", seen)
            if seen >= n_train:
                break
    vocabs = []
    for ctr in counters:
        ctr.compact()
        vocabs.append(Vocabulary.from_counts(ctr.keys, ctr.counts, min_count))
    del counters

    # Pass 3: map and write.
    bounds = np.array([n_train, n_train + n_valid, n_rows])
    writers = {s: ShardedParquetWriter(out / s, rows_per_shard=rows_per_shard, row_group_rows=row_group_rows)
               for s in SPLITS}
    side = {str(p): true_prob_path(p) for p in paths}
    side_arrays = {k: np.load(v, mmap_mode="r") for k, v in side.items() if v.exists()}
    with_truth = len(side_arrays) == len(paths)
    if side_arrays and not with_truth:
        logger.warning("true_prob side files found for only some inputs; ignoring them")
    row = 0
    for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line="skip"):
        truth = np.asarray(side_arrays[chunk.path][chunk.lines - 1]) if with_truth else None
        table = _to_table(chunk, vocabs, truth, missing_flags)
        n = table.num_rows
        split_of_row = np.searchsorted(bounds, row + np.arange(n), side="right")
        for s_idx, s in enumerate(SPLITS):
            sel = np.flatnonzero(split_of_row == s_idx)
            if len(sel):
                writers[s].write(table.slice(int(sel[0]), len(sel)))  # rows of a split are contiguous
        row += n
        tick("write", row)
    files = {s: w.close() for s, w in writers.items()}

    vocab_sizes = {c: v.size for c, v in zip(CAT_COLUMNS, vocabs)}
    counts: Dict[str, Any] = {c: v.counts for c, v in zip(CAT_COLUMNS, vocabs)}
    vocab: Dict[str, Any] = {**{f"{c}_keys": v.keys for c, v in zip(CAT_COLUMNS, vocabs)},
                             **{f"{c}_ids": v.ids for c, v in zip(CAT_COLUMNS, vocabs)}}
    np.savez(out / "counts.npz", **counts)
    np.savez(out / "vocab.npz", **vocab)
    schema = criteo_schema(vocab_sizes, with_true_prob=with_truth)
    meta: Dict[str, Any] = {
        "dataset": "criteo",
        "format_version": 1,
        "inputs": [str(p) for p in paths],
        "rows": {"total": n_rows, "train": n_train, "valid": n_valid, "test": n_test},
        "files": {s: [{"name": n, "rows": r} for n, r in files[s]] for s in SPLITS},
        "min_count": min_count,
        "vocab_from": vocab_from,
        "test_fraction": test_fraction,
        "valid_fraction": test_fraction if valid_fraction is None else valid_fraction,
        "vocab_sizes": vocab_sizes,
        "oov_ids": {c: v.oov_id for c, v in zip(CAT_COLUMNS, vocabs)},
        "oov_rows_train": {c: int(v.counts[-1]) for c, v in zip(CAT_COLUMNS, vocabs)},
        "counts_file": "counts.npz",
        "vocab_file": "vocab.npz",
        "missing_value": "empty categorical = raw value -1, ranked like any other value",
        "dense_transform": "log(1 + max(x, 0)); missing = 0",
        "missing_flags": missing_flags,
        "bad_lines": report.to_dict(),
        "schema": schema.to_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_metadata(out, meta)
    logger.info("preprocessed %d rows into %s in %.1fs", n_rows, out, meta["seconds"])
    return meta


def load_counts(directory: PathLike) -> Dict[str, np.ndarray]:
    """Per-field counts by id rank (last entry = OOV rows) of a preprocessed Criteo directory."""
    with np.load(Path(directory) / "counts.npz") as z:
        return {k: z[k] for k in z.files}


def load_vocabulary(directory: PathLike) -> Dict[str, Vocabulary]:
    """The raw-value -> id mapping of each field, to categorify new data the same way."""
    counts = load_counts(directory)
    with np.load(Path(directory) / "vocab.npz") as z:
        return {c: Vocabulary(z[f"{c}_keys"], z[f"{c}_ids"], counts[c]) for c in CAT_COLUMNS}
