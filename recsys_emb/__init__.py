"""recsys_emb: memory-efficient feature embeddings for CTR models, every variant behind one interface."""

from recsys_emb.torch_stack import check_torch_stack

# First, before anything imports torchrec: a missing or mismatched torch / FBGEMM / TorchRec fails here
# with one ImportError that says what to install, not deep inside TorchRec.
check_torch_stack()

from recsys_emb.errors import (
    BadLineError,
    CheckpointError,
    ConfigError,
    DataError,
    InvalidInputError,
    RecsysEmbError,
    SpecError,
    TorchStackError,
)
from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, kjt_from_lists
from recsys_emb.memory import memory_from_specs
from recsys_emb.spec_io import dump_specs, load_specs
from recsys_emb.specs import FeatureSpec, Full, Hashed, MixedDimension, QuotientRemainder, Unified, UnifiedTable
from recsys_emb.tables import EmbeddingOptimizer, TableBatched

from recsys_emb.version import __version__

_SERVING = {"load_model": "recsys_emb.model_dir", "SavedModel": "recsys_emb.model_dir",
            "export_model": "recsys_emb.model_dir", "predict": "recsys_emb.scoring",
            "score_frame": "recsys_emb.scoring"}


def __getattr__(name: str):  # noqa: ANN201 - PEP 562: the serving API loads the trainer's stack on first use
    if name in _SERVING:
        import importlib

        return getattr(importlib.import_module(_SERVING[name]), name)
    raise AttributeError(f"module 'recsys_emb' has no attribute {name!r}")


__all__ = [
    "FeatureSpec",
    "Full",
    "Hashed",
    "QuotientRemainder",
    "MixedDimension",
    "Unified",
    "UnifiedTable",
    "load_specs",
    "dump_specs",
    "EmbeddingLayer",
    "SequenceEmbeddingLayer",
    "kjt_from_lists",
    "memory_from_specs",
    "EmbeddingOptimizer",
    "TableBatched",
    "RecsysEmbError",
    "SpecError",
    "ConfigError",
    "InvalidInputError",
    "BadLineError",
    "DataError",
    "CheckpointError",
    "TorchStackError",
    "load_model",
    "SavedModel",
    "export_model",
    "predict",
    "score_frame",
    "__version__",
]
