"""Mixed-dimension solving across fields and from data: field-level dims (DLRM's ``md_solver`` rule) and
frequency blocks fixed from the counts preprocessing writes. The per-block rule of one feature is part of
its spec (:meth:`recsys_emb.specs.MixedDimension.resolve`).
"""

from __future__ import annotations

import dataclasses
from typing import List, Mapping, Sequence

from recsys_emb.specs import FeatureSpec, MixedDimension, mixed_field_dims

__all__ = ["resolve_frequencies", "mixed_field_dims"]


def resolve_frequencies(specs: Sequence[FeatureSpec], counts: Mapping[str, Sequence[float]]) -> List[FeatureSpec]:
    """Specs with every mixed-dimension feature's blocks fixed from its id frequency counts.

    Args:
        specs: feature specs.
        counts: ``{feature name: counts per id}`` (id = frequency rank, as preprocessing writes them);
            features without an entry keep Zipf's-law dims, and features whose spec fixes
            ``block_dims`` keep them.
    """
    out = []
    for f in specs:
        if isinstance(f.embedding, MixedDimension) and f.embedding.block_dims is None and f.name in counts:
            assert f.cardinality is not None  # FeatureSpec refuses a mixed-dimension feature without one
            f = dataclasses.replace(f, embedding=f.embedding.resolve(int(f.cardinality), counts[f.name]))
        out.append(f)
    return out
