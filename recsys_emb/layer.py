"""EmbeddingLayer (pooled: KeyedJaggedTensor -> KeyedTensor) and SequenceEmbeddingLayer (unpooled:
KeyedJaggedTensor -> per-feature JaggedTensors) from a list of FeatureSpec.

Every trainable table of every variant lives in TorchRec collections (``layer.ebc``, or
``layer.ecs`` by dimension), so DistributedModelParallel shards any mix of variants unchanged;
remap and combine are dense code.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from recsys_emb.concat import ConcatenatedEmbeddingBags, FusedOptimizer
from recsys_emb.embeddings import EmbeddingVariant, InvalidInputError, build_variant
from recsys_emb.embeddings.base import PerValue
from recsys_emb.embeddings.combine import ColumnProgram
from recsys_emb.hashing import bucket_rows
from recsys_emb.specs import FeatureSpec, TableDef, validate_feature_set

__all__ = ["EmbeddingLayer", "SequenceEmbeddingLayer", "InvalidInputError", "kjt_from_lists", "split_by_keys"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _batches_its_remap(cls: type, attr: str) -> bool:
    """Whether ``cls`` may be remapped through its batched path ``attr`` (``remap_many``,
    ``hash_keys``): only where the class that defines ``remap`` also defines ``attr``, so that a
    subclass with its own ``remap`` keeps it."""
    def owner(name: str) -> type:
        return next(k for k in cls.__mro__ if name in vars(k))

    return owner(attr) is not EmbeddingVariant and owner(attr) is owner("remap")


class _LayerBase(nn.Module):
    """What pooled and sequence layers share: specs, variants, tables, input checks and remap."""

    _poolings: Tuple[str, ...] = ()

    def __init__(self, features: Sequence[FeatureSpec], validate_ids: bool = True) -> None:
        super().__init__()
        features = list(features)
        if not features:
            raise ValueError(f"{type(self).__name__} needs at least one FeatureSpec")
        validate_feature_set(features)
        for f in features:
            if f.pooling not in self._poolings:
                other = "SequenceEmbeddingLayer" if f.pooling == "none" else "EmbeddingLayer"
                raise ValueError(f"feature {f.name!r}: pooling={f.pooling!r} is not served by {type(self).__name__} "
                                 f"(it takes pooling in {self._poolings}); put it in an {other}")
        self.features: List[FeatureSpec] = features
        self.validate_ids = validate_ids
        self.feature_names: List[str] = [f.name for f in features]
        self.output_dims: List[int] = [f.output_dim for f in features]
        self.variants = nn.ModuleDict({f.name: build_variant(f, validate_ids=validate_ids) for f in features})
        for f in features:
            if f.shared_with is not None:
                self.variants[f.name].tie_to(self.variants[f.shared_with])
        tables: "OrderedDict[str, Tuple[TableDef, List[str]]]" = OrderedDict()
        for f in features:
            if f.shared_with is None:
                for t in self.variants[f.name].tables():
                    tables.setdefault(t.name, (t, []))
        for f in features:
            for vf in self.variants[f.name].virtual_features():
                tables[vf.table][1].append(vf.name)
        self._tables = tables
        self.table_defs: List[TableDef] = [t for t, _ in tables.values()]
        self._virtual_dims = {vf: t.dim for t, names in tables.values() for vf in names}
        self._hash_cache: Dict[int, tuple] = {}
        self._remap_cache: Dict[object, object] = {}

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
    def _split(self, features: KeyedJaggedTensor) -> Tuple[List[torch.Tensor], List[torch.Tensor], int]:
        if not isinstance(features, KeyedJaggedTensor):
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
        per_key_values = values.split(features.length_per_key())
        per_key_lengths = features.lengths().view(len(keys), batch)
        if list(keys) == self.feature_names:
            return list(per_key_values), list(per_key_lengths.unbind(0)), batch
        index = {k: i for i, k in enumerate(keys)}
        order = [index[n] for n in self.feature_names]
        return [per_key_values[i] for i in order], [per_key_lengths[i] for i in order], batch

    def _remap_parts(self, features: KeyedJaggedTensor
                     ) -> Tuple[List[Tuple[str, torch.Tensor, torch.Tensor, Optional[int]]], List[torch.Tensor],
                                List[torch.Tensor], int]:
        """Per virtual feature (key, values, lengths, value count or None), per feature ids and lengths."""
        ids, lengths, batch = self._split(features)
        remapped = self._hash_all(ids, lengths)
        remapped.update(self._remap_batched(ids, lengths, skip=remapped))
        parts = []
        for i, (name, f_ids, f_len) in enumerate(zip(self.feature_names, ids, lengths)):
            variant: EmbeddingVariant = self.variants[name]  # type: ignore[assignment]
            counts = variant.value_counts(f_ids.numel())
            pairs = remapped[i] if i in remapped else variant.remap(f_ids, f_len)
            for j, (vf, (v, l)) in enumerate(zip(variant.virtual_features(), pairs)):
                parts.append((vf.name, v, l, None if counts is None else counts[j]))
        return parts, ids, lengths, batch

    def _remap_batched(self, ids: Sequence[torch.Tensor], lengths: Sequence[torch.Tensor], skip: Dict[int, object]
                       ) -> Dict[int, List[Tuple[torch.Tensor, torch.Tensor]]]:
        """Remapped pairs of the features whose variant class remaps several features at once
        (:meth:`~recsys_emb.embeddings.base.EmbeddingVariant.remap_many`), keyed by feature position."""
        groups: Dict[type, List[int]] = {}
        for i, name in enumerate(self.feature_names):
            cls = type(self.variants[name])
            if i not in skip and _batches_its_remap(cls, "remap_many"):
                groups.setdefault(cls, []).append(i)
        out: Dict[int, List[Tuple[torch.Tensor, torch.Tensor]]] = {}
        for cls, members in groups.items():
            if len(members) < 2:
                continue
            pairs = cls.remap_many([self.variants[self.feature_names[i]] for i in members],  # type: ignore[attr-defined]
                                   [ids[i] for i in members], [lengths[i] for i in members], self._remap_cache)
            out.update(zip(members, pairs))
        return out

    def _hash_all(self, ids: Sequence[torch.Tensor], lengths: Sequence[torch.Tensor]
                  ) -> Dict[int, List[Tuple[torch.Tensor, torch.Tensor]]]:
        """Remapped pairs of every hashing feature (hashed tables, unified), all features with the same
        number of probes hashed in one pass (:func:`~recsys_emb.hashing.bucket_rows`): one set of
        tensor ops per step instead of one per feature. Keyed by feature position."""
        groups: Dict[int, List[Tuple[int, torch.Tensor, int]]] = {}
        for i, name in enumerate(self.feature_names):
            if not _batches_its_remap(type(self.variants[name]), "hash_keys"):
                continue
            plan = self.variants[name].hash_keys()  # type: ignore[operator]
            if plan is not None:
                groups.setdefault(int(plan[0].numel()), []).append((i, plan[0], plan[1]))
        out: Dict[int, List[Tuple[torch.Tensor, torch.Tensor]]] = {}
        for probes, members in groups.items():
            if len(members) < 2:
                continue
            # the stacked keys are rebuilt when a key tensor is replaced (.to(), loaded salts) or changed
            # in place; the cache holds the tensors themselves, so identity checks cannot be fooled
            sources = tuple(k for _, k, _ in members)
            versions = tuple(k._version for k in sources)
            n_buckets = tuple(b for _, _, b in members)
            cached = self._hash_cache.get(probes)
            if cached is None or cached[1] != versions or cached[2] != n_buckets or \
                    any(a is not b for a, b in zip(cached[0], sources)):
                cached = (sources, versions, n_buckets, PerValue([
                    torch.stack(sources), torch.tensor(n_buckets, dtype=torch.int64, device=sources[0].device)]))
                self._hash_cache[probes] = cached
            member_ids = [ids[i] for i, _, _ in members]
            value_keys, value_buckets = cached[3](member_ids)  # each id's seed keys and bucket count
            rows = bucket_rows(torch.cat(member_ids), value_keys, value_buckets).split([t.numel() for t in member_ids])
            for (i, _, _), r in zip(members, rows):
                out[i] = self.variants[self.feature_names[i]].remap_rows(r, lengths[i])  # type: ignore[operator]
        return out

    @staticmethod
    def _kjt(parts, batch: int) -> KeyedJaggedTensor:
        counts = [p[3] for p in parts]
        return KeyedJaggedTensor(
            keys=[p[0] for p in parts],
            values=torch.cat([p[1] for p in parts]),
            lengths=torch.cat([p[2] for p in parts]),
            stride=batch,
            length_per_key=None if any(c is None for c in counts) else counts,
        )


class EmbeddingLayer(_LayerBase):
    """Pooled embeddings for ``F`` categorical features, each with its own variant.

    Input: a ``KeyedJaggedTensor`` with one key per feature (any key order), int64 values, batch
    size ``B`` and ``L[f][b]`` ids in bag ``b`` of feature ``f``.

    Output: a ``KeyedTensor`` with keys = feature names in spec order, values of shape ``(B, D)``
    where ``D = sum(output_dims)``; feature ``f`` occupies ``output_dims[f]`` columns. Empty bags give
    zero vectors.

    Pipeline: ``remap`` (per variant: validate / hash / split ids into virtual features) ->
    ``self.ebc`` (TorchRec EmbeddingBagCollection, sum pooling) -> ``combine`` (per variant) ->
    mean pooling where asked.

    Args:
        features: the feature specs (names unique; ``shared_with`` resolved inside this list).
        device: where to allocate the tables; ``torch.device("meta")`` to leave allocation to
            DistributedModelParallel.
        validate_ids: check vocabulary bounds of full / quotient-remainder ids on every forward
            (one reduction per feature; turn off only on hot GPU paths with trusted data).
        kernel: ``"torchrec"`` (default): the tables are a TorchRec EmbeddingBagCollection, which
            DistributedModelParallel shards and trains with FBGEMM's fused optimizers.
            ``"concat"``: one device, plain PyTorch (:class:`~recsys_emb.concat.ConcatenatedEmbeddingBags`):
            all tables of a dimension in one weight, one lookup per dimension, ``optimizer`` applied in
            backward -- the GPU path where FBGEMM's GPU kernels are missing. Not shardable.
        optimizer: with ``kernel="concat"``, the fused update (default SGD, lr 0.01); ``None`` leaves
            dense gradients to autograd.

    Example:
        >>> from recsys_emb.specs import FeatureSpec, Full, Hashed
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(dim=4), cardinality=10),
        ...                         FeatureSpec("b", Hashed(dim=8, buckets=16))])
        >>> kjt = kjt_from_lists({"a": [[1], [2, 3]], "b": [[-7], []]})
        >>> layer(kjt).values().shape
        torch.Size([2, 12])
    """

    _poolings = ("sum", "mean")

    def __init__(
        self,
        features: Sequence[FeatureSpec],
        device: Optional[torch.device] = None,
        validate_ids: bool = True,
        kernel: str = "torchrec",
        optimizer: Optional[FusedOptimizer] = FusedOptimizer(),
    ) -> None:
        super().__init__(features, validate_ids)
        if kernel not in ("torchrec", "concat"):
            raise ValueError(f"kernel={kernel!r} must be 'torchrec' (TorchRec collection, shardable) or 'concat' "
                             f"(plain PyTorch, one device)")
        self.kernel = kernel
        if kernel == "concat":
            self.ebc: nn.Module = ConcatenatedEmbeddingBags(
                self.table_defs, {vf: t.name for t, names in self._tables.values() for vf in names},
                optimizer=optimizer, device=device)
        else:
            self.ebc = EmbeddingBagCollection(
                tables=[
                    EmbeddingBagConfig(
                        name=t.name,
                        embedding_dim=t.dim,
                        num_embeddings=t.rows,
                        feature_names=names,
                        pooling=PoolingType.SUM,
                    )
                    for t, names in self._tables.values()
                ],
                device=device,
            )
        self._mean = [f.pooling == "mean" for f in self.features]
        self._n_virtual = [len(self.variants[f.name].virtual_features()) for f in self.features]
        # The output equals the collection's output when no feature changes its pooled columns.
        self._passthrough = all(
            n == 1 and self.variants[f.name].identity_combine and not mean
            for f, n, mean in zip(self.features, self._n_virtual, self._mean)
        )
        self._column_cache: Dict[Tuple[str, ...], Dict[str, int]] = {}
        # per pooled layout: the fused program (or None) and, per feature with projections, its sources
        self._program_cache: Dict[Tuple[str, ...], Tuple[Optional[ColumnProgram],
                                                         List[Tuple[str, List[Tuple[int, int]]]]]] = {}

    def collections(self) -> List[nn.Module]:
        """The TorchRec collections holding this layer's tables (what DistributedModelParallel shards)."""
        return [self.ebc]

    # ------------------------------------------------------------------ forward
    def remap(self, features: KeyedJaggedTensor) -> Tuple[KeyedJaggedTensor, List[torch.Tensor]]:
        """The collection's input (virtual features) and each feature's bag lengths ``(B,)``."""
        parts, _, lengths, batch = self._remap_parts(features)
        return self._kjt(parts, batch), lengths

    def _column_index(self, pooled: KeyedTensor) -> Dict[str, int]:
        keys = tuple(pooled.keys())
        index = self._column_cache.get(keys)
        if index is None:
            index = {k: i for i, k in enumerate(keys)}
            self._column_cache[keys] = index
        return index

    def _program(self, pooled: KeyedTensor
                 ) -> Tuple[Optional[ColumnProgram], List[Tuple[str, List[Tuple[int, int]]]]]:
        """The fused column program for this pooled layout (None if some combine needs autograd) and
        the features whose projection weights it takes, with their pooled sources."""
        keys = tuple(pooled.keys())
        if keys in self._program_cache:
            return self._program_cache[keys]
        starts, pos = {}, 0
        for k, d in zip(keys, pooled.length_per_key()):
            starts[k] = (pos, d)
            pos += d
        ops, dst, program, weighted = [], 0, None, []
        for name, mean, dim in zip(self.feature_names, self._mean, self.output_dims):
            variant: EmbeddingVariant = self.variants[name]  # type: ignore[assignment]
            sources = [starts[vf.name] for vf in variant.virtual_features()]
            f_ops = None if mean else variant.column_ops(sources, dst)
            if f_ops is None:
                break
            if any(op[0] == "proj" for op in f_ops):
                weighted.append((name, sources))
            ops.extend(f_ops)
            dst += dim
        else:
            program = ColumnProgram(ops, in_width=pos, out_width=dst)
        self._program_cache[keys] = (program, weighted)
        return program, weighted

    def combine(self, pooled: KeyedTensor, lengths: Sequence[torch.Tensor]) -> KeyedTensor:
        """Per-feature outputs from the collection's pooled virtual features."""
        if self._passthrough and list(pooled.keys()) == self.feature_names:
            return KeyedTensor(keys=self.feature_names, length_per_key=self.output_dims, values=pooled.values())
        program, weighted = self._program(pooled)
        if program is not None:
            weights = [w for name, sources in weighted
                       for w in self.variants[name].column_weights(sources)]  # type: ignore[operator]
            return KeyedTensor(keys=self.feature_names, length_per_key=self.output_dims,
                               values=program(pooled.values(), weights))
        # One split (its backward is one concatenation), not a slice per key (a full-width zero
        # gradient per slice).
        parts_all = pooled.values().split(pooled.length_per_key(), dim=1)
        index = self._column_index(pooled)
        outs: List[torch.Tensor] = []
        for name, mean, f_len in zip(self.feature_names, self._mean, lengths):
            variant: EmbeddingVariant = self.variants[name]  # type: ignore[assignment]
            y = variant.combine([parts_all[index[vf.name]] for vf in variant.virtual_features()])
            if mean:
                y = y / f_len.clamp(min=1).unsqueeze(1).to(y.dtype)
            outs.append(y)
        return KeyedTensor(keys=self.feature_names, length_per_key=self.output_dims, values=torch.cat(outs, dim=1))

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """``features`` (KJT, keys = feature names) -> ``KeyedTensor`` of shape ``(B, D)``."""
        kjt, lengths = self.remap(features)
        return self.combine(self.ebc(kjt), lengths)


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

    def __init__(
        self,
        features: Sequence[FeatureSpec],
        device: Optional[torch.device] = None,
        validate_ids: bool = True,
    ) -> None:
        super().__init__(features, validate_ids)
        by_dim: "OrderedDict[int, List[EmbeddingConfig]]" = OrderedDict()
        for t, names in self._tables.values():
            by_dim.setdefault(t.dim, []).append(
                EmbeddingConfig(name=t.name, embedding_dim=t.dim, num_embeddings=t.rows, feature_names=names))
        self.ecs = nn.ModuleDict({f"d{d}": EmbeddingCollection(tables=cfgs, device=device)
                                  for d, cfgs in by_dim.items()})
        self._dim_keys = {vf: f"d{d}" for vf, d in self._virtual_dims.items()}

    def collections(self) -> List[nn.Module]:
        """The TorchRec collections holding this layer's tables, one per table dimension."""
        return list(self.ecs.values())

    def forward(self, features: KeyedJaggedTensor) -> Dict[str, JaggedTensor]:
        """``features`` (KJT) -> ``{feature: JaggedTensor of (n_f, output_dim_f) rows}``."""
        parts, ids, lengths, batch = self._remap_parts(features)
        groups: "OrderedDict[str, list]" = OrderedDict()
        for p in parts:
            groups.setdefault(self._dim_keys[p[0]], []).append(p)
        rows: Dict[str, torch.Tensor] = {}
        for key, group in groups.items():
            for vf, jt in self.ecs[key](self._kjt(group, batch)).items():
                rows[vf] = jt.values()
        out: Dict[str, JaggedTensor] = {}
        for name, f_ids, f_len in zip(self.feature_names, ids, lengths):
            variant: EmbeddingVariant = self.variants[name]  # type: ignore[assignment]
            values = variant.combine_sequence([rows[vf.name] for vf in variant.virtual_features()], f_ids)
            out[name] = JaggedTensor(values=values, lengths=f_len)
        return out


def kjt_from_lists(bags: Dict[str, Sequence[Sequence[int]]], device: Optional[torch.device] = None) -> KeyedJaggedTensor:
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
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.tensor(values, dtype=torch.int64, device=device),
        lengths=torch.tensor(lengths, dtype=torch.int32, device=device),
    )


def split_by_keys(features: KeyedJaggedTensor, groups: Sequence[Sequence[str]]) -> List[KeyedJaggedTensor]:
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
