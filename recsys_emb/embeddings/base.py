"""The interface every embedding variant implements: remap ids -> TorchRec tables -> combine.

A variant never owns trainable tables itself: it declares them (:class:`TableDef`), and the
:class:`~recsys_emb.layer.EmbeddingLayer` puts all of them into one TorchRec collection, so that
DistributedModelParallel can shard every variant without variant-specific code.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.errors import InvalidInputError
from recsys_emb.specs import FeatureSpec, TableDef

__all__ = ["TableDef", "VirtualFeature", "ColumnOp", "EmbeddingVariant", "InvalidInputError", "format_bad_values",
           "PerValue"]

ColumnOp = Tuple[str, Tuple[int, ...], int, int]
"""``(op, sources, destination column start, width)``: how a combine maps pooled columns to output
columns when it is column arithmetic. ``copy``, ``mul``, ``add``: sources are the start columns of
the ``width``-wide operands. ``proj``: sources are ``(start, in_width)`` of one column range,
multiplied by a ``(width, in_width)`` weight from :meth:`EmbeddingVariant.column_weights`
(see :class:`~recsys_emb.embeddings.combine.ColumnProgram`)."""


@dataclass(frozen=True)
class VirtualFeature:
    """A key of the KeyedJaggedTensor that the TorchRec collection sees, and the table it reads."""

    name: str
    table: str


def format_bad_values(feature: str, values: torch.Tensor, bad: torch.Tensor, rule: str, fix: str) -> str:
    """Error text naming the feature, the first offending ids and their positions."""
    idx = bad.nonzero().flatten()
    shown = idx[:5].tolist()
    vals = values[idx[:5]].tolist()
    pairs = ", ".join(f"{v} (value #{i})" for v, i in zip(vals, shown))
    more = f" and {idx.numel() - len(shown)} more" if idx.numel() > len(shown) else ""
    return f"feature {feature!r}: {idx.numel()} id(s) break {rule}: {pairs}{more}. {fix}"


class PerValue:
    """Per-feature constants repeated once per id, for ids concatenated feature after feature.

    Batched remaps keep one and call it every step; the repeated tensors are rebuilt only when the
    per-feature id counts change (never, for one id per field and sample).

    Args:
        per_feature: tensors whose first dim has one entry per feature.

    Example:
        >>> rep = PerValue([torch.tensor([10, 20])])
        >>> rep([torch.zeros(1), torch.zeros(2)])[0].tolist()
        [10, 20, 20]
    """

    def __init__(self, per_feature: Sequence[torch.Tensor]) -> None:
        self.per_feature = list(per_feature)
        self._counts: Optional[List[int]] = None
        self._values: List[torch.Tensor] = []

    def __call__(self, ids: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        counts = [int(t.numel()) for t in ids]
        if counts != self._counts:
            sizes = torch.tensor(counts, device=self.per_feature[0].device)
            self._values = [torch.repeat_interleave(c, sizes, dim=0, output_size=sum(counts)) for c in self.per_feature]
            self._counts = counts
        return self._values


class EmbeddingVariant(nn.Module, abc.ABC):
    """One feature's embedding variant: the dense ``remap`` before the tables and ``combine`` after.

    Shapes, for a batch of ``B`` bags holding ``n`` ids in total:

    * ``remap(ids: (n,), lengths: (B,))`` returns one ``(values, lengths)`` pair per entry of
      :meth:`virtual_features`, in that order.
    * ``combine(pooled)`` takes the sum-pooled ``(B, table.dim)`` output of each virtual feature
      and returns the feature's ``(B, output_dim)`` embedding (before mean pooling, which the layer
      applies).
    """

    def __init__(self, feature: FeatureSpec) -> None:
        super().__init__()
        self.feature = feature

    @property
    def output_dim(self) -> int:
        return self.feature.output_dim

    @property
    def owns_tables(self) -> bool:
        return self.feature.shared_with is None

    def tables(self) -> List[TableDef]:
        """The physical tables of the feature's table owner (the same list for a sharing feature)."""
        return self.feature.tables()

    @abc.abstractmethod
    def virtual_features(self) -> List[VirtualFeature]:
        """Keys this feature contributes to the collection's input, each with the table it reads."""

    @abc.abstractmethod
    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Map raw int64 ids to table rows, one (values, lengths) pair per virtual feature."""

    @classmethod
    def remap_many(cls, variants: Sequence["EmbeddingVariant"], ids: Sequence[torch.Tensor],
                   lengths: Sequence[torch.Tensor], cache: Dict[Any, Any]
                   ) -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """:meth:`remap` of several features of this class at once (a layer calls it once per step
        with all of them). Override to do one set of tensor ops instead of one per feature; ``cache``
        is the caller's dict for per-layer constants. Default: one :meth:`remap` per feature."""
        return [v.remap(i, l) for v, i, l in zip(variants, ids, lengths)]

    def hash_keys(self) -> Optional[Tuple[torch.Tensor, int]]:
        """``(seed keys (k,), buckets)`` when :meth:`remap` is ``remap_rows(bucket_matrix(ids, keys,
        buckets), lengths)``: then the layer hashes all such features in one pass. ``None`` otherwise."""
        return None

    def remap_rows(self, rows: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """The ``(values, lengths)`` pairs from hashed rows ``(n, k)`` (features with :meth:`hash_keys`)."""
        raise NotImplementedError(f"{type(self).__name__} does not remap from hashed rows")

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """Default: the single virtual feature's pooled output is the embedding."""
        return pooled[0]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        """Unpooled: per-id embeddings ``(n, output_dim)`` from each virtual feature's looked-up rows
        (``(n_v, table dim)``, in the order :meth:`remap` produced them) and the raw ids ``(n,)``."""
        return rows[0]

    def column_ops(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        """The combine as column arithmetic, if it is one (lets the layer fuse all features' combines
        into one pass forward and one backward).

        Args:
            sources: (start column, width) of each virtual feature in the pooled tensor.
            dst: first output column of this feature.
        Returns:
            the ops, or ``None`` when combine has parameters or other arithmetic.
        """
        if not self.identity_combine:
            return None
        start, width = sources[0]
        return [("copy", (start,), dst, width)]

    def column_weights(self, sources: Sequence[Tuple[int, int]]) -> List[torch.Tensor]:
        """The weight of every ``proj`` op of :meth:`column_ops` for the same ``sources``, in op order
        (fetched on every forward, so autograd sees the current parameters)."""
        return []

    @property
    def identity_combine(self) -> bool:
        """True when combine returns its one input unchanged (lets the layer skip a copy)."""
        return type(self).combine is EmbeddingVariant.combine

    def value_counts(self, n_ids: int) -> Optional[List[int]]:
        """How many values each virtual feature receives for ``n_ids`` input ids, if known without
        looking at the ids (lets the layer skip a device sync); ``None`` otherwise."""
        return [n_ids] * len(self.virtual_features())

    def tie_to(self, owner: "EmbeddingVariant") -> None:
        """Share the owner feature's dense parameters (projections, probe weights): a feature with
        ``shared_with`` reads the same tables, so it must combine them the same way."""
        for name, child in owner.named_children():
            setattr(self, name, child)
        for name, p in owner.named_parameters(recurse=False):
            setattr(self, name, p)

    def _table_name(self, suffix: str = "") -> str:
        return self.feature.table_owner + suffix
