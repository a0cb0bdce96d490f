"""recsys_emb: memory-efficient feature embeddings for CTR models, every variant behind one interface.

``import recsys_emb`` loads nothing heavy (no torch, no TorchRec): the public names below resolve on first
use (PEP 562), and so do the subpackages (``recsys_emb.inference``, ``recsys_emb.training``, ...). The
torch-only core (specs, hashing, remap and combine, the table-batched kernel) needs PyTorch and numpy
alone; a TorchRec-backed part used without a working torch / FBGEMM / TorchRec set raises one
:class:`TorchStackError` with the install commands (:mod:`recsys_emb.torch_stack`).

Example:
    >>> import recsys_emb
    >>> recsys_emb.Full(dim=8).dim
    8
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, List

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
from recsys_emb.version import __version__

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers
    from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer, kjt_from_lists
    from recsys_emb.memory import memory_from_specs
    from recsys_emb.model_dir import SavedModel, export_model, load_model
    from recsys_emb.scoring import predict, score_frame
    from recsys_emb.spec_io import dump_specs, load_specs
    from recsys_emb.specs import FeatureSpec, Full, Hashed, MixedDimension, QuotientRemainder, Unified, UnifiedTable
    from recsys_emb.tables import EmbeddingOptimizer, TableBatched

_LAZY: Dict[str, str] = {
    **dict.fromkeys(["FeatureSpec", "Full", "Hashed", "QuotientRemainder", "MixedDimension", "Unified",
                     "UnifiedTable"], "recsys_emb.specs"),
    **dict.fromkeys(["load_specs", "dump_specs"], "recsys_emb.spec_io"),
    **dict.fromkeys(["EmbeddingLayer", "SequenceEmbeddingLayer", "kjt_from_lists"], "recsys_emb.layer"),
    "memory_from_specs": "recsys_emb.memory",
    **dict.fromkeys(["EmbeddingOptimizer", "TableBatched"], "recsys_emb.tables"),
    **dict.fromkeys(["load_model", "SavedModel", "export_model"], "recsys_emb.model_dir"),
    **dict.fromkeys(["predict", "score_frame"], "recsys_emb.scoring"),
}
"""``{public name: the module that defines it}``, imported on first access."""

_SUBPACKAGES = ("baselines", "config", "data", "embeddings", "hashing", "inference", "layer", "memory",
                "mixed_dims", "model_dir", "models", "presets", "runtime", "scoring", "search", "serving",
                "sharding", "spec_io", "specs", "tables", "torch_stack", "training")
"""Submodules reachable as attributes after a bare ``import recsys_emb`` (imported on first access)."""


def __getattr__(name: str) -> Any:
    """PEP 562: a public name or a submodule, imported on first access and then cached in the module."""
    if name not in _LAZY and name not in _SUBPACKAGES:
        raise AttributeError(f"module 'recsys_emb' has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY.get(name, f"recsys_emb.{name}"))
    except ModuleNotFoundError as e:
        if e.name == "torch":  # the stack check says so, with the install commands
            from recsys_emb.torch_stack import check_torch_stack

            check_torch_stack()
        raise
    value = getattr(module, name) if name in _LAZY else module
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


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
