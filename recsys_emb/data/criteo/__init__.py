"""Criteo Kaggle (Display Advertising Challenge) data: the schema (:mod:`.schema`), a streaming TSV reader
(:mod:`.reader`) and preprocessing into Parquet splits (:mod:`.preprocess`).

Raw TSV (label, I1..I13 counts, C1..C26 hex strings; empty = missing; plain or .gz) -> validated chunks ->
categorify by frequency (:class:`recsys_emb.data.vocabulary.Vocabulary`) -> time-ordered train / valid /
test Parquet shards + ``metadata.json``, in parallel over the work units of :mod:`.units` (whose
per-unit functions an engine for several machines can run as its tasks).
"""

from __future__ import annotations

from recsys_emb.data.criteo.preprocess import default_workers, load_counts, preprocess
from recsys_emb.data.criteo.reader import (
    BadLine,
    BadLineError,
    CriteoChunk,
    ReadReport,
    expand_inputs,
    iter_criteo_tsv,
    true_prob_path,
)
from recsys_emb.data.criteo.schema import (
    CARDINALITY_PRESETS,
    CAT_COLUMNS,
    CRITEO_1TB_CARDINALITIES,
    CRITEO_KAGGLE_CARDINALITIES,
    CRITEO_KAGGLE_ROWS,
    INT_COLUMNS,
    LABEL_COLUMN,
    MISSING_ID,
    TSV_COLUMNS,
    criteo_schema,
)
from recsys_emb.data.vocabulary import Vocabulary, load_vocabulary

__all__ = [
    "CRITEO_KAGGLE_ROWS",
    "CRITEO_KAGGLE_CARDINALITIES",
    "CRITEO_1TB_CARDINALITIES",
    "CARDINALITY_PRESETS",
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
    "default_workers",
    "criteo_schema",
    "load_counts",
    "load_vocabulary",
]
