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
from recsys_emb.data.outdir import is_write_failure, make_parent_dirs, write_error
from recsys_emb.errors import DataError, InvalidInputError, RecsysEmbError
from recsys_emb.model_dir import SavedModel

__all__ = ["PredictReport", "predict", "score_frame", "score_batch"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
_OUT_COLUMNS = ("file", "label", "logit", "score")


@dataclass
class PredictReport:
    """What :func:`predict` read and wrote.

    Attributes:
        rows: rows scored.
        out: the scores file.
        oov: rows per field whose raw value the vocabulary lacks (mapped to the OOV id); raw input only.
        bad_lines: the read report of raw input (``bad_lines``, ``by_reason``, ``examples`` with line
            numbers, ``truncated`` files), as ``preprocess`` reports it; ``None`` for Parquet.
        labelled: rows that came with a label.
        seconds: wall time.
    """

    rows: int = 0
    out: str = ""
    oov: Dict[str, int] = field(default_factory=dict)
    bad_lines: Optional[Dict[str, Any]] = None
    labelled: int = 0
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"rows": self.rows, "out": self.out, "oov": dict(self.oov), "bad_lines": self.bad_lines,
                "labelled": self.labelled, "seconds": round(self.seconds, 3)}


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
    table = chunk_table(chunk, vocabs)
    for j, c in enumerate(CAT_COLUMNS):
        oov[c] = oov.get(c, 0) + int((table.column(c).to_numpy() == vocabs[j].oov_id).sum())
    return table


def _raw_chunk(table: pa.Table) -> CriteoChunk:
    """A DataFrame / Table of raw Criteo values as a chunk: ``I1..I13`` numbers (null / NaN = missing),
    ``C1..C26`` hex strings (empty / null = missing) or their int64 values (-1 = missing)."""
    missing = [c for c in (*INT_COLUMNS, *CAT_COLUMNS) if c not in table.column_names]
    if missing:
        raise InvalidInputError(f"raw Criteo rows need columns I1..I13 and C1..C26; missing {missing}")
    n = table.num_rows
    ints = np.zeros((n, len(INT_COLUMNS)), np.int64)
    int_missing = np.zeros((n, len(INT_COLUMNS)), bool)
    for j, c in enumerate(INT_COLUMNS):
        col = table.column(c).combine_chunks()
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
            raise InvalidInputError(f"column {c}: type {col.type}, expected numbers (null or NaN = missing)")
        v = col.to_numpy(zero_copy_only=False).astype(np.float64)
        int_missing[:, j] = np.isnan(v)
        ints[:, j] = np.where(int_missing[:, j], 0, v).astype(np.int64)
    cats = np.empty((len(CAT_COLUMNS), n), np.int64)
    for j, c in enumerate(CAT_COLUMNS):
        col = table.column(c).combine_chunks()
        if pa.types.is_integer(col.type):
            cats[j] = col.fill_null(MISSING_ID).to_numpy(zero_copy_only=False)
            continue
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)):
            raise InvalidInputError(f"column {c}: type {col.type}, expected hex strings or int64 raw values")
        values, bad = parse_hex(col.cast(pa.string()).fill_null(""))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"column {c}, row {i}: {col[i].as_py()!r} is not 1-15 hex digits (the raw "
                                    f"Criteo value) nor empty; {int(bad.sum())} such rows")
        cats[j] = values
    labels = np.full(n, -1, np.int8)
    if LABEL_COLUMN in table.column_names:
        labels = table.column(LABEL_COLUMN).to_numpy(zero_copy_only=False).astype(np.int8)
    return CriteoChunk(labels, ints, int_missing, cats, np.arange(1, n + 1, dtype=np.int64), "<frame>")


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
    out = []
    for start in range(0, table.num_rows, batch_rows):
        part = table.slice(start, batch_rows)
        if raw:
            part = _ids(model, _raw_chunk(part), counts)
        out.append(score_batch(model, batch_from_table(part, model.schema)))
    logits = np.concatenate(out) if out else np.zeros(0, np.float32)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def _tsv_blocks(model: SavedModel, paths: List[Path], on_bad_line: str, chunk_bytes: int, report: PredictReport,
                read: ReadReport) -> Iterator[Tuple[str, np.ndarray, np.ndarray, pa.Table]]:
    _vocabulary(model)  # refuse before reading
    for chunk in iter_criteo_tsv(paths, chunk_bytes=chunk_bytes, on_bad_line=on_bad_line, report=read,
                                 label="optional"):
        yield chunk.path, chunk.lines, chunk.labels, _ids(model, chunk, report.oov)


def _parquet_blocks(model: SavedModel, paths: List[Path], id_column: Optional[str], batch_rows: int
                    ) -> Iterator[Tuple[str, np.ndarray, np.ndarray, pa.Table]]:
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
            labels = (table.column(s.label).to_numpy(zero_copy_only=False).astype(np.int8) if s.label in names
                      else np.full(n, -1, np.int8))
            row += n
            yield str(path), ids, labels, table


def predict(model: SavedModel, inputs: Union[PathLike, Sequence[PathLike]], out: PathLike, *,
            id_column: Optional[str] = None, on_bad_line: str = "error", chunk_bytes: int = CHUNK_BYTES,
            batch_rows: int = 1 << 16, progress: Optional[Callable[[int], None]] = None,
            overwrite: bool = False) -> PredictReport:
    """Score files and write ``out`` (Parquet): ``file``, the row id, ``label`` (null where the input has
    none), ``logit`` and ``score`` (the click probability), one row per scored input row, in input order.

    Args:
        model: from :func:`recsys_emb.load_model`.
        inputs: paths or glob patterns; ``*.parquet``: processed rows (ids; row id ``row``, 0-based, or
            ``id_column``); anything else: raw Criteo TSV, plain or gzip, 40 columns or 39 without the
            label (row id ``line``, the 1-based line number in its file).
        out: the scores file, written to a temporary sibling and renamed into place when complete.
        on_bad_line: ``"error"`` (stop at the first malformed line, naming it) or ``"skip"`` (count it
            with its line number in the report and go on).
        progress: called with the rows scored so far after every block.
    Returns:
        A :class:`PredictReport` (rows, OOV values per field, bad lines).

    Example (``model``: a loaded Criteo model, ``day``: a TSV file)::

        report = predict(model, day, "scores.parquet", on_bad_line="skip")
        report.rows, report.oov["C3"], report.bad_lines["bad_lines"]
    """
    t0 = time.perf_counter()
    paths = expand_inputs(inputs)
    parquet = [p.suffix == ".parquet" for p in paths]
    if any(parquet) and not all(parquet):
        raise DataError(f"inputs mix Parquet and TSV files ({[str(p) for p in paths][:4]}); score them separately")
    if all(parquet) and paths:
        blocks = _parquet_blocks(model, paths, id_column, batch_rows)
        id_name, read = id_column or "row", None
    else:
        if id_column is not None:
            raise DataError(f"--id-column {id_column!r}: a Criteo TSV has no named columns; the row id of TSV input "
                            "is the line number (column 'line')")
        read = ReadReport()
        id_name = "line"
    out_path = Path(out)
    if out_path.is_dir():
        raise DataError(f"{out_path} is a directory; predict writes one scores file: give a file path, such as "
                        f"{out_path / 'scores.parquet'}")
    if out_path.exists() and not overwrite:
        raise DataError(f"{out_path} exists; pass overwrite=True (--overwrite) to replace it")
    make_parent_dirs(out_path)
    tmp = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    report = PredictReport(out=str(out_path))
    if read is not None:
        blocks = _tsv_blocks(model, paths, on_bad_line, chunk_bytes, report, read)
    writer: Optional[pq.ParquetWriter] = None
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
                report.labelled += int((lab >= 0).sum())
            if progress is not None:
                progress(report.rows)
        if writer is None:  # no row: an empty file with the columns
            empty = {"file": pa.array([], pa.string()).dictionary_encode(), id_name: pa.array([], pa.int64()),
                     "label": pa.array([], pa.int8()), "logit": pa.array([], pa.float32()),
                     "score": pa.array([], pa.float32())}
            writer = pq.ParquetWriter(tmp, pa.table(empty).schema)
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
    report.bad_lines = read.to_dict() if read is not None else None
    report.seconds = time.perf_counter() - t0
    if read is not None and read.bad_lines:
        logger.warning("skipped %d malformed lines (%s)", read.bad_lines, read.by_reason)
    return report
