"""Criteo schema constants: the Kaggle columns and cardinalities."""

from __future__ import annotations

from recsys_emb.data.criteo import CAT_COLUMNS, CRITEO_KAGGLE_CARDINALITIES, INT_COLUMNS, TSV_COLUMNS


def test_schema_constants():
    assert len(CRITEO_KAGGLE_CARDINALITIES) == 26 and CRITEO_KAGGLE_CARDINALITIES[2] == 10131227
    assert CAT_COLUMNS[0] == "C1" and INT_COLUMNS[-1] == "I13" and len(TSV_COLUMNS) == 40
