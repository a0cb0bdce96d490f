"""EmbeddingLayer (pooled: KeyedJaggedTensor -> KeyedTensor) and SequenceEmbeddingLayer (unpooled:
KeyedJaggedTensor -> per-feature JaggedTensors) from a list of FeatureSpec.

Every trainable table of every variant lives in TorchRec collections (``layer.ebc``, or
``layer.ecs`` by dimension), so DistributedModelParallel shards any mix of variants unchanged;
remap and combine are dense code. One remap path (features with a plan all at once, the others by
their own ``remap``) and one combine (all features' column plans in one pass, else per feature).

TorchRec is imported on first use (:func:`recsys_emb.torch_stack.require_torch_stack`): a layer built on
``meta`` for the table-batched kernel and its :meth:`EmbeddingLayer.embed` over plain tensors need
PyTorch alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from types import ModuleType
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, cast

import torch
from torch import nn

from recsys_emb.embeddings import EmbeddingVariant, VirtualFeature, build_variant
from recsys_emb.embeddings.fused import ColumnProgram, RemapProgram
from recsys_emb.embeddings.plans import ColumnOp
from recsys_emb.errors import InvalidInputError, SpecError, TorchStackError
from recsys_emb.specs import FeatureSpec, TableDef, init_bounds, validate_feature_set
from recsys_emb.tables.table_batched import TableBatchedEmbeddingBags, UnallocatedTables
from recsys_emb.torch_stack import require_torch_stack

if TYPE_CHECKING:
    from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

__all__ = ["EmbeddingLayer", "SequenceEmbeddingLayer", "RemapStage", "InvalidInputError", "kjt_from_lists", "split_by_keys",
           "batch_row_counts"]

logger = logging.getLogger(__name__)

_Part = Tuple[str, torch.Tensor, torch.Tensor, Optional[int]]
"""A remapped virtual feature: (collection key, ids, bag lengths ``(B,)``, id count or None)."""


def _jagged() -> ModuleType:
    """``torchrec.sparse.jagged_tensor``, after the stack check (the install message when it fails)."""
    require_torch_stack()
    from torchrec.sparse import jagged_tensor

    return jagged_tensor


def _bag_tables(tables: Sequence[TableDef], features: Mapping[str, Sequence[str]],
                device: Optional[torch.device]) -> nn.Module:
    """A pooled layer's tables: a TorchRec EmbeddingBagCollection; on ``meta`` without TorchRec, their
    definitions only (:class:`~recsys_emb.tables.UnallocatedTables`, for the table-batched kernel)."""
    try:
        require_torch_stack()
    except TorchStackError:
        if device is not None and torch.device(device).type == "meta":
            return UnallocatedTables(tables)
        raise
    from recsys_emb.tables.collections import bag_collection

    return bag_collection(tables, features, device)


class _LayerBase(nn.Module):
    """What pooled and sequence layers share: specs, variants, tables, input checks and remap."""

    _poolings: Tuple[str, ...] = ()

    def __init__(self, features: Sequence[FeatureSpec], validate_ids: bool = True) -> None:
        super().__init__()
        features = list(features)
        if not features:
            raise SpecError(f"{type(self).__name__} needs at least one FeatureSpec")
        validate_feature_set(features)
        for f in features:
            if f.pooling not in self._poolings:
                other = "SequenceEmbeddingLayer" if f.pooling == "none" else "EmbeddingLayer"
                raise SpecError(f"feature {f.name!r}: pooling={f.pooling!r} is not served by {type(self).__name__} "
                                f"(it takes pooling in {self._poolings}); put it in an {other}")
        self.features: List[FeatureSpec] = features
        self.validate_ids = validate_ids
        self.feature_names: List[str] = [f.name for f in features]
        self.output_dims: List[int] = [f.output_dim for f in features]
        self.variants = nn.ModuleDict({f.name: build_variant(f, validate_ids=validate_ids) for f in features})
        for f in features:
            if f.shared_with is not None:
                _share_dense_parameters(self.variant(f.name), self.variant(f.shared_with))
        self._virtual: List[List[VirtualFeature]] = [self.variant(f.name).virtual_features() for f in features]
        tables: "OrderedDict[str, TableDef]" = OrderedDict()
        for f in features:
            if f.shared_with is None:
                for t in self.variant(f.name).tables():
                    tables.setdefault(t.name, t)
        bounds = init_bounds(features)  # a shared (unified) table starts as the per-field tables it replaces
        self.table_defs: List[TableDef] = [
            t if bounds[t.name] == t.bound else dataclasses.replace(t, init_bound=bounds[t.name])
            for t in tables.values()]
        self.virtual_tables: Dict[str, str] = {vf.name: vf.table for vfs in self._virtual for vf in vfs}
        """``{virtual feature (collection key): table name}``."""
        self.table_features: Dict[str, List[str]] = {t: [] for t in tables}
        """``{table name: [virtual features that read it]}``, in feature order."""
        for vf, table in self.virtual_tables.items():
            self.table_features[table].append(vf)
        # A variant's plan runs in the shared program only when the variant does not define its own
        # remap (a subclass overriding remap keeps it, whatever plan it inherits).
        self.remap_program = RemapProgram([
            self.variant(n).remap_plan() if type(self.variant(n)).remap is EmbeddingVariant.remap else None
            for n in self.feature_names])

    def variant(self, name: str) -> EmbeddingVariant:
        """The variant module that serves feature ``name`` (``self.variants[name]``, typed for callers).

        Example:
            >>> from recsys_emb.specs import Full
            >>> layer = EmbeddingLayer([FeatureSpec("a", Full(8), cardinality=10)])
            >>> [vf.table for vf in layer.variant("a").virtual_features()]
            ['a']
        """
        return cast(EmbeddingVariant, self.variants[name])

    @property
    def output_dim(self) -> int:
        """Total output columns ``D``."""
        return sum(self.output_dims)

    @property
    def embedding_dims(self) -> Dict[str, int]:
        """Output columns per feature, known before any forward."""
        return dict(zip(self.feature_names, self.output_dims))

    def collections(self) -> List[nn.Module]:  # pragma: no cover - subclasses override
        raise NotImplementedError

    # ------------------------------------------------------------------ input checks and split
    def _split(self, features: "KeyedJaggedTensor") -> Tuple[List[torch.Tensor], List[torch.Tensor], int]:
        if not isinstance(features, _jagged().KeyedJaggedTensor):
            raise InvalidInputError(f"{type(self).__name__} expects a torchrec KeyedJaggedTensor, "
                                    f"got {type(features).__name__}")
        keys = features.keys()
        values = features.values()
        if values.dtype != torch.int64:
            raise InvalidInputError(
                f"KeyedJaggedTensor values for features {keys} have dtype {values.dtype}; ids must be int64 "
                f"(torch.long). Convert with values.long() -- and never pass float ids, which lose precision "
                f"above 2**24."
            )
        if features.weights_or_none() is not None:
            raise InvalidInputError("weighted KeyedJaggedTensors (per-id weights) are not supported")
        if features.variable_stride_per_key():
            raise InvalidInputError("variable-batch (VBE) KeyedJaggedTensors are not supported")
        known = set(self.feature_names)
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise InvalidInputError(
                f"KeyedJaggedTensor has key(s) {unknown} that the layer does not know; known features: "
                f"{self.feature_names}. Drop those keys or add FeatureSpecs for them."
            )
        missing = [k for k in self.feature_names if k not in set(keys)]
        if missing:
            raise InvalidInputError(
                f"KeyedJaggedTensor is missing feature(s) {missing}; got keys {keys}. Every feature of the "
                f"layer needs a key (use zero lengths for a feature absent from a batch)."
            )
        if len(keys) != len(set(keys)):
            raise InvalidInputError(f"KeyedJaggedTensor has duplicate keys: {keys}")
        batch = features.stride()
        lengths = features.lengths()
        if lengths.numel() != len(keys) * batch:
            raise InvalidInputError(f"KeyedJaggedTensor has {lengths.numel()} lengths; {len(keys)} keys x batch size "
                                    f"{batch} need {len(keys) * batch}")
        per_key_lengths = lengths.view(len(keys), batch)
        _check_lengths(keys, per_key_lengths, features.length_per_key(), values.numel())
        per_key_values = values.split(features.length_per_key())
        if list(keys) == self.feature_names:
            return list(per_key_values), list(per_key_lengths.unbind(0)), batch
        index = {k: i for i, k in enumerate(keys)}
        order = [index[n] for n in self.feature_names]
        return [per_key_values[i] for i in order], [per_key_lengths[i] for i in order], batch

    def _split_tensors(self, values: Sequence[torch.Tensor], lengths: Sequence[torch.Tensor]
                       ) -> Tuple[List[torch.Tensor], List[torch.Tensor], int]:
        """The checks of :meth:`_split` on plain tensors: one ``values`` (int64 ids) and one ``lengths``
        ``(B,)`` per feature, in spec order."""
        values, lengths = list(values), list(lengths)
        n = len(self.feature_names)
        if len(values) != n or len(lengths) != n:
            raise InvalidInputError(f"{type(self).__name__} takes one values and one lengths tensor per feature "
                                    f"({n}: {self.feature_names}, in this order); got {len(values)} values and "
                                    f"{len(lengths)} lengths")
        for name, v, l in zip(self.feature_names, values, lengths):
            if not isinstance(v, torch.Tensor) or not isinstance(l, torch.Tensor) or v.dim() != 1 or l.dim() != 1:
                raise InvalidInputError(f"feature {name!r}: values and lengths must be 1-D tensors")
            if v.dtype != torch.int64:
                raise InvalidInputError(f"feature {name!r}: ids have dtype {v.dtype}; ids must be int64 (torch.long)")
        batch = lengths[0].numel()
        sizes = {name: l.numel() for name, l in zip(self.feature_names, lengths)}
        if len(set(sizes.values())) != 1:
            raise InvalidInputError(f"every feature needs the same number of bags; got {sizes}")
        if batch:
            stacked = torch.stack([l.long() for l in lengths])  # (F, B)
            sums, low = torch.stack([stacked.sum(1), stacked.min(1).values]).tolist()  # one device sync
            for name, v, total, least in zip(self.feature_names, values, sums, low):
                if least < 0:
                    raise InvalidInputError(f"feature {name!r}: negative bag lengths")
                if total != v.numel():
                    raise InvalidInputError(f"feature {name!r}: its bag lengths add up to {total} ids but its values "
                                            f"hold {v.numel()}; lengths and values do not match")
        elif any(v.numel() for v in values):
            raise InvalidInputError("a batch of 0 bags holds ids; lengths and values do not match")
        return values, lengths, batch

    def _remap_parts(self, features: "KeyedJaggedTensor"
                     ) -> Tuple[List[_Part], List[torch.Tensor], List[torch.Tensor], int]:
        """Per virtual feature (key, values, lengths, value count or None), per feature ids and lengths."""
        ids, lengths, batch = self._split(features)
        return self._remap_lists(ids, lengths), ids, lengths, batch

    def _remap_lists(self, ids: List[torch.Tensor], lengths: List[torch.Tensor]) -> List[_Part]:
        """Every feature's ids and bag lengths (spec order) -> the virtual features' parts."""
        planned = self.remap_program(ids, lengths)
        parts = []
        for i, (name, vfs) in enumerate(zip(self.feature_names, self._virtual)):
            pairs = planned.get(i)
            if pairs is None:  # a variant without a plan, remapped by its own code
                pairs = [(v, l, None) for v, l in self.variant(name).remap(ids[i], lengths[i])]
            for vf, (v, l, n) in zip(vfs, pairs):
                parts.append((vf.name, v, l, n))
        return parts

    @staticmethod
    def _kjt(parts: Sequence[_Part], batch: int) -> "KeyedJaggedTensor":
        counts = [p[3] for p in parts]
        return _jagged().KeyedJaggedTensor(
            keys=[p[0] for p in parts],
            values=torch.cat([p[1] for p in parts]),
            lengths=torch.cat([p[2] for p in parts]),
            stride=batch,
            length_per_key=None if any(c is None for c in counts) else counts,
        )


def _check_lengths(keys: Sequence[str], lengths: torch.Tensor, length_per_key: Sequence[int], n_values: int) -> None:
    """Bag lengths that do not add up to the values would read other features' ids (or fail deep inside
    a split): name the feature. ``lengths`` is ``(keys, B)``."""
    sums = lengths.sum(1).tolist() if lengths.numel() else [0] * len(keys)
    if sums == list(length_per_key) and sum(sums) == n_values and not (lengths.numel() and bool((lengths < 0).any())):
        return
    start = 0
    for k, total, declared, row in zip(keys, sums, length_per_key, lengths):
        if row.numel() and bool((row < 0).any()):
            raise InvalidInputError(f"feature {k!r}: negative bag lengths {row[row < 0][:5].tolist()}")
        if total != declared:
            raise InvalidInputError(f"feature {k!r}: its bag lengths add up to {total} ids, but the KeyedJaggedTensor "
                                    f"declares {declared} (length_per_key); rebuild it from consistent lengths")
        if start + total > n_values:
            raise InvalidInputError(f"feature {k!r}: its bag lengths need ids {start}..{start + total - 1} but the "
                                    f"KeyedJaggedTensor holds {n_values} values; lengths and values do not match")
        start += total
    raise InvalidInputError(f"KeyedJaggedTensor holds {n_values} values but its bag lengths add up to {start}; the "
                            f"last {n_values - start} values belong to no bag (after feature {keys[-1]!r})")


def _share_dense_parameters(sharer: nn.Module, owner: nn.Module) -> None:
    """A feature with ``shared_with`` reads its owner's tables, so it combines them with the owner's
    dense parameters (projections, probe weights) too."""
    for name, child in owner.named_children():
        setattr(sharer, name, child)
    for name, p in owner.named_parameters(recurse=False):
        setattr(sharer, name, p)


class RemapStage(nn.Module):
    """A pooled layer's remap as a module of its own: ``features`` -> (the collection's input KJT, each
    feature's bag lengths), what :meth:`EmbeddingLayer.remap` returns.

    It holds no parameter (the layer's variants stay the layer's children), so TorchRec's sparse-dist
    train pipeline may run it on the next batch before the sharded collection's input all-to-all, and
    the layer's forward then reads that result (``training/pipeline.py``).

    Example (QR: id ``x`` reads row ``x // 3`` of ``a@q`` and ``x % 3`` of ``a@r``):
        >>> from recsys_emb.specs import FeatureSpec, QuotientRemainder
        >>> layer = EmbeddingLayer([FeatureSpec("a", QuotientRemainder(dim=4, buckets=4), cardinality=10)])
        >>> kjt, lengths = layer.remap_stage(kjt_from_lists({"a": [[7], [3, 9]]}))
        >>> kjt.keys(), kjt.values().tolist(), lengths[0].tolist()
        (['a@q', 'a@r'], [2, 1, 3, 1, 0, 0], [1, 2])
    """

    def __init__(self, layer: "EmbeddingLayer") -> None:
        super().__init__()
        self._layer = [layer]  # a list: the layer is not a child (no cycle in the module tree)

    def forward(self, features: "KeyedJaggedTensor") -> Tuple["KeyedJaggedTensor", List[torch.Tensor]]:
        return self._layer[0].remap(features)


class EmbeddingLayer(_LayerBase):
    """Pooled embeddings for ``F`` categorical features, each with its own variant.

    Input: a ``KeyedJaggedTensor`` with one key per feature (any key order), int64 values, batch
    size ``B`` and ``L[f][b]`` ids in bag ``b`` of feature ``f``.

    Output: a ``KeyedTensor`` with keys = feature names in spec order, values of shape ``(B, D)``
    where ``D = sum(output_dims)``; feature ``f`` occupies ``output_dims[f]`` columns. Empty bags give
    zero vectors. :meth:`embed` does the same over plain tensors (ids and bag lengths per feature) and
    returns the ``(B, D)`` tensor; with the table-batched kernel it needs no TorchRec.

    Pipeline: ``remap`` (per variant: validate / hash / split ids into virtual features; features with a
    remap plan all at once) -> ``self.ebc`` (a TorchRec EmbeddingBagCollection, sum pooling) ->
    ``combine`` (per variant, or all features' column plans in one pass) -> mean pooling where asked.

    The tables are a TorchRec collection, which DistributedModelParallel shards
    (:func:`recsys_emb.sharding.shard_model`); :class:`recsys_emb.tables.TableBatched` swaps in the
    single-device table-batched kernel from outside, the same way. Where TorchRec is not installed, a
    layer built on ``meta`` holds its tables' definitions only, for ``TableBatched`` to allocate; on any
    other device it raises :class:`~recsys_emb.errors.TorchStackError` with the install commands.

    Args:
        features: the feature specs (names unique; ``shared_with`` resolved inside this list).
        device: where to allocate the tables; ``torch.device("meta")`` to leave allocation to
            DistributedModelParallel (or to :class:`~recsys_emb.tables.TableBatched`).
        validate_ids: check vocabulary bounds of full / quotient-remainder / mixed ids on every forward
            (one comparison for all such features; an id outside ``[0, cardinality)`` raises
            :class:`~recsys_emb.errors.InvalidInputError` naming the feature and the ids). Turn off
            only on hot paths with trusted data: nothing then checks ids before the lookup, where an
            unsharded layer's kernel raises a ``RuntimeError`` that names no feature, a sharded one
            clamps to row 0 (docs/sharding.md), and a quotient-remainder id just past the vocabulary
            reads valid rows without any error.
        l2: weight of the L2 penalty on the table rows a training batch reads (:meth:`regularization`);
            0 = off.

    Example:
        >>> from recsys_emb.specs import FeatureSpec, Full, Hashed
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(dim=4), cardinality=10),
        ...                         FeatureSpec("b", Hashed(dim=8, buckets=16))])
        >>> kjt = kjt_from_lists({"a": [[1], [2, 3]], "b": [[-7], []]})
        >>> layer(kjt).values().shape
        torch.Size([2, 12])
    """

    _poolings = ("sum", "mean")

    def __init__(self, features: Sequence[FeatureSpec], device: Optional[torch.device] = None,
                 validate_ids: bool = True, l2: float = 0.0) -> None:
        super().__init__(features, validate_ids)
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0:
            raise SpecError(f"EmbeddingLayer: l2={l2!r} must be a number >= 0 (0 = off)")
        self.l2 = float(l2)
        self._last_reg: Optional[torch.Tensor] = None
        if not self.table_defs:
            raise SpecError(f"EmbeddingLayer: features {self.feature_names} read no TorchRec table (tensor-train "
                            f"cores only); give at least one feature a table variant (e.g. the small fields full)")
        self._own = [i for i, n in enumerate(self.feature_names) if self.variant(n).owns_rows]
        """Features whose variant pools its own rows (:attr:`EmbeddingVariant.owns_rows`)."""
        self.ebc: nn.Module = _bag_tables(self.table_defs, self.table_features, device)
        self.remap_stage = RemapStage(self)
        self._mean = [f.pooling == "mean" for f in self.features]
        # per pooled key layout: the fused combine (program and the weights its projections take), or
        # None when some combine needs autograd
        self._fused: Dict[Tuple[str, ...], Optional[Tuple[ColumnProgram, List[Tuple[str, Tuple[str, ...]]]]]] = {}

    def collections(self) -> List[nn.Module]:
        """The TorchRec collections holding this layer's tables (what DistributedModelParallel shards)."""
        return [self.ebc]

    # ------------------------------------------------------------------ forward
    def remap(self, features: "KeyedJaggedTensor") -> Tuple["KeyedJaggedTensor", List[torch.Tensor]]:
        """The collection's input (virtual features) and each feature's bag lengths ``(B,)``."""
        parts, _, lengths, batch = self._remap_parts(features)
        return self._kjt(parts, batch), lengths

    def _fused_combine(self, keys: Tuple[str, ...], dims: Sequence[int]
                       ) -> Optional[Tuple[ColumnProgram, List[Tuple[str, Tuple[str, ...]]]]]:
        """The one-pass combine for this pooled layout (keys and their widths): every feature's column
        plan, or None when a feature has no plan or is mean-pooled."""
        if keys in self._fused:
            return self._fused[keys]
        starts, pos = {}, 0
        for k, d in zip(keys, dims):
            starts[k] = (pos, d)
            pos += d
        ops: List[ColumnOp] = []
        weights: List[Tuple[str, Tuple[str, ...]]] = []
        dst, fused = 0, None
        for name, vfs, mean, dim in zip(self.feature_names, self._virtual, self._mean, self.output_dims):
            plan = None if mean else self.variant(name).combine_plan([starts[vf.name] for vf in vfs], dst)
            if plan is None:
                break
            for op in plan:
                ops.append(op)
                if op.op == "proj":
                    weights.append((name, op.weights))
            dst += dim
        else:
            fused = (ColumnProgram(ops, in_width=pos, out_width=dst), weights)
        self._fused[keys] = fused
        return fused

    def combine(self, pooled: "KeyedTensor", lengths: Sequence[torch.Tensor]) -> "KeyedTensor":
        """Per-feature outputs from the collection's pooled virtual features."""
        values = self._combine(tuple(pooled.keys()), pooled.length_per_key(), pooled.values(), lengths)
        return _jagged().KeyedTensor(keys=self.feature_names, length_per_key=self.output_dims, values=values)

    def _own_pooled(self, ids: Sequence[torch.Tensor], lengths: Sequence[torch.Tensor], batch: int
                    ) -> Dict[int, torch.Tensor]:
        """The pooled outputs of the features whose variants pool their own rows, by feature index."""
        return {i: self.variant(self.feature_names[i]).pooled(ids[i], lengths[i], batch) for i in self._own}

    def _combine(self, keys: Tuple[str, ...], dims: Sequence[int], pooled: torch.Tensor,
                 lengths: Sequence[torch.Tensor], own: Optional[Dict[int, torch.Tensor]] = None) -> torch.Tensor:
        """:meth:`combine` on the pooled ``(B, sum of dims)`` tensor: ``(B, D)``; ``own``: the pooled outputs
        of features that pool their own rows (:meth:`_own_pooled`)."""
        fused = self._fused_combine(keys, dims)
        if fused is not None:
            program, refs = fused
            weights = [self._weight(name, names) for name, names in refs]
            values = program(pooled, weights)
        else:
            # One split (its backward is one concatenation), not a slice per key (a full-width zero
            # gradient per slice).
            parts_all = pooled.split(list(dims), dim=1)
            index = {k: i for i, k in enumerate(keys)}
            outs: List[torch.Tensor] = []
            for i, (name, vfs, mean, f_len) in enumerate(zip(self.feature_names, self._virtual, self._mean, lengths)):
                y = own[i] if own and i in own else self.variant(name).combine([parts_all[index[vf.name]] for vf in vfs])
                if mean:
                    y = y / f_len.clamp(min=1).unsqueeze(1).to(y.dtype)
                outs.append(y)
            values = torch.cat(outs, dim=1)
        return values

    def _weight(self, feature: str, names: Tuple[str, ...]) -> torch.Tensor:
        """The projection weight a column plan names: the variant's parameters, side by side."""
        variant = self.variant(feature)
        ws: List[torch.Tensor] = [variant.get_parameter(n) for n in names]
        return ws[0] if len(ws) == 1 else torch.cat(ws, dim=1)

    def forward(self, features: "KeyedJaggedTensor") -> "KeyedTensor":
        """``features`` (KJT, keys = feature names) -> ``KeyedTensor`` of shape ``(B, D)``; a batch of size
        0 gives ``(0, D)`` without a lookup."""
        if features.stride() == 0:
            self._split(features)  # the same input checks
            return _jagged().KeyedTensor(keys=self.feature_names, length_per_key=self.output_dims,
                                         values=torch.zeros(0, self.output_dim, device=features.values().device))
        kjt, lengths = self.remap_stage(features)
        pooled = self.ebc(kjt)
        if self.l2 > 0 and self.training:
            self._last_reg = self._row_l2(kjt.keys(), kjt.values(), kjt.lengths().view(len(kjt.keys()), kjt.stride()),
                                          pooled.keys(), pooled.length_per_key(), pooled.values())
        else:
            self._last_reg = None
        if self._own:  # their rows are not in the collection: from the ids (checked by the remap above)
            ids, _, batch = self._split(features)
            values = self._combine(tuple(pooled.keys()), pooled.length_per_key(), pooled.values(), lengths,
                                   self._own_pooled(ids, lengths, batch))
            return _jagged().KeyedTensor(keys=self.feature_names, length_per_key=self.output_dims, values=values)
        return self.combine(pooled, lengths)

    def embed(self, values: Sequence[torch.Tensor], lengths: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` over plain tensors: ``values[f]`` the int64 ids of feature ``f`` (spec order, 1-D,
        bag after bag), ``lengths[f]`` its ``(B,)`` bag sizes -> the ``(B, D)`` embeddings (the values of
        :meth:`forward`'s ``KeyedTensor``). With the table-batched kernel (:class:`~recsys_emb.tables.TableBatched`)
        no TorchRec type is built on the way; with a TorchRec collection the lookup takes a
        ``KeyedJaggedTensor`` as in :meth:`forward`.

        Example:
            >>> from recsys_emb.specs import FeatureSpec, Full
            >>> from recsys_emb.tables import EmbeddingOptimizer, TableBatched
            >>> layer = EmbeddingLayer([FeatureSpec("a", Full(dim=4), cardinality=10)], device=torch.device("meta"))
            >>> layer = TableBatched(layer, EmbeddingOptimizer("sgd"), init_seed=0).module
            >>> layer.embed([torch.tensor([1, 2, 3])], [torch.tensor([1, 2])]).shape
            torch.Size([2, 4])
        """
        ids, bag_lengths, batch = self._split_tensors(values, lengths)
        if batch == 0:
            return torch.zeros(0, self.output_dim, device=ids[0].device)
        parts = self._remap_lists(ids, bag_lengths)
        if isinstance(self.ebc, TableBatchedEmbeddingBags):
            keys = [p[0] for p in parts]
            stacked = torch.stack([p[2] for p in parts])  # (V, B)
            out_keys, pooled = self.ebc.lookup(keys, [p[1] for p in parts], stacked)
            dims = self.ebc.output_dims(out_keys)
            if self.l2 > 0 and self.training:
                self._last_reg = self._row_l2(keys, torch.cat([p[1] for p in parts]), stacked, out_keys, dims, pooled)
            else:
                self._last_reg = None
            return self._combine(tuple(out_keys), dims, pooled, bag_lengths, self._own_pooled(ids, bag_lengths, batch))
        kjt = self._kjt(parts, batch)
        kt = self.ebc(kjt)
        if self.l2 > 0 and self.training:
            self._last_reg = self._row_l2(kjt.keys(), kjt.values(), kjt.lengths().view(len(parts), batch),
                                          kt.keys(), kt.length_per_key(), kt.values())
        else:
            self._last_reg = None
        return self._combine(tuple(kt.keys()), kt.length_per_key(), kt.values(), bag_lengths,
                             self._own_pooled(ids, bag_lengths, batch))

    def regularization(self) -> torch.Tensor:
        """The L2 penalty of the last training forward on the rows it read (a scalar; 0 when ``l2`` is 0
        or the layer is in eval mode): ``l2 * sum over virtual features v and bags b of w_vb * ||p_vb||^2``
        where ``p_vb`` is bag ``b``'s pooled lookup of ``v``. A bag of one row has ``w_vb = 1 / n``, ``n`` the
        number of the batch's bags of ``v`` that read the same row, so every row the batch reads is
        penalised once, whatever its frequency (DIN's mini-batch aware form); a bag of ``k > 1`` rows
        has ``w_vb = 1 / k^2``, the squared norm of its mean row. Add it to the loss: its gradient
        reaches exactly the rows read, through the lookup's backward, so it works with the fused (and
        sharded) optimizers. Under a process group of ``W`` ranks, ``n`` counts the bags of every rank's
        batch and each rank's penalty is ``W`` times as large: the ranks' gradients are averaged, so ``W``
        ranks make the update one process makes on the global batch."""
        if self._last_reg is None:
            return torch.zeros(())
        return self._last_reg

    def _row_l2(self, keys: Sequence[str], values: torch.Tensor, lengths: torch.Tensor, pooled_keys: Sequence[str],
                pooled_dims: Sequence[int], pooled: torch.Tensor) -> torch.Tensor:
        """The penalty of :meth:`regularization` from the lookup's input (virtual feature ``keys``, their
        concatenated ids, ``(V, B)`` lengths) and output (``(B, sum of pooled_dims)``)."""
        batch = lengths.shape[1]
        lengths = lengths.long()  # (V, B)
        first = torch.cumsum(lengths.flatten(), 0) - lengths.flatten()  # first value of every bag
        single = lengths.flatten() == 1
        vf = torch.arange(len(keys), device=values.device).repeat_interleave(batch)
        # rows of one-row bags, made distinct per virtual feature: how many bags of v read each row
        row = values.index_select(0, first.clamp(max=max(values.numel() - 1, 0))) if values.numel() else first
        key = torch.where(single, vf * (1 << 40) + row, -1 - torch.arange(single.numel(), device=values.device))
        count, world = batch_row_counts(key)
        k = lengths.flatten().clamp(min=1).to(torch.float32)
        weight = torch.where(single, 1.0 / count.to(torch.float32), 1.0 / (k * k))
        # W ranks: each row's gradient is averaged over the ranks (TorchRec's all-to-all, DDP), so each
        # rank's penalty counts W times, with the bags reading a row counted over every rank's batch: the
        # update of one process on the global batch
        weight = torch.where(lengths.flatten() == 0, torch.zeros_like(weight), weight * world).view(len(keys), batch)
        index = {name: i for i, name in enumerate(pooled_keys)}
        cols = pooled.split(list(pooled_dims), dim=1)
        total = pooled.new_zeros(())
        for v, name in enumerate(keys):
            total = total + (cols[index[name]].pow(2).sum(1) * weight[v].to(cols[index[name]].dtype)).sum()
        return self.l2 * total


def batch_row_counts(key: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """``(count, W)``: for each element of ``key (m,)`` (int64; ``>= 0`` names a row, a negative one stands
    for itself), how many elements of the training batch equal it, and the number of ranks ``W`` training
    together. Under a process group of ``W > 1`` ranks the batch is every rank's ``key``, gathered with one
    ``all_gather`` over the default group, which every rank must call in the same step; a negative element
    counts 1. The ranks average their row gradients, so a penalty weighted ``1 / count`` per row read is
    multiplied by ``W`` to penalise each row of the global batch once (the mini-batch aware L2 of
    :meth:`EmbeddingLayer.regularization` and of DIN).

    Example (one process):
        >>> batch_row_counts(torch.tensor([3, 5, 3, -1, -2]))
        (tensor([2, 1, 2, 1, 1]), 1)
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        return torch.where(key >= 0, counts.index_select(0, inverse), torch.ones_like(key)), 1
    return _global_counts(key), dist.get_world_size()


def _global_counts(key: torch.Tensor) -> torch.Tensor:
    """:func:`batch_row_counts` over every rank's ``key``."""
    dist = torch.distributed
    world = dist.get_world_size()
    size = torch.tensor([key.numel()], dtype=torch.int64, device=key.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(x) for x in sizes))
    padded = torch.full((longest,), -1, dtype=torch.int64, device=key.device)
    padded[: key.numel()] = key
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    every = torch.cat(gathered)
    rows, counts = torch.unique(every[every >= 0], return_counts=True)
    if rows.numel() == 0:
        return torch.ones_like(key)
    at = torch.searchsorted(rows, key.clamp(min=0)).clamp(max=rows.numel() - 1)
    return torch.where(key >= 0, counts.index_select(0, at), torch.ones_like(key))


class SequenceEmbeddingLayer(_LayerBase):
    """Unpooled (sequence) embeddings for features with ``pooling="none"``, any variant.

    Input: a ``KeyedJaggedTensor`` as for :class:`EmbeddingLayer`. Output: ``{feature name:
    JaggedTensor}`` in spec order; feature ``f``'s values have shape ``(sum_b L[f][b], output_dims[f])``
    and its lengths are the input's. Each id's row equals what the pooled layer would sum for it.

    TorchRec's EmbeddingCollection needs one dimension for all its tables, so tables are grouped by
    dimension into several collections (``self.ecs``, keyed ``"d{dim}"``); mixed dimensions stay
    mixed. Features may share tables (``shared_with``): a candidate item and the history of items.

    Example:
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> layer = SequenceEmbeddingLayer([
        ...     FeatureSpec("item", Full(dim=8), cardinality=100, pooling="none"),
        ...     FeatureSpec("history", Full(dim=8), cardinality=100, pooling="none", shared_with="item")])
        >>> out = layer(kjt_from_lists({"item": [[5], [7]], "history": [[1, 2, 3], []]}))
        >>> out["history"].values().shape, out["history"].lengths().tolist()
        (torch.Size([3, 8]), [3, 0])
    """

    _poolings = ("none",)

    def __init__(self, features: Sequence[FeatureSpec], device: Optional[torch.device] = None,
                 validate_ids: bool = True) -> None:
        super().__init__(features, validate_ids)
        from recsys_emb.tables.collections import sequence_collections  # TorchRec: the stack check first

        self.ecs = nn.ModuleDict(sequence_collections(self.table_defs, self.table_features, device))
        dims = {t.name: t.dim for t in self.table_defs}
        self._dim_keys = {vf: f"d{dims[t]}" for vf, t in self.virtual_tables.items()}

    def collections(self) -> List[nn.Module]:
        """The TorchRec collections holding this layer's tables, one per table dimension."""
        return list(self.ecs.values())

    def forward(self, features: "KeyedJaggedTensor") -> Dict[str, "JaggedTensor"]:
        """``features`` (KJT) -> ``{feature: JaggedTensor of (n_f, output_dim_f) rows}``; a batch of size 0
        gives empty JaggedTensors without a lookup."""
        if features.stride() == 0:
            _, lengths, _ = self._split(features)
            device = features.values().device
            return {name: _jagged().JaggedTensor(values=torch.zeros(0, dim, device=device), lengths=f_len)
                    for name, dim, f_len in zip(self.feature_names, self.output_dims, lengths)}
        parts, ids, lengths, batch = self._remap_parts(features)
        groups: "OrderedDict[str, list]" = OrderedDict()
        for p in parts:
            groups.setdefault(self._dim_keys[p[0]], []).append(p)
        rows: Dict[str, torch.Tensor] = {}
        for key, group in groups.items():
            for vf, jt in self.ecs[key](self._kjt(group, batch)).items():
                rows[vf] = jt.values()
        out: Dict[str, "JaggedTensor"] = {}
        for name, vfs, f_ids, f_len in zip(self.feature_names, self._virtual, ids, lengths):
            values = self.variant(name).combine_sequence([rows[vf.name] for vf in vfs], f_ids)
            out[name] = _jagged().JaggedTensor(values=values, lengths=f_len)
        return out


def kjt_from_lists(bags: Dict[str, Sequence[Sequence[int]]], device: Optional[torch.device] = None
                   ) -> "KeyedJaggedTensor":
    """A KeyedJaggedTensor from ``{feature: [ids of bag 0, ids of bag 1, ...]}`` (tests, examples).

    Example:
        >>> kjt_from_lists({"a": [[1], [2, 3]]}).lengths().tolist()
        [1, 2]
    """
    keys = list(bags)
    sizes = {len(v) for v in bags.values()}
    if len(sizes) != 1:
        counts = {k: len(v) for k, v in bags.items()}
        raise ValueError(f"every feature needs the same number of bags; got bag counts {counts}")
    values = [i for k in keys for bag in bags[k] for i in bag]
    lengths = [len(bag) for k in keys for bag in bags[k]]
    return _jagged().KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.tensor(values, dtype=torch.int64, device=device),
        lengths=torch.tensor(lengths, dtype=torch.int32, device=device),
    )


def split_by_keys(features: "KeyedJaggedTensor", groups: Sequence[Sequence[str]]) -> List["KeyedJaggedTensor"]:
    """Split a KeyedJaggedTensor into one KJT per group of keys (e.g. pooled vs sequence features).

    Every key of ``features`` must belong to exactly one group, and every group key must be present.

    Example:
        >>> a, b = split_by_keys(kjt_from_lists({"x": [[1]], "h": [[2, 3]]}), [["x"], ["h"]])
        >>> a.keys(), b.values().tolist()
        (['x'], [2, 3])
    """
    keys = features.keys()
    index = {k: i for i, k in enumerate(keys)}
    wanted = [k for g in groups for k in g]
    missing = [k for k in wanted if k not in index]
    if missing:
        raise InvalidInputError(f"KeyedJaggedTensor is missing feature(s) {missing}; got keys {keys}")
    extra = [k for k in keys if k not in set(wanted)]
    if extra:
        raise InvalidInputError(f"KeyedJaggedTensor has key(s) {extra} that the model does not know; known: {wanted}")
    order = [index[k] for k in wanted]
    permuted = features if order == list(range(len(keys))) else features.permute(order)
    return permuted.split([len(g) for g in groups])
