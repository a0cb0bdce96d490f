"""The hashing trick, with one or several hash probes into one table."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.embeddings.plans import ColumnOp, Hash, RemapPlan
from recsys_emb.hashing import _to_signed, seed_from_name, seed_key
from recsys_emb.specs import FeatureSpec, Hashed

__all__ = ["HashedEmbedding", "probe_seeds"]


def probe_seeds(table_owner: str, num_hashes: int) -> List[int]:
    """The seeds of a hashed table's probes, derived from the owning feature's name (stable)."""
    return [seed_from_name(table_owner, "hash", j) for j in range(num_hashes)]


class HashedEmbedding(EmbeddingVariant):
    """``buckets x dim`` table; probe ``j`` of id ``x`` reads row ``hash(x, seed_j) mod buckets``
    (the spec's ``oov_id`` reads the extra row ``buckets`` instead).

    With ``combiner="sum"`` the ``k`` probes of every id go into the same bag (one lookup call,
    ``k * L`` rows summed per bag); with ``"weighted"`` each probe is its own virtual feature and the
    pooled probes are mixed by ``k`` learned weights.

    Example:
        >>> v = HashedEmbedding(FeatureSpec("C1", Hashed(dim=8, buckets=100, num_hashes=2)))
        >>> rows, lengths = v.remap(torch.tensor([5, -3]), torch.tensor([2]))[0]
        >>> rows.shape, lengths.tolist()
        (torch.Size([4]), [4])
    """

    _keys: torch.Tensor  # buffer

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)  # any int64 id hashes to a valid row: nothing to validate
        spec = feature.embedding
        assert isinstance(spec, Hashed)
        self.spec = spec
        keys = [_to_signed(seed_key(s)) for s in probe_seeds(feature.table_owner, spec.num_hashes)]
        # Buffers, not parameters: derived from names, so they are not saved in the state dict.
        self.register_buffer("_keys", torch.tensor(keys, dtype=torch.int64), persistent=False)
        self.weighted = spec.combiner == "weighted" and spec.num_hashes > 1
        if self.weighted:
            self.probe_weights = nn.Parameter(torch.ones(spec.num_hashes))

    def virtual_features(self) -> List[VirtualFeature]:
        if self.weighted:
            return [VirtualFeature(f"{self.feature.name}@h{j}", self._table_name()) for j in range(self.spec.num_hashes)]
        return [VirtualFeature(self.feature.name, self._table_name())]

    def remap_plan(self) -> Optional[RemapPlan]:
        s = self.spec
        return Hash(self.feature.name, self._keys, s.buckets, split=self.weighted, oov_id=s.oov_id,
                    oov_row=None if s.oov_id is None else s.buckets)

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.weighted:
            return pooled[0]
        return torch.einsum("kbd,k->bd", torch.stack(list(pooled)), self.probe_weights)

    def combine_plan(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        if self.weighted:
            return None
        return [ColumnOp("copy", (sources[0][0],), dst, sources[0][1])]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        k = self.spec.num_hashes
        if self.weighted:
            return self.combine(rows)
        if k == 1:
            return rows[0]
        return rows[0].view(-1, k, rows[0].shape[-1]).sum(1)
