"""Unified embedding (feature multiplexing): many features, one shared table, salted hashes."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from recsys_emb.embeddings.base import ColumnOp, EmbeddingVariant, VirtualFeature
from recsys_emb.hashing import bucket_matrix, seed_keys
from recsys_emb.specs import FeatureSpec, Unified

__all__ = ["UnifiedEmbedding"]


class UnifiedEmbedding(EmbeddingVariant):
    """Chunk ``j`` of id ``x`` reads row ``hash(x, salt_j) mod rows`` of the group's shared table;
    the output concatenates the ``chunks`` rows (``chunks * chunk_dim`` columns).

    The salts are a persistent buffer: they travel in the state dict with the tables they index.

    Example:
        >>> from recsys_emb.specs import UnifiedTable
        >>> v = UnifiedEmbedding(FeatureSpec("C1", Unified(UnifiedTable("u", 100, 8), chunks=2)))
        >>> [vf.table for vf in v.virtual_features()]
        ['u', 'u']
    """

    def __init__(self, feature: FeatureSpec) -> None:
        super().__init__(feature)
        spec = feature.embedding
        assert isinstance(spec, Unified) and spec.salts is not None
        self.spec = spec
        self.register_buffer("salts", torch.tensor(spec.salts, dtype=torch.int64))
        # the salts' seed keys, derived (not saved); recomputed whenever a state dict brings salts
        self.register_buffer("_keys", seed_keys(self.salts), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh_keys())

    def _refresh_keys(self) -> None:
        with torch.no_grad():
            self._keys = seed_keys(self.salts)

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(f"{self.feature.name}@u{j}", self.spec.group.name) for j in range(self.spec.chunks)]

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        return self.remap_rows(bucket_matrix(ids, self._keys, self.spec.group.rows), lengths)

    def hash_keys(self) -> Optional[Tuple[torch.Tensor, int]]:
        return self._keys, self.spec.group.rows

    def remap_rows(self, rows: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        if self.spec.chunks == 1:
            return [(rows.view(-1), lengths)]
        return [(rows[:, j].contiguous(), lengths) for j in range(self.spec.chunks)]

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        return pooled[0] if len(pooled) == 1 else torch.cat(list(pooled), dim=1)

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self.combine(rows)

    def column_ops(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        w = self.spec.group.chunk_dim
        return [("copy", (start,), dst + j * w, w) for j, (start, _) in enumerate(sources)]

    @property
    def identity_combine(self) -> bool:
        return self.spec.chunks == 1
