"""Mixed-dimension solving across fields and from data: field-level dims (DLRM's ``md_solver`` rule) and
frequency blocks fixed from the counts preprocessing writes. The per-block rule of one feature is part of
its spec (:meth:`recsys_emb.specs.MixedDimension.resolve`).
"""

from __future__ import annotations

import dataclasses
from typing import List, Mapping, Optional, Sequence

from recsys_emb.specs import DIM_MULTIPLE, FeatureSpec, MixedDimension

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


def mixed_field_dims(sizes: Sequence[int], base_dim: int, alpha: float,
                     queries: Optional[Sequence[float]] = None, round_to: int = DIM_MULTIPLE) -> List[int]:
    """Field-level mixed dimensions (one dim per field; DLRM's ``md_solver`` rule).

    ``d_f = base_dim * (n_f' / n_min') ** (-alpha)`` with ``n_f' = rows_f / queries_f`` (queries: mean
    lookups of the field per sample, default 1): the field with the fewest effective rows gets
    ``base_dim``, larger fields less; rounded to ``round_to`` and clamped to ``[round_to, base_dim]``.
    Use with :class:`Full` specs; models project to a common dim only where they need one.

    Example:
        >>> mixed_field_dims([10, 1000, 100000], base_dim=64, alpha=0.25)
        [64, 20, 8]
    """
    q = list(queries) if queries is not None else [1.0] * len(sizes)
    eff = [n / max(k, 1e-12) for n, k in zip(sizes, q)]
    smallest = min(eff)
    dims = []
    for e in eff:
        d = int(round(base_dim * (e / smallest) ** (-alpha) / round_to)) * round_to
        dims.append(min(base_dim, max(round_to, d)))
    return dims
