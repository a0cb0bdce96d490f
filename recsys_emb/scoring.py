"""Scores for new rows with a saved model: raw Criteo TSV (plain or gzip; with or without the label
column), processed Parquet, or a pandas DataFrame / pyarrow Table.

Raw values go through the model's saved vocabulary (values it lacks map to the field's OOV id, counted per
field) and the dense transform of preprocessing; malformed lines follow ``on_bad_line`` as in
``preprocess``. Files are read block by block, so memory is bounded by the block size, not the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_emb.data.batches import Batch, batch_from_table
from recsys_emb.data.criteo.preprocess import chunk_table
from recsys_emb.data.criteo.reader import (CHUNK_BYTES, CriteoChunk, ReadReport, expand_inputs, iter_criteo_tsv,
                                          parse_hex)
from recsys_emb.data.criteo.schema import CAT_COLUMNS, INT_COLUMNS, LABEL_COLUMN, MISSING_ID
from recsys_emb.data.outdir import check_not_over_inputs, is_write_failure, make_parent_dirs, partial_sibling, write_error
from recsys_emb.data.parquet import TableSchema
from recsys_emb.data.values import (MAX_RAW_VALUE, BadRows, bad_mask, check_counts, check_dense, check_id_lists,
                                    check_ids, check_labels, first_bad)
from recsys_emb.errors import BadLineError, DataError, InvalidInputError, RecsysEmbError
from recsys_emb.data.tabular.scoring import is_table_model, iter_raw_table_ids, raw_table_ids, table_spec_of
from recsys_emb.model_dir import SavedModel

__all__ = ["PredictReport", "predict", "score_frame", "score_batch"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
_OUT_COLUMNS = ("file", "label", "logit", "score")
MAX_BAD_FRACTION = 0.01
"""Default bound of :func:`predict` on the malformed share of the input under ``on_bad_line="skip"``.
Malformed lines in real logs are sporadic (a line torn by a crash, a few damaged bytes: Criteo's 45M-line
Kaggle file has none), while input of another format or layout makes most lines malformed; 1% lies
orders of magnitude from both, so it passes the first and stops the second before it reads as a
complete day of scores."""


@dataclass
class PredictReport:
    """What :func:`predict` read and wrote.

    Attributes:
        rows: rows scored.
        out: the scores file.
        oov: rows per field whose raw value the vocabulary lacks (mapped to the OOV id); raw input only.
        bad_lines: what the read skipped: for raw input the read report (``bad_lines``, ``by_reason``,
            ``examples`` with line numbers, ``truncated`` files), as ``preprocess`` reports it; for Parquet
            the same keys, the examples numbered by ``row`` (0-based).
        labelled: rows that came with a label.
        metrics: over the labelled rows, as ``evaluate`` reports a split: ``auc`` (None when one class
            only), ``logloss``, ``ne``, ``rows``, ``positive_rate``; None without labelled rows.
        seconds: wall time.
    """

    rows: int = 0
    out: str = ""
    oov: Dict[str, int] = field(default_factory=dict)
    bad_lines: Optional[Dict[str, Any]] = None
    labelled: int = 0
    metrics: Optional[Dict[str, Any]] = None
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"rows": self.rows, "out": self.out, "oov": dict(self.oov), "bad_lines": self.bad_lines,
                "labelled": self.labelled, "metrics": self.metrics, "seconds": round(self.seconds, 3)}


@torch.no_grad()
def score_batch(model: SavedModel, batch: Batch) -> np.ndarray:
    """Logits ``(B,)`` float32 of a batch of processed rows."""
    return model.module(batch.dense, batch.sparse).float().cpu().numpy()


def _vocabulary(model: SavedModel) -> List[Any]:
    if model.vocabulary is None or model.dataset.get("dataset") != "criteo":
        raise DataError(f"the model (dataset {model.dataset.get('dataset')!r}) has no saved Criteo vocabulary, so "
                        "raw values cannot be mapped; pass processed Parquet / ids (raw=False) instead")
    return [model.vocabulary[c] for c in CAT_COLUMNS]


def _ids(model: SavedModel, chunk: CriteoChunk, oov: Dict[str, int]) -> pa.Table:
    vocabs = _vocabulary(model)
    table = chunk_table(chunk, vocabs, missing_flags=bool(model.dataset.get("missing_flags")))
    for j, c in enumerate(CAT_COLUMNS):
        oov[c] = oov.get(c, 0) + int((table.column(c).to_numpy() == vocabs[j].oov_id).sum())
    return table


def _refuse(problems: List[BadRows], what: str, offset: int = 0) -> None:
    """Raise for the earliest bad row of a frame (score_frame scores every row or none)."""
    found = first_bad(problems)
    if found is None:
        return
    row, p = found
    total = int(bad_mask(problems, len(p.mask)).sum())
    raise InvalidInputError(f"{p.describe(row, offset)}; {total} such row(s) in the {what}: fix or drop them before "
                            "scoring (predict on a file can skip them: on_bad_line='skip')")


def _raw_chunk(table: pa.Table, offset: int = 0) -> CriteoChunk:
    """A DataFrame / Table of raw Criteo values as a chunk: ``I1..I13`` integer counts (null / NaN =
    missing), ``C1..C26`` hex strings (empty / null = missing) or their int64 values (-1 = missing), an
    optional 0/1 label (null = none). A value the TSV reader would refuse is refused, naming row (from
    ``offset``) and column."""
    missing = [c for c in (*INT_COLUMNS, *CAT_COLUMNS) if c not in table.column_names]
    if missing:
        raise InvalidInputError(f"raw Criteo rows need columns I1..I13 and C1..C26; missing {missing}")
    n = table.num_rows
    problems: List[BadRows] = []
    ints = np.zeros((n, len(INT_COLUMNS)), np.int64)
    int_missing = np.zeros((n, len(INT_COLUMNS)), bool)
    for j, c in enumerate(INT_COLUMNS):
        ints[:, j], int_missing[:, j], bad = check_counts(table.column(c), c)
        problems += bad
    cats = np.empty((len(CAT_COLUMNS), n), np.int64)
    for j, c in enumerate(CAT_COLUMNS):
        col = table.column(c).combine_chunks()
        if pa.types.is_integer(col.type):
            values, null, bad = check_counts(col, c)
            out = ~null & ((values < MISSING_ID) | (values > MAX_RAW_VALUE))
            problems += bad + ([BadRows(out & ~bad_mask(bad, n), c, f"{c} out of range",
                                        f"raw values are 0..2**60-1 (1-15 hex digits), -1 or null = missing", col)]
                               if out.any() else [])
            cats[j] = np.where(null, MISSING_ID, values)
            continue
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)):
            raise InvalidInputError(f"column {c}: type {col.type}, expected hex strings or int64 raw values")
        values, bad_hex = parse_hex(col.cast(pa.string()).fill_null(""))
        if bad_hex.any():
            i = int(np.flatnonzero(bad_hex)[0])
            raise InvalidInputError(f"column {c}, row {i + offset}: {col[i].as_py()!r} is not 1-15 hex digits (the "
                                    f"raw Criteo value) nor empty; {int(bad_hex.sum())} such rows")
        cats[j] = values
    labels = np.full(n, -1, np.int8)
    if LABEL_COLUMN in table.column_names:
        labels, bad = check_labels(table.column(LABEL_COLUMN), LABEL_COLUMN)
        problems += bad
    _refuse(problems, "frame", offset)
    return CriteoChunk(labels, ints, int_missing, cats, np.arange(1, n + 1, dtype=np.int64), "<frame>")


def _check_processed(table: pa.Table, schema: TableSchema) -> Tuple[pa.Table, np.ndarray, List[BadRows]]:
    """Processed rows checked: finite dense values, integer ids within each key's vocabulary, labels 0/1 or
    null. Returns the table with the checked columns (dense float32, ids int64, 0 at bad rows), the labels
    (int8, -1 = none) and the problems."""
    cols: Dict[str, Any] = {}
    problems: List[BadRows] = []
    for c in schema.dense:
        values, bad = check_dense(table.column(c), c)
        cols[c], problems = pa.array(values), problems + bad
    for c in schema.sparse:
        ids, bad = check_ids(table.column(c), c, schema.vocab_sizes.get(c))
        cols[c], problems = pa.array(ids), problems + bad
    for c in schema.jagged:
        problems += check_id_lists(table.column(c), c, schema.vocab_sizes.get(c))
        cols[c] = table.column(c)
    labels = np.full(table.num_rows, -1, np.int8)
    if schema.label in table.column_names:
        labels, bad = check_labels(table.column(schema.label), schema.label)
        problems += bad
    return pa.table(cols), labels, problems


def score_frame(model: SavedModel, frame: Any, *, raw: bool = True, batch_rows: int = 1 << 16,
                oov: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Click probabilities ``(N,)`` float32 of the rows of a pandas DataFrame or pyarrow Table.

    Args:
        model: from :func:`recsys_emb.load_model`.
        frame: ``raw=True``: raw Criteo values, ``I1..I13`` counts (NaN / null = missing) and ``C1..C26`` hex
            strings as in the TSV (empty / null = missing); ``raw=False``: processed columns (the model's
            dense columns, transformed, and its sparse ids), as in the training Parquet files.
        batch_rows: rows per forward.
        oov: a dict to add each field's count of values the vocabulary lacks to (raw input).

    Example (``model_path``: a model directory of a Criteo model)::

        model = recsys_emb.load_model(model_path)
        df = pd.DataFrame({**{f"I{i}": [1, None] for i in range(1, 14)},
                           **{f"C{i}": ["68fd1e64", ""] for i in range(1, 27)}})
        score_frame(model, df)  # array([0.21, 0.34], dtype=float32)
    """
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    counts = oov if oov is not None else {}
    if not raw:
        need = [c for c in (*model.schema.dense, *model.schema.keys) if c not in table.column_names]
        if need:
            raise InvalidInputError(f"processed rows (raw=False) need the model's columns {need}; "
                                    f"the frame has {table.column_names}")
        table, _, problems = _check_processed(table, model.schema)
        _refuse(problems, "frame")
    out = []
    for start in range(0, table.num_rows, batch_rows):
        part = table.slice(start, batch_rows)
        if raw and is_table_model(model.dataset):
            part = raw_table_ids(part, model.dataset, model.vocabulary or {}, counts)
        elif raw:
            part = _ids(model, _raw_chunk(part, start), counts)
        out.append(score_batch(model, batch_from_table(part, model.schema)))
    logits = np.concatenate(out) if out else np.zeros(0, np.float32)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def _tsv_blocks(model: SavedModel, paths: List[Path], on_bad_line: str, chunk_bytes: int, report: PredictReport,
                read: ReadReport) -> Iterator[Tuple[str, np.ndarray, np.ndarray, pa.Table]]:
    if is_table_model(model.dataset):
        yield from iter_raw_table_ids(paths, model.dataset, model.vocabulary or {}, on_bad_line=on_bad_line,
                                      chunk_bytes=chunk_bytes, read=read, oov=report.oov)
        return
    _vocabulary(model)  # refuse before reading
    for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line=on_bad_line, report=read,
                                 label="optional"):
        yield chunk.path, chunk.lines, chunk.labels, _ids(model, chunk, report.oov)


def _parquet_blocks(model: SavedModel, paths: List[Path], id_column: Optional[str], batch_rows: int,
                    on_bad_line: str, read: ReadReport) -> Iterator[Tuple[str, np.ndarray, np.ndarray, pa.Table]]:
    s = model.schema
    for path in paths:
        f = pq.ParquetFile(path)
        names = f.schema_arrow.names
        need = [c for c in (*s.dense, *s.keys) if c not in names]
        if need:
            raise DataError(f"{path}: lacks the model's columns {need}; predict reads processed Parquet (ids, as "
                            "preprocess writes them) or raw Criteo TSV")
        if id_column is not None and id_column not in names:
            raise DataError(f"{path}: --id-column {id_column!r} is not a column; columns: {names}")
        cols = [*s.dense, *s.keys] + [c for c in (s.label, id_column) if c is not None and c in names]
        row = 0
        for rb in f.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys(cols))):
            table = pa.Table.from_batches([rb])
            n = table.num_rows
            ids = (table.column(id_column).to_numpy(zero_copy_only=False) if id_column is not None
                   else np.arange(row, row + n, dtype=np.int64))
            checked, labels, problems = _check_processed(table, s)
            if problems:
                found = first_bad(problems)
                assert found is not None
                if on_bad_line == "error":
                    raise BadLineError(f"{path}: {found[1].describe(found[0], row)}; pass on_bad_line='skip' "
                                       "(--on-bad-line skip) to skip and count such rows")
                claimed = np.zeros(n, bool)
                for p in problems:  # one reason per row (the first that applies), as for TSV lines
                    mine = p.mask & ~claimed
                    claimed |= mine
                    if mine.any():
                        read.add_bad(str(path), row + np.flatnonzero(mine), p.reason)
                keep = np.flatnonzero(~claimed)
                checked, labels, ids = checked.take(keep), labels[keep], ids[keep]
            read.rows += checked.num_rows
            row += n
            yield str(path), ids, labels, checked


def predict(model: SavedModel, inputs: Union[PathLike, Sequence[PathLike]], out: PathLike, *,
            id_column: Optional[str] = None, on_bad_line: str = "error", chunk_bytes: int = CHUNK_BYTES,
            batch_rows: int = 1 << 16, progress: Optional[Callable[[int], None]] = None,
            overwrite: bool = False, max_bad_fraction: float = MAX_BAD_FRACTION) -> PredictReport:
    """Score files and write ``out`` (Parquet): ``file``, the row id, ``label`` (null where the input has
    none), ``logit`` and ``score`` (the click probability), one row per scored input row, in input order.

    Every input row is checked as ``preprocess`` checks raw lines: raw TSV by the reader's rules; processed
    Parquet for finite dense values, integer ids within each key's vocabulary and labels 0, 1 or null. A
    row that breaks one is malformed (``on_bad_line``). Nothing is written when no row was scored or when
    malformed rows exceed ``max_bad_fraction`` of the input.

    Args:
        model: from :func:`recsys_emb.load_model`.
        inputs: paths or glob patterns; ``*.parquet``: processed rows (ids; row id ``row``, 0-based, or
            ``id_column``); anything else: raw Criteo TSV, plain or gzip, 40 columns or 39 without the
            label (row id ``line``, the 1-based line number in its file); ``"-"`` or a pipe (as
            ``/dev/stdin``): raw TSV read once, as it streams.
        out: the scores file, written to a temporary sibling and renamed into place when complete; a
            temporary left by a killed writer of ``out`` (its process gone) is removed first.
        on_bad_line: ``"error"`` (stop at the first malformed line or row, naming it) or ``"skip"`` (count it
            with its line or row number in the report and go on).
        progress: called with the rows scored so far after every block.
        max_bad_fraction: under ``"skip"``, the largest share of malformed lines (rows) among all read;
            more stops without output (:data:`MAX_BAD_FRACTION`, 1%, by default; 1.0 accepts any).
    Returns:
        A :class:`PredictReport` (rows, OOV values per field, bad lines, metrics of the labelled rows).
    Raises:
        DataError: nothing scored, too many malformed rows, inputs that cannot be read.
        BadLineError: a malformed line or row under ``on_bad_line="error"``.

    Example (``model``: a loaded Criteo model, ``day``: a TSV file)::

        report = predict(model, day, "scores.parquet", on_bad_line="skip")
        report.rows, report.oov["C3"], report.bad_lines["bad_lines"]
    """
    t0 = time.perf_counter()
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction (--max-bad-fraction) must be in [0, 1], got {max_bad_fraction}")
    paths = expand_inputs(inputs, streams=True)
    raw_parquet = is_table_model(model.dataset) and table_spec_of(model.dataset).format == "parquet"
    parquet = [p.suffix == ".parquet" and not raw_parquet for p in paths]
    if any(parquet) and not all(parquet):
        raise DataError(f"inputs mix Parquet and TSV files ({[str(p) for p in paths][:4]}); score them separately")
    read = ReadReport(unit="row" if all(parquet) and paths else "line")
    if all(parquet) and paths:
        blocks = _parquet_blocks(model, paths, id_column, batch_rows, on_bad_line, read)
        id_name = id_column or "row"
    else:
        if id_column is not None:
            raise DataError(f"--id-column {id_column!r}: a Criteo TSV has no named columns; the row id of raw text "
                            "input is the line number (column 'line')")
        id_name = "line"
    out_path = Path(out)
    if out_path.is_dir():
        raise DataError(f"{out_path} is a directory; predict writes one scores file: give a file path, such as "
                        f"{out_path / 'scores.parquet'}")
    model_files = [model.path, *model.path.iterdir()] if model.path is not None and model.path.is_dir() else []
    check_not_over_inputs(out_path, [*paths, *model_files], command="predict")
    if out_path.exists() and not overwrite:
        raise DataError(f"{out_path} exists; pass overwrite=True (--overwrite) to replace it")
    make_parent_dirs(out_path)
    tmp = partial_sibling(out_path)
    report = PredictReport(out=str(out_path))
    if read.unit == "line":
        blocks = _tsv_blocks(model, paths, on_bad_line, chunk_bytes, report, read)
    writer: Optional[pq.ParquetWriter] = None
    seen_labels: List[np.ndarray] = []
    seen_logits: List[np.ndarray] = []
    try:
        for path, ids, labels, table in blocks:
            for start in range(0, table.num_rows, batch_rows):
                part = table.slice(start, batch_rows)
                logits = score_batch(model, batch_from_table(part, model.schema))
                lab = labels[start:start + len(logits)]
                cols = {"file": pa.array([path] * len(logits), pa.string()).dictionary_encode(),
                        id_name: pa.array(ids[start:start + len(logits)]),
                        "label": pa.array(lab, pa.int8(), mask=lab < 0),
                        "logit": pa.array(logits),
                        "score": pa.array((1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32))}
                batch = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema)
                writer.write_table(batch)
                report.rows += len(logits)
                labelled = lab >= 0
                report.labelled += int(labelled.sum())
                if labelled.any():  # 5 bytes a labelled row, for the metrics
                    seen_labels.append(lab[labelled])
                    seen_logits.append(logits[labelled])
            if progress is not None:
                progress(report.rows)
        _check_read(paths, read, report.rows, max_bad_fraction)
        assert writer is not None  # _check_read refuses an input without rows
        writer.close()
        os.replace(tmp, out_path)
    except BaseException as e:
        with contextlib.suppress(Exception):  # a full or read-only disk fails the cleanup too: keep the first error
            if writer is not None:
                writer.close()
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, RecsysEmbError) and is_write_failure(e, out_path.parent):
            raise write_error(out_path, e, "predict") from e
        raise
    report.bad_lines = read.to_dict()
    if seen_labels:
        report.metrics = _metrics(np.concatenate(seen_labels), np.concatenate(seen_logits))
    report.seconds = time.perf_counter() - t0
    if read.bad_lines:
        logger.warning("skipped %d malformed %ss (%s)", read.bad_lines, read.unit, read.by_reason)
    return report


def _check_read(paths: List[Path], read: ReadReport, rows: int, max_bad_fraction: float) -> None:
    """Refuse a read that scored nothing, or whose malformed share exceeds ``max_bad_fraction``."""
    names = ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    first = (f"; the first: {read.examples[0].path}{':' if read.unit == 'line' else ': row '}"
             f"{read.examples[0].line}: {read.examples[0].reason}" if read.examples else "")
    if rows == 0:
        if read.bad_lines:
            raise DataError(f"no row scored: all {read.bad_lines:,} {read.unit}s of {names} are malformed "
                            f"({dict(sorted(read.by_reason.items()))}{first}); is it a Criteo TSV (label, 13 "
                            "counts, 26 hex fields, tab-separated) or processed Parquet of this model?")
        lost = f" ({read.truncated[0]['path']}: {read.truncated[0]['error']})" if read.truncated else ""
        raise DataError(f"no row scored: {names} {'holds' if len(paths) == 1 else 'hold'} no rows{lost}; "
                        "nothing was written")
    total = rows + read.bad_lines
    if read.bad_lines > max_bad_fraction * total:
        raise DataError(f"{read.bad_lines:,} of {total:,} {read.unit}s ({read.bad_lines / total:.2%}) of {names} are "
                        f"malformed, more than --max-bad-fraction {max_bad_fraction:g} allows "
                        f"({dict(sorted(read.by_reason.items()))}{first}); nothing was written: check the input's "
                        "format, or pass a larger --max-bad-fraction (max_bad_fraction=) to score the rest")


def _metrics(labels: np.ndarray, logits: np.ndarray) -> Dict[str, Any]:
    from recsys_emb.training.metrics import ctr_metrics

    m: Dict[str, Any] = ctr_metrics(labels.astype(np.int64), logits)
    if m["auc"] != m["auc"]:  # NaN: one class only
        m["auc"] = None
    return m
