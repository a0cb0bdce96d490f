"""Your own data: any CSV, TSV or Parquet table (or a pandas DataFrame / pyarrow Table) described by one
schema file (:mod:`.schema`), read by a streaming reader with exact line numbers (:mod:`.reader`) and
preprocessed into the dataset layout every command reads (:mod:`.preprocess`). See datasets/your-data.md.
"""

from __future__ import annotations

from recsys_emb.data.tabular.preprocess import DATASET_NAME, chunk_ids_table, preprocess_frame, preprocess_table
from recsys_emb.data.tabular.reader import RowChunk, hash_keys, iter_table_chunks, read_columns
from recsys_emb.data.tabular.schema import (
    ColumnOptions,
    ResolvedColumns,
    SequenceOptions,
    SplitSpec,
    TableSpec,
    load_table_spec,
)

__all__ = [
    "TableSpec",
    "ColumnOptions",
    "SequenceOptions",
    "SplitSpec",
    "ResolvedColumns",
    "load_table_spec",
    "RowChunk",
    "iter_table_chunks",
    "read_columns",
    "hash_keys",
    "preprocess_table",
    "preprocess_frame",
    "chunk_ids_table",
    "DATASET_NAME",
]
