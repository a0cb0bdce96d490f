"""Raw rows of a table dataset's model, mapped to the model's inputs: files in the schema's format (its
``table_spec`` saved in the dataset and the model directory) or frames in its raw column names, through
the saved vocabulary and dense statistics, exactly as preprocessing mapped the training rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from recsys_emb.data.criteo.reader import ReadReport
from recsys_emb.data.tabular.preprocess import DATASET_NAME, chunk_ids_table
from recsys_emb.data.tabular.reader import frame_chunk, iter_table_chunks, read_columns
from recsys_emb.data.tabular.schema import ResolvedColumns, TableSpec
from recsys_emb.errors import DataError

__all__ = ["is_table_model", "table_spec_of", "raw_table_ids", "iter_raw_table_ids"]


def is_table_model(dataset: Dict[str, Any]) -> bool:
    """Whether a model's ``dataset`` facts are those of a table processed under a schema."""
    return dataset.get("dataset") == DATASET_NAME


def table_spec_of(dataset: Dict[str, Any]) -> TableSpec:
    """The schema a table model's training data was read with."""
    if "table_spec" not in dataset or "dense_stats" not in dataset:
        raise DataError("the model's dataset facts lack table_spec / dense_stats (exported before raw tables "
                        "could be scored?); export the run again")
    return TableSpec.from_dict(dataset["table_spec"], source="(saved with the model)")


def _columns(spec: TableSpec, file_columns: List[str], where: str) -> ResolvedColumns:
    """The spec resolved against a file that may lack the label column (rows to score)."""
    extra = [] if spec.label in file_columns else [spec.label]
    cols = spec.resolve(file_columns + extra, where=where)
    return dataclasses.replace(cols, file_columns=tuple(file_columns))


def raw_table_ids(table: pa.Table, dataset: Dict[str, Any], vocabulary: Dict[str, Any],
                  oov: Optional[Dict[str, int]] = None) -> pa.Table:
    """Processed columns (ids, transformed dense) of raw rows in the schema's column names."""
    spec = table_spec_of(dataset)
    cols = _columns(spec, list(table.column_names), "<frame>")
    chunk = frame_chunk(table, spec, cols)
    return chunk_ids_table(chunk, spec, cols, vocabulary, dataset["dense_stats"], oov)


def iter_raw_table_ids(paths: List[Path], dataset: Dict[str, Any], vocabulary: Dict[str, Any], *, on_bad_line: str,
                       chunk_bytes: int, read: ReadReport, oov: Dict[str, int]
                       ) -> Iterator[Tuple[str, np.ndarray, np.ndarray, pa.Table]]:
    """``(file, line numbers, labels (-1: none), processed table)`` per block of raw files."""
    spec = table_spec_of(dataset)
    for p in paths:
        cols = _columns(spec, read_columns(spec, p), str(p))
        for chunk in iter_table_chunks(p, spec, cols, chunk_bytes=chunk_bytes, on_bad_line=on_bad_line, report=read,
                                       label_required=False):
            yield chunk.path, chunk.lines, chunk.labels, chunk_ids_table(chunk, spec, cols, vocabulary,
                                                                         dataset["dense_stats"], oov)
