"""The interface every embedding variant implements: remap ids -> TorchRec tables -> combine.

A variant never owns trainable tables itself: it declares them (:class:`~recsys_emb.specs.TableDef`),
and the layer (:class:`~recsys_emb.layer.EmbeddingLayer`) puts all of them into one TorchRec collection,
so that DistributedModelParallel shards every variant without variant-specific code.

A variant implements five methods; two optional ones describe its fast path as data:

* :meth:`~EmbeddingVariant.tables` (default: the spec's tables) and
  :meth:`~EmbeddingVariant.virtual_features`: what it looks up;
* :meth:`~EmbeddingVariant.remap`, or instead :meth:`~EmbeddingVariant.remap_plan`;
* :meth:`~EmbeddingVariant.combine` (default: identity) and, optionally,
  :meth:`~EmbeddingVariant.combine_plan`;
* :meth:`~EmbeddingVariant.combine_sequence` (default: identity) for unpooled lookups.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.embeddings.fused import run_plan
from recsys_emb.embeddings.plans import ColumnOp, RemapPlan
from recsys_emb.specs import FeatureSpec, TableDef

__all__ = ["TableDef", "VirtualFeature", "EmbeddingVariant"]


@dataclass(frozen=True)
class VirtualFeature:
    """A key of the KeyedJaggedTensor that the TorchRec collection sees, and the table it reads."""

    name: str
    table: str


class EmbeddingVariant(nn.Module, abc.ABC):
    """One feature's embedding variant: the dense ``remap`` before the tables and ``combine`` after.

    Shapes, for a batch of ``B`` bags holding ``n`` ids in total:

    * ``remap(ids: (n,), lengths: (B,))`` returns one ``(values, lengths)`` pair per entry of
      :meth:`virtual_features`, in that order;
    * ``combine(pooled)`` takes the sum-pooled ``(B, table dim)`` output of each virtual feature and
      returns the feature's ``(B, output_dim)`` embedding (before mean pooling, which the layer applies);
    * ``combine_sequence(rows, ids)`` takes each virtual feature's looked-up rows ``(n_v, table dim)``
      (in the order ``remap`` produced them) and the raw ids ``(n,)``, and returns ``(n, output_dim)``.

    Args:
        feature: the feature's spec.
        validate_ids: check ids against the feature's vocabulary (variants with one).
    """

    owns_rows: bool = False
    """True for a variant whose rows are not TorchRec table rows (tensor-train cores): it has no virtual
    features, checks ids in :meth:`remap` (which returns no pairs), and the layer takes its pooled output
    from :meth:`pooled` and its per-id rows from :meth:`combine_sequence`."""

    def __init__(self, feature: FeatureSpec, validate_ids: bool = True) -> None:
        super().__init__()
        self.feature = feature
        self.validate_ids = validate_ids

    @property
    def output_dim(self) -> int:
        return self.feature.output_dim

    def tables(self) -> List[TableDef]:
        """The physical tables of the feature's table owner (the same list for a sharing feature)."""
        return self.feature.tables()

    @abc.abstractmethod
    def virtual_features(self) -> List[VirtualFeature]:
        """Keys this feature contributes to the collection's input, each with the table it reads."""

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Map raw int64 ids to table rows, one ``(values, lengths)`` pair per virtual feature.

        Default: run :meth:`remap_plan`. A variant overrides either this or :meth:`remap_plan`; a
        subclass that overrides ``remap`` is remapped by it (the layer then ignores inherited plans)."""
        plan = self.remap_plan()
        if plan is None:
            raise NotImplementedError(f"{type(self).__name__} implements neither remap() nor remap_plan()")
        return run_plan(plan, ids, lengths)

    def remap_plan(self) -> Optional[RemapPlan]:
        """``remap`` as data (:mod:`recsys_emb.embeddings.plans`), so that the layer remaps all features
        of a kind in one pass; ``None``: no plan, :meth:`remap` runs per feature."""
        return None

    def pooled(self, ids: torch.Tensor, lengths: torch.Tensor, batch: int) -> torch.Tensor:
        """The sum-pooled ``(B, output_dim)`` embedding straight from ``ids (n,)`` and ``lengths (B,)``:
        only variants with :attr:`owns_rows` implement it."""
        raise NotImplementedError(f"{type(self).__name__} reads TorchRec tables; the layer pools its rows")

    def combine(self, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """Default: the single virtual feature's pooled output is the embedding."""
        return pooled[0]

    def combine_sequence(self, rows: Sequence[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        """Default: the single virtual feature's rows are the per-id embeddings."""
        return rows[0]

    def combine_plan(self, sources: Sequence[Tuple[int, int]], dst: int) -> Optional[List[ColumnOp]]:
        """``combine`` as column arithmetic, so that the layer fuses every feature's combine into one
        pass forward and one backward; ``None`` when it is other arithmetic.

        Args:
            sources: ``(start column, width)`` of each virtual feature in the pooled tensor.
            dst: first output column of this feature.
        Default: a copy when :meth:`combine` is the identity, else ``None``.
        """
        if type(self).combine is not EmbeddingVariant.combine:
            return None
        start, width = sources[0]
        return [ColumnOp("copy", (start,), dst, width)]

    def _table_name(self, suffix: str = "") -> str:
        return self.feature.table_owner + suffix
