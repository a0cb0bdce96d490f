"""Mixed-dimension embedding: frequency-ranked id blocks, one table and one projection per block."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.embeddings.base import ColumnOp, EmbeddingVariant, PerValue, VirtualFeature
from recsys_emb.embeddings.full import FullEmbedding, check_vocabularies, check_vocabulary
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

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature)
        spec = feature.embedding
        assert isinstance(spec, MixedDimension)
        self.spec = spec
        self.validate_ids = validate_ids
        defs = feature.tables()
        starts = [0]
        for t in defs[:-1]:
            starts.append(starts[-1] + t.rows)
        self.block_dims = [t.dim for t in defs]
        self.register_buffer("_bounds", torch.tensor(starts[1:], dtype=torch.int64), persistent=False)
        self.register_buffer("_starts", torch.tensor(starts, dtype=torch.int64), persistent=False)
        self.projected = [d != spec.base_dim for d in self.block_dims]
        self.projections = nn.ModuleList(nn.Linear(d, spec.base_dim, bias=False) if p else nn.Identity()
                                         for d, p in zip(self.block_dims, self.projected))

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(f"{self.feature.name}@b{i}", self._table_name(f"@b{i}"))
                for i in range(len(self.block_dims))]

    def _blocks(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(ids, self._bounds, right=True)

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        if self.validate_ids:
            check_vocabulary(self.feature.name, ids, int(self.feature.cardinality))
        if len(self.block_dims) == 1:  # field-level form: one block, the ids are its rows
            return [(ids, lengths)]
        block = self._blocks(ids)
        local = ids - self._starts[block]
        bag = torch.repeat_interleave(torch.arange(lengths.numel(), device=ids.device), lengths.long(),
                                      output_size=ids.numel())
        out = []
        for i in range(len(self.block_dims)):
            mask = block == i
            out.append((local[mask], torch.bincount(bag[mask], minlength=lengths.numel()).to(lengths.dtype)))
        return out

    @classmethod
    def remap_many(cls, variants: Sequence[EmbeddingVariant], ids: Sequence[torch.Tensor],
                   lengths: Sequence[torch.Tensor], cache: Dict[Any, Any]
                   ) -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """All features' blocks in one pass: ids are shifted into one global rank space (feature
        ``j`` starts at the sum of the earlier cardinalities), one ``bucketize`` finds every id's
        global block, one stable sort groups the values block by block (keeping bag order inside a
        block) and one ``bincount`` gives every block's bag lengths."""
        mds: List[MixedDimensionEmbedding] = list(variants)  # type: ignore[arg-type]
        if len({l.numel() for l in lengths}) != 1:
            return super().remap_many(variants, ids, lengths, cache)
        if all(len(v.block_dims) == 1 for v in mds):  # field-level form: ids are rows, as for full tables
            return FullEmbedding.remap_many(mds, ids, lengths, cache)
        device = ids[0].device
        key = ("mixed", tuple(map(id, mds)), device)
        if key not in cache:
            cards = [int(v.feature.cardinality) for v in mds]
            offsets = [sum(cards[:j]) for j in range(len(cards))]
            starts = torch.cat([v._starts.to(device) + o for v, o in zip(mds, offsets)])
            cache[key] = (starts, [len(v.block_dims) for v in mds],
                          PerValue([torch.tensor(cards, device=device), torch.tensor(offsets, device=device)]))
        starts, blocks, per_value = cache[key]
        per_card, per_offset = per_value(ids)
        x = torch.cat(list(ids))
        check_vocabularies(mds, ids, x, per_card)
        gx = x + per_offset
        block = torch.bucketize(gx, starts, right=True) - 1  # global block index
        local = gx - starts[block]
        lens = torch.stack(list(lengths))  # (F, B)
        batch = lens.shape[1]
        n_blocks = int(starts.numel())
        bag = torch.repeat_interleave(torch.arange(lens.numel(), device=device), lens.flatten().long(),
                                      output_size=x.numel()) % batch
        block_lengths = torch.bincount(block * batch + bag, minlength=n_blocks * batch).view(n_blocks, batch)
        values = local[torch.argsort(block, stable=True)]
        per_block = values.split(block_lengths.sum(1).tolist())
        per_block_lengths = block_lengths.to(lens.dtype).unbind(0)
        out, b = [], 0
        for k in blocks:
            out.append(list(zip(per_block[b:b + k], per_block_lengths[b:b + k])))
            b += k
        return out

    def value_counts(self, n_ids: int) -> Optional[List[int]]:
        return None  # depends on which block each id falls in

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        # All projected blocks in one matmul: [pooled_i ...] @ [P_i^T ...] (sum d_i x base_dim).
        proj = [x for x, p in zip(pooled, self.projected) if p]
        out = None
        if proj:
            weight = torch.cat([m.weight.t() for m, p in zip(self.projections, self.projected) if p], dim=0)
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

    def column_ops(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        # Unprojected blocks are copied (the first) or added onto the output; then every run of
        # projected blocks is one matmul accumulating into the same columns.
        ops: List[ColumnOp] = []
        base = self.spec.base_dim
        unprojected = [s for s, p in zip(sources, self.projected) if not p]
        if len(unprojected) > 2:
            return None  # more than two full-width blocks: leave the sum to autograd
        if len(unprojected) == 2:
            ops.append(("add", (unprojected[0][0], unprojected[1][0]), dst, base))
        elif unprojected:
            ops.append(("copy", (unprojected[0][0],), dst, base))
        for run in self._projected_runs(sources):
            ops.append(("proj", (sources[run[0]][0], sum(sources[i][1] for i in run)), dst, base))
        return ops

    def column_weights(self, sources: Sequence[Tuple[int, int]]) -> List[torch.Tensor]:
        out = []
        for run in self._projected_runs(sources):
            ws = [self.projections[i].weight for i in run]  # (base_dim, d_i) each
            out.append(ws[0] if len(ws) == 1 else torch.cat(ws, dim=1))
        return out

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        # Rows come block by block, each in input order; undo that grouping with one gather.
        projected = torch.cat([p(r) for p, r in zip(self.projections, rows)], dim=0)
        order = torch.argsort(self._blocks(ids), stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return projected[inverse]
