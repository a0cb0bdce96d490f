"""recsys_emb: memory-efficient feature embeddings for CTR models, every variant behind one interface."""

from recsys_emb.specs import FeatureSpec, Full, Hashed, QuotientRemainder, load_specs, dump_specs
from recsys_emb.layer import EmbeddingLayer, InvalidInputError, kjt_from_lists
from recsys_emb.concat import FusedOptimizer

__version__ = "0.1.0"

__all__ = [
    "FeatureSpec",
    "Full",
    "Hashed",
    "QuotientRemainder",
    "load_specs",
    "dump_specs",
    "EmbeddingLayer",
    "InvalidInputError",
    "kjt_from_lists",
    "FusedOptimizer",
]
