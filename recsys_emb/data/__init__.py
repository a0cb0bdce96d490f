"""Data path: Criteo TSV reader and preprocessing, synthetic data with ground truth, MovieLens, batches.

Submodules are imported lazily by their users (``from recsys_emb.data.criteo import preprocess``) so that
the reader does not pull in torch; see ``datasets/`` for the dataset cards.
"""

from __future__ import annotations

from recsys_emb.data.criteo import CAT_COLUMNS, CRITEO_KAGGLE_CARDINALITIES, INT_COLUMNS

__all__ = ["CAT_COLUMNS", "INT_COLUMNS", "CRITEO_KAGGLE_CARDINALITIES"]
