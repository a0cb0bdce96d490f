"""Table storage in the quality benchmark: each trained model of the main section scored on the test split
with its tables stored in fp16 and int8 (row-wise quantised, dequantised on lookup) through the inference
module (:func:`recsys_emb.inference.inference_module`), without retraining; the test AUC delta against the
same module with fp32 tables, and the bytes each storage holds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Sequence

__all__ = ["STORAGE_DTYPES", "parse_table_dtypes", "score_storage"]

logger = logging.getLogger(__name__)

STORAGE_DTYPES = ("int8", "fp16")
"""The compressed storages the benchmark can score, in column order."""


def parse_table_dtypes(text: str) -> Sequence[str]:
    """``"int8,fp16"`` -> the storages in :data:`STORAGE_DTYPES` order (``""``: none).

    Example:
        >>> parse_table_dtypes("fp16,int8"), parse_table_dtypes("")
        (('int8', 'fp16'), ())
    """
    names = [t for t in text.split(",") if t]
    bad = [t for t in names if t not in STORAGE_DTYPES]
    if bad:
        raise ValueError(f"--table-dtypes: unknown {bad}; choose from {', '.join(STORAGE_DTYPES)} (comma-separated, "
                         f"or '' for none)")
    return tuple(t for t in STORAGE_DTYPES if t in names)


def score_storage(run_dir: Path, dtypes: Sequence[str], batch_size: int) -> Dict[str, Dict[str, Any]]:
    """Test metrics of the run's model with fp32 tables and each of ``dtypes``: ``{dtype: {test_auc,
    test_logloss, table_bytes, bytes}}`` (``bytes``: embedding bytes as stored, dense parameters in fp32)."""
    from recsys_emb.inference import KJTScorer, inference_module
    from recsys_emb.memory import memory_from_specs
    from recsys_emb.serving import load_model
    from recsys_emb.training.metrics import score_split

    model, features, data = load_model(run_dir)
    out: Dict[str, Dict[str, Any]] = {}
    for dtype in ("fp32", *dtypes):
        module = inference_module(model, features, dtype)
        m = score_split(KJTScorer(module, module.feature_names, module.dense_in), data["path"], "test", batch_size)
        out[dtype] = {"test_auc": m["auc"], "test_logloss": m["logloss"], "table_bytes": module.table_bytes,
                      "bytes": memory_from_specs(features, table_dtype=dtype).bytes}
        logger.info("%s with %s tables: test AUC %.4f, %d table bytes", run_dir.name, dtype, m["auc"],
                    module.table_bytes)
    return out
