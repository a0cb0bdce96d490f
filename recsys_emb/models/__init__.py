"""CTR models built on the embedding layers: DLRM and DIN, and their dense layers (MLP, Dice,
interactions, attention unit)."""

from recsys_emb.models.din import DIN
from recsys_emb.models.dlrm import DLRM, INTERACTIONS
from recsys_emb.models.layers import (
    ACTIVATIONS,
    MLP,
    AttentionPooling,
    CatInteraction,
    CrossInteraction,
    Dice,
    DotInteraction,
    SumPooling,
)

__all__ = [
    "DLRM",
    "DIN",
    "INTERACTIONS",
    "ACTIVATIONS",
    "MLP",
    "Dice",
    "DotInteraction",
    "CatInteraction",
    "CrossInteraction",
    "AttentionPooling",
    "SumPooling",
]
