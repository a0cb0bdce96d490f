"""ROBE-Z: every feature of a group reads hashed blocks of one flat circular parameter array."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.embeddings.plans import ColumnOp
from recsys_emb.hashing import bucket_matrix, seed_from_name, seed_keys
from recsys_emb.specs import DIM_MULTIPLE, FeatureSpec, Robe

__all__ = ["RobeEmbedding", "robe_seeds"]


def robe_seeds(group: str, table_owner: str, blocks: int) -> List[int]:
    """The hash seeds of a feature's blocks, from the array's and the owning feature's names (stable)."""
    return [seed_from_name(group, table_owner, "robe", j) for j in range(blocks)]


class RobeEmbedding(EmbeddingVariant):
    """The array ``M`` (:class:`~recsys_emb.specs.RobeArray`) is a TorchRec table of ``size / 4`` rows of
    4 floats, so it is sharded, optimised and exported as one table, like a unified table. Columns
    ``4k .. 4k+3`` of a feature's embedding are its virtual feature ``k`` (``dim / 4`` of them): for an
    id, the row of ``M`` at its block's hashed start plus the 4-float granule's place in the block
    (modulo the rows: the array is circular). Sum pooling per virtual feature is then exactly the sum
    of the bag's ROBE rows, column by column, and the output concatenates the ``dim / 4`` pooled parts.
    The spec's ``oov_id`` reads its reserved rows ``oov_row + k`` instead of hashed ones.

    Example:
        >>> from recsys_emb.specs import RobeArray
        >>> v = RobeEmbedding(FeatureSpec("C1", Robe(RobeArray("r", 64), dim=8, block=8)))
        >>> [(vf.name, vf.table) for vf in v.virtual_features()]
        [('C1@z0', 'r'), ('C1@z1', 'r')]
        >>> r = v.rows_of(torch.tensor([5]))   # one block of 8 floats: two consecutive rows of 4
        >>> int((r[0, 1] - r[0, 0]) % 16)
        1
    """

    _keys: torch.Tensor  # buffers, derived from names (not saved)
    _block_of: torch.Tensor
    _granule: torch.Tensor
    _oov_rows: torch.Tensor

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)  # any int64 id hashes to valid rows: nothing to validate
        spec = feature.embedding
        assert isinstance(spec, Robe)
        self.spec = spec
        self.rows = spec.group.rows  # the hashed rows (the reserved ones follow them)
        self.parts = spec.dim // DIM_MULTIPLE
        per_block = spec.block // DIM_MULTIPLE  # granules of 4 floats per block
        self.ids_per_block = max(1, spec.block // spec.dim)
        blocks = max(1, spec.dim // spec.block)
        k = torch.arange(self.parts, dtype=torch.int64)
        seeds = torch.tensor(robe_seeds(spec.group.name, feature.table_owner, blocks), dtype=torch.int64)
        self.register_buffer("_keys", seed_keys(seeds), persistent=False)
        if self.ids_per_block == 1:  # blocks within an id: granule k is in block k // per_block
            self.register_buffer("_block_of", torch.div(k, per_block, rounding_mode="floor"), persistent=False)
            self.register_buffer("_granule", k % per_block, persistent=False)
        else:  # ids within a block: one block (seed 0), granule (x mod c) * parts + k
            self.register_buffer("_block_of", torch.zeros_like(k), persistent=False)
            self.register_buffer("_granule", k, persistent=False)
        self.oov_id = spec.oov_id
        if spec.oov_id is not None:  # the OOV id's dim / 4 reserved rows
            self.register_buffer("_oov_rows", k + int(spec.oov_row), persistent=False)  # type: ignore[arg-type]

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(f"{self.feature.name}@z{k}", self.spec.group.name) for k in range(self.parts)]

    def rows_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The array rows every id reads: int64 ``(n, dim / 4)``, column ``k`` for output columns ``4k..4k+3``."""
        return self.part_rows(ids).t()

    def part_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """:meth:`rows_of` transposed, ``(dim / 4, n)`` and contiguous: row ``k`` is virtual feature ``k``'s
        values. A block's start is below ``rows`` and a granule's place in it below ``block / 4 <= rows``,
        so the circular wrap is one conditional subtraction, not an int64 remainder."""
        c = self.ids_per_block
        if c == 1:
            starts = bucket_matrix(ids, self._keys, self.rows).t()  # (blocks, n)
            offset = self._granule.unsqueeze(1)
        else:
            q = torch.div(ids, c, rounding_mode="floor")
            starts = bucket_matrix(q, self._keys, self.rows).t()  # (1, n)
            offset = (ids - q * c).unsqueeze(0) * self.parts + self._granule.unsqueeze(1)
        rows = starts.index_select(0, self._block_of) + offset
        rows = torch.where(rows >= self.rows, rows - self.rows, rows)
        if self.oov_id is not None:
            rows = torch.where(torch.eq(ids, self.oov_id).unsqueeze(0), self._oov_rows.unsqueeze(1), rows)
        return rows

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        return [(r, lengths) for r in self.part_rows(ids).unbind(0)]

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        return pooled[0] if len(pooled) == 1 else torch.cat(list(pooled), dim=1)

    def combine_plan(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        return [ColumnOp("copy", (start,), dst + k * DIM_MULTIPLE, DIM_MULTIPLE) for k, (start, _) in enumerate(sources)]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self.combine(rows)

    def materialise(self, array: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The embeddings ``(n, dim)`` of ``ids`` read from the array's ``(size / 4, 4)`` table."""
        return array[self.rows_of(ids)].reshape(ids.shape[0], -1)
