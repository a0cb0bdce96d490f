"""Tensor-train tables (TT-Rec): each row the product of three small cores, in plain PyTorch."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.embeddings.base import EmbeddingVariant, VirtualFeature
from recsys_emb.errors import InvalidInputError
from recsys_emb.specs import FeatureSpec, TensorTrain

__all__ = ["TensorTrainEmbedding"]


GATHER_LIMIT = 1 << 26
"""Elements (256 MiB in fp32) above which a training batch's first TT product is taken per distinct middle
index instead of over a gathered copy of the second core (:meth:`TensorTrainEmbedding._first_product`)."""


class TensorTrainEmbedding(EmbeddingVariant):
    """The three cores of a :class:`~recsys_emb.specs.TensorTrain` spec as parameters ``core0..core2``
    (shapes :meth:`~recsys_emb.specs.TensorTrain.core_shapes`).

    With the spec's ``oov_id``, that id reads the parameter ``oov`` (``dim`` floats) instead.

    Lookup: each id's three core rows are gathered (unpooled), multiplied into its ``dim`` row by two
    batched matmuls, and the rows are then sum-pooled per bag (:meth:`pooled`). The variant has no
    virtual features: the layer asks it for its pooled output (:attr:`owns_rows`), since a TorchRec
    collection would pool the core rows before they can be multiplied.

    Initialisation (TT-Rec, section 4.3, recommends Gaussian cores over uniform ones): core entries
    ``N(0, s^2)``, ``N(0, s^2 / r1)``, ``N(0, s^2 / r2)`` with ``s^6 = 1 / (3N)``, so the materialised
    table's entries start with the variance of the full table's ``U(-1/sqrt(N), 1/sqrt(N))``.

    Example:
        >>> v = TensorTrainEmbedding(FeatureSpec("C1", TensorTrain(dim=8, ranks=(4, 4)), cardinality=100))
        >>> [tuple(p.shape) for p in (v.core0, v.core1, v.core2)]
        [(5, 8), (5, 32), (4, 8)]
        >>> v.pooled(torch.tensor([3, 7, 99]), torch.tensor([2, 1]), 2).shape
        torch.Size([2, 8])
    """

    owns_rows = True

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__(feature, validate_ids)
        spec = feature.embedding
        assert isinstance(spec, TensorTrain)
        self.spec = spec
        self.cardinality = int(feature.cardinality)  # type: ignore[arg-type]
        self.n = spec.resolved_factors(self.cardinality)
        self.d = spec.resolved_dim_factors()
        self.r = spec.ranks
        shapes = spec.core_shapes(self.cardinality)
        s = (1.0 / (3.0 * self.cardinality)) ** (1.0 / 6.0)
        stds = (s, s / math.sqrt(self.r[0]), s / math.sqrt(self.r[1]))
        self.core0, self.core1, self.core2 = (nn.Parameter(torch.randn(*shape) * std) for shape, std in zip(shapes, stds))
        self.oov_id = spec.oov_id
        if spec.oov_id is not None:  # the OOV id's own row, with the materialised table's variance 1 / (3N)
            self.oov = nn.Parameter(torch.randn(spec.dim) * (3.0 * self.cardinality) ** -0.5)

    def virtual_features(self) -> List[VirtualFeature]:
        return []

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """No table lookups; checks the ids against the vocabulary (unless ``validate_ids`` is off)."""
        if self.validate_ids and ids.numel():
            bad = (ids < 0) | (ids >= self.cardinality)
            if bool(bad.any()):
                raise InvalidInputError(f"feature {self.feature.name!r}: ids {ids[bad][:5].tolist()} are outside "
                                        f"[0, {self.cardinality}) (cardinality); remap them or use type 'hashed'")
        return []

    def rows_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows ``(n, dim)`` of ``ids (n,)`` (in ``[0, n1 n2 n3)``; not checked).

        The first product ``G1[i1] G2[i2]`` (``d1 r1 d2 r2`` multiply-adds, the larger one) depends on the
        prefix ``x // n3`` only; in training it is computed once per distinct prefix of the batch (skewed
        ids share few) and gathered per id, which gives the same rows and gradients as one per id. In
        eval mode (serving, ``torch.export``) every id computes its own, with static shapes."""
        (n1, n2, n3), (d1, d2, d3), (r1, r2) = self.n, self.d, self.r
        prefix = torch.div(ids, n3, rounding_mode="floor")  # i1 * n2 + i2
        i3 = ids - prefix * n3
        inverse = None
        if self.training:
            prefix, inverse = torch.unique(prefix, return_inverse=True)
        i1 = torch.div(prefix, n2, rounding_mode="floor")
        i2 = prefix - i1 * n2
        u, m = prefix.shape[0], ids.shape[0]
        a = self.core0.index_select(0, i1).view(u, d1, r1)
        if inverse is not None and u * r1 * d2 * r2 > GATHER_LIMIT:
            ab = self._first_product(a, i2).index_select(0, inverse)
        else:
            b = self.core1.index_select(0, i2).view(u, r1, d2 * r2)
            ab = torch.bmm(a, b).view(u, d1 * d2, r2)
            if inverse is not None:
                ab = ab.index_select(0, inverse)
        c = self.core2.index_select(0, i3).view(m, r2, d3)
        rows = torch.bmm(ab, c).view(m, d1 * d2 * d3)
        if self.oov_id is not None:  # the OOV id reads its own row; the cores get no gradient from it
            rows = torch.where(torch.eq(ids, self.oov_id).unsqueeze(1), self.oov.unsqueeze(0), rows)
        return rows

    def _first_product(self, a: torch.Tensor, i2: torch.Tensor) -> torch.Tensor:
        """``G1[i1] G2[i2]`` of each distinct prefix, ``a (u, d1, r1)`` the ``G1`` slices -> ``(u, d1 d2, r2)``:
        one matrix product per distinct ``i2`` (at most ``n2``) over the prefixes that share it, so no
        ``(u, r1, d2 r2)`` copy of the second core is made. Used in training when that copy would pass
        :data:`GATHER_LIMIT` elements: at ranks near 200 it took gigabytes a field, kept for the backward
        (``bench/embedding_throughput.py --variants tt`` at dim 64 and cap 1M: 15.2 GB peak, 6.9 GB with this), at about
        two thirds of the speed of the one batched product."""
        (_, n2, _), (d1, d2, _), (r1, r2) = self.n, self.d, self.r
        u = a.shape[0]
        order = torch.argsort(i2, stable=True)
        values, counts = torch.unique_consecutive(i2.index_select(0, order), return_counts=True)
        parts = a.index_select(0, order).view(u * d1, r1).split([int(k) * d1 for k in counts.tolist()])
        core = self.core1.view(n2, r1, d2 * r2)
        out = torch.cat([p @ core[int(v)] for p, v in zip(parts, values.tolist())])  # (u d1, d2 r2), sorted
        return out.view(u, d1 * d2, r2).index_select(0, torch.argsort(order))

    def pooled(self, ids: torch.Tensor, lengths: torch.Tensor, batch: int) -> torch.Tensor:
        """Sum of each bag's rows: ``ids (n,)``, ``lengths (B,)`` -> ``(B, dim)``."""
        rows = self.rows_of(ids)
        bags = torch.repeat_interleave(torch.arange(batch, device=ids.device), lengths, output_size=ids.shape[0])
        return rows.new_zeros(batch, rows.shape[1]).index_add(0, bags, rows)

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        raise TypeError(f"feature {self.feature.name!r}: a tensor-train variant has no pooled lookups to combine; "
                        f"the layer calls its pooled(ids, lengths, batch)")

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self.rows_of(ids)

    def materialise(self) -> torch.Tensor:
        """The whole virtual ``cardinality x dim`` table (tests, small tables, SVD)."""
        return self.rows_of(torch.arange(self.cardinality, device=self.core0.device))
