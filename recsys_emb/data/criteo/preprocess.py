"""Criteo TSV -> frequency-categorified, time-split Parquet shards + ``metadata.json``: three streaming
passes (validate, count, write) over the reader of :mod:`recsys_emb.data.criteo.reader`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_emb.data.criteo.reader import (
    CHUNK_BYTES,
    CriteoChunk,
    ReadReport,
    expand_inputs,
    iter_criteo_tsv,
    true_prob_path,
)
from recsys_emb.data.criteo.schema import CAT_COLUMNS, INT_COLUMNS, LABEL_COLUMN, criteo_schema
from recsys_emb.data.outdir import atomic_output_dir
from recsys_emb.data.parquet import DATASET_ENTRIES, SPLITS, ShardedParquetWriter, time_split_sizes, write_metadata
from recsys_emb.errors import DataError
from recsys_emb.data.vocabulary import COUNTS_FILE, VOCAB_FILE, Vocabulary, load_vocabulary, save_vocabularies

__all__ = ["preprocess", "load_counts", "chunk_table"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
PROCESSED_ENTRIES = DATASET_ENTRIES + (COUNTS_FILE, VOCAB_FILE)


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


def chunk_table(chunk: CriteoChunk, vocabs: Sequence[Vocabulary], true_prob: Optional[np.ndarray] = None,
                missing_flags: bool = False) -> pa.Table:
    """The processed columns of a chunk: ``label`` int8, ``I1..I13`` float32 ``log(1 + max(x, 0))``
    (``M1..M13`` if ``missing_flags``), ``C1..C26`` int64 ids through ``vocabs`` (one per field, in
    ``CAT_COLUMNS`` order; unknown values -> OOV id), ``true_prob`` when given."""
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
    chunk_bytes: int = CHUNK_BYTES,
    rows_per_shard: int = 1 << 21,
    row_group_rows: int = 1 << 17,
    vocab_from: str = "train",
    missing_flags: bool = False,
    max_reported_bad_lines: int = 1000,
    progress: Optional[Callable[[str, int], None]] = None,
    overwrite: bool = False,
    vocab: Optional[PathLike] = None,
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

    The output appears whole or not at all: everything is written into a temporary sibling of ``out_dir``
    that is renamed into place at the end (a failed or killed run leaves ``out_dir`` as it was). A
    non-empty ``out_dir`` is refused unless ``overwrite``, which replaces it whole.

    Args:
        inputs: TSV paths or glob patterns (plain or .gz), read in the order given (globs sorted).
        out_dir: output directory (created; must be absent or empty unless ``overwrite``).
        progress: optional callback ``(phase, rows_done)`` after every block (the CLI draws a bar).
        overwrite: replace an existing output directory whole (only one holding nothing but what
            preprocess writes).
        vocab: map with an existing vocabulary instead of counting one (``min_count`` and ``vocab_from``
            are then unused): a model directory (``recsys-emb export``, ``<run>/model``) or a processed
            dataset directory. A new day then gets the ids the model was trained with; values the
            vocabulary lacks map to the OOV id, counted per field in ``oov_rows``.
    Returns:
        The metadata dict also written to ``out_dir/metadata.json``: ``rows`` per split, ``vocab_sizes``,
        ``oov_ids``, ``bad_lines`` report, ``schema``, counts file names.

    Example (``tmp``: any writable directory):
        >>> from recsys_emb.data.synthetic import generate_criteo_like
        >>> g = generate_criteo_like(tmp / "raw", rows=5000, scale=0.001, seed=0)
        >>> meta = preprocess(g.tsv, tmp / "processed", min_count=2)
        >>> meta["rows"], meta["vocab_sizes"]["C9"], meta["bad_lines"]["bad_lines"]
        ({'total': 5000, 'train': 4000, 'valid': 500, 'test': 500}, 4, 0)

        On the real Kaggle file (not in the repository, so not run here; C9 has 3 values, plus OOV):

        >>> meta = preprocess("train.txt.gz", "data/criteo", min_count=4, on_bad_line="skip")  # doctest: +SKIP
        >>> meta["vocab_sizes"]["C9"]  # doctest: +SKIP
        4
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if vocab_from not in ("train", "all"):
        raise ValueError(f"vocab_from must be 'train' or 'all', got {vocab_from!r}")
    paths = expand_inputs(inputs)
    with atomic_output_dir(out_dir, overwrite=overwrite, owned=PROCESSED_ENTRIES, command="preprocess") as tmp:
        meta = _preprocess_into(paths, tmp, min_count=min_count, test_fraction=test_fraction,
                                valid_fraction=valid_fraction, on_bad_line=on_bad_line, chunk_bytes=chunk_bytes,
                                rows_per_shard=rows_per_shard, row_group_rows=row_group_rows, vocab_from=vocab_from,
                                missing_flags=missing_flags, max_reported_bad_lines=max_reported_bad_lines,
                                progress=progress, vocab=vocab)
    logger.info("preprocessed %d rows into %s in %.1fs", meta["rows"]["total"], out_dir, meta["seconds"])
    return meta


def _preprocess_into(paths: List[Path], out: Path, *, min_count: int, test_fraction: float,
                     valid_fraction: Optional[float], on_bad_line: str, chunk_bytes: int, rows_per_shard: int,
                     row_group_rows: int, vocab_from: str, missing_flags: bool, max_reported_bad_lines: int,
                     progress: Optional[Callable[[str, int], None]],
                     vocab: Optional[PathLike] = None) -> Dict[str, Any]:
    """The three passes of :func:`preprocess`, writing into the (temporary) directory ``out``."""
    t0 = time.perf_counter()
    report = ReadReport(max_examples=max_reported_bad_lines)
    counters = [_Counter() for _ in CAT_COLUMNS]
    tick = progress or (lambda phase, rows: None)

    given = _given_vocabulary(vocab) if vocab is not None else None
    # Pass 1: validation and row count (and the vocabulary if it comes from all rows).
    for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line=on_bad_line, report=report):
        if vocab_from == "all" and given is None:
            for j, ctr in enumerate(counters):
                ctr.add(chunk.cats[j])
        tick("validate", report.rows)
    n_rows = report.rows
    if report.bad_lines:
        logger.warning("skipped %d malformed lines (%s); first: %s", report.bad_lines, report.by_reason,
                       ", ".join(f"{b.path}:{b.line}" for b in report.examples[:5]))
    for t in report.truncated:
        logger.warning("%s: %s: the rest of the file after line %d is lost", t["path"], t["error"], t["last_good_line"])
    if n_rows == 0:
        raise DataError(f"no valid rows in {[str(p) for p in paths]} ({report.bad_lines} malformed lines: "
                        f"{report.by_reason}); is it a Criteo TSV (label, 13 counts, 26 hex fields, tab-separated)?")
    n_train, n_valid, n_test = time_split_sizes(n_rows, test_fraction, valid_fraction)
    logger.info("pass 1: %d rows (%d bad lines) in %.1fs; split %d/%d/%d", n_rows, report.bad_lines,
                time.perf_counter() - t0, n_train, n_valid, n_test)

    # Pass 2: frequencies over the training rows.
    if vocab_from == "train" and given is None:
        seen = 0
        for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line="skip", report=ReadReport()):
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
    if given is not None:
        vocabs = [given[c] for c in CAT_COLUMNS]
    oov_rows = [0] * len(CAT_COLUMNS)

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
    for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line="skip", report=ReadReport()):
        truth = np.asarray(side_arrays[chunk.path][chunk.lines - 1]) if with_truth else None
        table = chunk_table(chunk, vocabs, truth, missing_flags)
        for j, c in enumerate(CAT_COLUMNS):
            oov_rows[j] += int(pc.sum(pc.equal(table.column(c), vocabs[j].oov_id)).as_py() or 0)
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
    save_vocabularies(out, dict(zip(CAT_COLUMNS, vocabs)))
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
        "oov_rows": dict(zip(CAT_COLUMNS, oov_rows)),
        "vocab_source": None if vocab is None else str(Path(vocab).resolve()),
        "counts_file": "counts.npz",
        "vocab_file": "vocab.npz",
        "missing_value": "empty categorical = raw value -1, ranked like any other value",
        "dense_transform": "log(1 + max(x, 0)); missing = 0",
        "missing_flags": missing_flags,
        "bad_lines": report.to_dict(),
        "schema": schema.to_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_metadata(out, meta)  # last: a directory without it is not a dataset
    return meta


def _given_vocabulary(directory: PathLike) -> Dict[str, Vocabulary]:
    """The vocabulary of a model directory or processed dataset, checked to cover every Criteo field."""
    vocabs = load_vocabulary(directory)
    missing = [c for c in CAT_COLUMNS if c not in vocabs]
    if missing:
        raise DataError(f"{directory}: its vocabulary lacks fields {missing}; pass the model directory or the "
                        "processed Criteo dataset the model was trained on")
    return vocabs


def load_counts(directory: PathLike) -> Dict[str, np.ndarray]:
    """Per-field counts by id rank (last entry = OOV rows) of a preprocessed Criteo directory."""
    with np.load(Path(directory) / COUNTS_FILE) as z:
        return {k: z[k] for k in z.files}
