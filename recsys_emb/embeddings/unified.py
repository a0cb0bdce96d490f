"""Unified embedding (feature multiplexing): many features, one shared table, salted hashes."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.embeddings.plans import ColumnOp, Hash, RemapPlan
from recsys_emb.errors import CheckpointError
from recsys_emb.hashing import seed_keys
from recsys_emb.specs import FeatureSpec, Unified

__all__ = ["UnifiedEmbedding"]


class UnifiedEmbedding(EmbeddingVariant):
    """Chunk ``j`` of id ``x`` reads row ``hash(x, salt_j) mod rows`` of the group's shared table
    (the spec's ``oov_id`` reads its reserved ``oov_row`` in every chunk);
    the output concatenates the ``chunks`` rows (``chunks * chunk_dim`` columns).

    The salts come from the spec (a saved config carries them) and also travel in the state dict
    beside the tables they index; a state dict whose salts differ from the spec's is refused.

    Example:
        >>> from recsys_emb.specs import UnifiedTable
        >>> v = UnifiedEmbedding(FeatureSpec("C1", Unified(UnifiedTable("u", 100, 8), chunks=2)))
        >>> [vf.table for vf in v.virtual_features()]
        ['u', 'u']
    """

    salts: torch.Tensor  # buffers
    _keys: torch.Tensor

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)  # any int64 id hashes to a valid row: nothing to validate
        spec = feature.embedding
        assert isinstance(spec, Unified) and spec.salts is not None
        self.spec = spec
        self.register_buffer("salts", torch.tensor(spec.salts, dtype=torch.int64))
        self.register_buffer("_keys", seed_keys(self.salts), persistent=False)  # derived, not saved
        self.register_load_state_dict_post_hook(_check_salts)

    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(f"{self.feature.name}@u{j}", self.spec.group.name) for j in range(self.spec.chunks)]

    def remap_plan(self) -> Optional[RemapPlan]:
        s = self.spec
        return Hash(self.feature.name, self._keys, s.group.rows, split=True, oov_id=s.oov_id, oov_row=s.oov_row)

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        return pooled[0] if len(pooled) == 1 else torch.cat(list(pooled), dim=1)

    def combine_plan(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        w = self.spec.group.chunk_dim
        return [ColumnOp("copy", (start,), dst + j * w, w) for j, (start, _) in enumerate(sources)]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self.combine(rows)


def _check_salts(module: UnifiedEmbedding, _incompatible: Any) -> None:
    """The rows a unified feature reads depend on its salts: tables trained with other salts than the
    spec's would be read at the wrong rows, so such a state dict is refused."""
    want = list(module.spec.salts or ())
    got = module.salts.tolist()
    if got != want:
        raise CheckpointError(f"feature {module.feature.name!r}: the state dict's unified salts {got} differ from "
                              f"the spec's {want}; load it with the feature specs it was trained with")
