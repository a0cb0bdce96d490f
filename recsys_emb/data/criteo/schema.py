"""The Criteo Kaggle (Display Advertising Challenge) TSV schema: columns, the real cardinalities, and the
batch schema of preprocessed Criteo data.

Example:
    >>> len(TSV_COLUMNS), CAT_COLUMNS[0], INT_COLUMNS[-1]
    (40, 'C1', 'I13')
"""

from __future__ import annotations

from typing import Dict, List

from recsys_emb.data.parquet import TableSchema

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
    "MISSING_FLAG_COLUMNS",
    "criteo_schema",
]

CRITEO_KAGGLE_ROWS = 45_840_617
"""Rows in the Kaggle Display Advertising Challenge ``train.txt``."""

CRITEO_KAGGLE_CARDINALITIES: List[int] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]
"""Distinct values of C1..C26 in the Kaggle ``train.txt`` (45,840,617 rows)."""

CRITEO_1TB_CARDINALITIES: List[int] = [
    227605432, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 130229467, 3067956, 405282, 10, 2209, 11938,
    155, 4, 976, 14, 292775614, 40790948, 187188510, 590152, 12973, 108, 36,
]
"""Distinct values of C1..C26 in the 24 days of Criteo 1TB (Terabyte Click Logs), 882,774,559 in all:
the sizes of the DLRM reference's tables for that dataset."""

CARDINALITY_PRESETS: Dict[str, List[int]] = {"kaggle": CRITEO_KAGGLE_CARDINALITIES, "1tb": CRITEO_1TB_CARDINALITIES}
"""The published per-field cardinalities by name, to size tables without the data (``recsys-emb plan
--cardinalities``)."""

LABEL_COLUMN = "label"
INT_COLUMNS: List[str] = [f"I{i}" for i in range(1, 14)]
CAT_COLUMNS: List[str] = [f"C{i}" for i in range(1, 27)]
TSV_COLUMNS: List[str] = [LABEL_COLUMN] + INT_COLUMNS + CAT_COLUMNS
MISSING_ID = -1
"""Raw value of an empty categorical: counted and ranked like any other value (its own category)."""


MISSING_FLAG_COLUMNS: List[str] = [f"M{i}" for i in range(1, 14)]
"""``preprocess --missing-flags``: 1 where ``I<i>`` is empty, a dense input beside the transformed counts."""


def criteo_schema(vocab_sizes: Dict[str, int], with_true_prob: bool = False,
                  missing_flags: bool = False) -> TableSchema:
    """The batch schema of processed Criteo data: dense I1..I13 (then M1..M13 with ``missing_flags``),
    sparse C1..C26.

    Example:
        >>> s = criteo_schema({c: 10 for c in CAT_COLUMNS})
        >>> len(s.dense), s.keys[:2], s.true_prob
        (13, ('C1', 'C2'), None)
        >>> criteo_schema({c: 10 for c in CAT_COLUMNS}, missing_flags=True).dense[12:14]
        ('I13', 'M1')
    """
    dense = tuple(INT_COLUMNS) + (tuple(MISSING_FLAG_COLUMNS) if missing_flags else ())
    return TableSchema(dense=dense, sparse=tuple(CAT_COLUMNS), label=LABEL_COLUMN,
                       true_prob="true_prob" if with_true_prob else None, vocab_sizes=dict(vocab_sizes))
