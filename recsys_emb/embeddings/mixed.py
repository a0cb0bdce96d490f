"""Mixed-dimension embedding: frequency-ranked id blocks, one table and one projection per block."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.embeddings.plans import Blocks, ColumnOp, Identity, RemapPlan
from recsys_emb.specs import FeatureSpec, MixedDimension

__all__ = ["MixedDimensionEmbedding"]


class MixedDimensionEmbedding(EmbeddingVariant):
    """Block ``i`` (ranks ``[s_i, s_{i+1})``) reads ``id - s_i`` from an ``n_i x d_i`` table; its
    pooled vector is projected by ``P_i: d_i -> base_dim``, and the feature's output is the sum of
    the blocks' projections. Sum pooling is linear, so pooling each block first and projecting after
    costs one projection per block per bag (not per id) and equals projecting every id.

    A block whose dim is already ``base_dim`` gets no projection: ``E_i P_i^T`` with a learned
    square ``P_i`` spans exactly the matrices a learned ``E_i`` spans, so the projection would add
    parameters and a matmul per bag without adding any function (and ``alpha = 0`` is then exactly a
    uniform table).

    Example:
        >>> v = MixedDimensionEmbedding(FeatureSpec("C1", MixedDimension(8, 0.5, boundaries=(2,)), cardinality=10))
        >>> [(t.rows, t.dim) for t in v.tables()]
        [(2, 8), (8, 4)]
    """

    _bounds: torch.Tensor  # buffer

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)
        spec = feature.embedding
        assert isinstance(spec, MixedDimension)
        self.spec = spec
        defs = feature.tables()
        starts = [0]
        for t in defs[:-1]:
            starts.append(starts[-1] + t.rows)
        self.starts = tuple(starts)
        self.block_dims = [t.dim for t in defs]
        self.register_buffer("_bounds", torch.tensor(starts[1:], dtype=torch.int64), persistent=False)
        self.projected = [d != spec.base_dim for d in self.block_dims]
        self.projections = nn.ModuleList(nn.Linear(d, spec.base_dim, bias=False) if p else nn.Identity()
                                         for d, p in zip(self.block_dims, self.projected))

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(f"{self.feature.name}@b{i}", self._table_name(f"@b{i}"))
                for i in range(len(self.block_dims))]

    def remap_plan(self) -> Optional[RemapPlan]:
        card = int(self.feature.cardinality)  # type: ignore[arg-type]
        if len(self.block_dims) == 1:  # field-level form: one block, the ids are its rows
            return Identity(self.feature.name, card if self.validate_ids else None)
        return Blocks(self.feature.name, self.starts, card, check=self.validate_ids)

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        # All projected blocks in one matmul: [pooled_i ...] @ [P_i^T ...] (sum d_i x base_dim).
        proj = [x for x, p in zip(pooled, self.projected) if p]
        out = None
        if proj:
            weight = torch.cat([m.weight.t() for m in self.projections if isinstance(m, nn.Linear)], dim=0)
            out = (proj[0] if len(proj) == 1 else torch.cat(proj, dim=1)) @ weight
        for x, p in zip(pooled, self.projected):
            if not p:
                out = x if out is None else out + x
        assert out is not None
        return out

    def _projected_runs(self, sources: Sequence[Tuple[int, int]]) -> List[List[int]]:
        """Projected blocks grouped into runs whose pooled columns are adjacent (one matmul per run)."""
        runs: List[List[int]] = []
        end = None
        for i, (start, width) in enumerate(sources):
            if not self.projected[i]:
                continue
            if runs and start == end:
                runs[-1].append(i)
            else:
                runs.append([i])
            end = start + width
        return runs

    def combine_plan(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        # Unprojected blocks are copied (the first) or added onto the output; then every run of
        # projected blocks is one matmul accumulating into the same columns.
        ops: List[ColumnOp] = []
        base = self.spec.base_dim
        unprojected = [s for s, p in zip(sources, self.projected) if not p]
        if len(unprojected) > 2:
            return None  # more than two full-width blocks: leave the sum to autograd
        if len(unprojected) == 2:
            ops.append(ColumnOp("add", (unprojected[0][0], unprojected[1][0]), dst, base))
        elif unprojected:
            ops.append(ColumnOp("copy", (unprojected[0][0],), dst, base))
        for run in self._projected_runs(sources):
            ops.append(ColumnOp("proj", (sources[run[0]][0], sum(sources[i][1] for i in run)), dst, base,
                                tuple(f"projections.{i}.weight" for i in run)))
        return ops

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        # Rows come block by block, each in input order; undo that grouping with one gather.
        projected = torch.cat([p(r) for p, r in zip(self.projections, rows)], dim=0)
        order = torch.argsort(torch.bucketize(ids, self._bounds, right=True), stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return projected[inverse]
