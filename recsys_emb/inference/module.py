"""Inference modules: a trained DLRM or DIN as an ``nn.Module`` over plain tensors that ``torch.export`` accepts.

Signature (``B`` samples, ``F`` features in :attr:`InferenceModule.feature_names` order)::

    forward(dense (B, dense_in) float32, values (n,) int64, lengths (F * B,) int64) -> logits (B,)

``values`` and ``lengths`` are key-major, like a KeyedJaggedTensor's: feature 0's bags of samples 0..B-1,
then feature 1's, and so on. ``dense`` is ``(B, 0)`` for a model without dense features.

What the module holds: the tables in their storage (:class:`~recsys_emb.inference.tables.StoredTable`:
fp32, fp16 or int8 row-wise), the variants' own modules (their dense parameters and combine), and a copy
of the model without its embedding layers, whose ``head`` is the model's own dense part. What it leaves
out: id validation, Python-side caches, TorchRec collections, optimizer state, regularisation.

Each feature is remapped by its variant's plan (:mod:`recsys_emb.embeddings.plans`) with static shapes,
by the plan's own ``parts`` (the one per-feature interpreter of a plan, shared with
:func:`recsys_emb.embeddings.fused.run_plan`): ``Identity`` (ids are rows), ``Hash``
(:func:`recsys_emb.hashing.bucket_rows`), ``DivMod``, and ``Blocks`` as masked lookups (every block reads
a row per id, weighted 1 inside the block and 0 outside). Rows are sum-pooled per bag by ``index_add``
over a per-value bag index. A variant without a plan runs its own ``remap``, which ``torch.export``
accepts only if it is free of data-dependent Python control flow.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from recsys_emb.embeddings import EmbeddingVariant
from recsys_emb.embeddings.plans import Blocks, DivMod, Hash, Identity, StaticPart
from recsys_emb.errors import ConfigError
from recsys_emb.inference.tables import StoredTable, check_table_dtype
from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer
from recsys_emb.models import DIN, DLRM
from recsys_emb.specs import FeatureSpec

__all__ = ["InferenceModule", "inference_module", "bag_sum"]

_Part = StaticPart  # (values, lengths, per-value weight or None) of one virtual feature


def bag_sum(rows: torch.Tensor, lengths: torch.Tensor, batch: int) -> torch.Tensor:
    """Sum of ``rows (n, d)`` per bag, bag ``b`` holding ``lengths[b]`` consecutive rows -> ``(batch, d)``.

    Example:
        >>> bag_sum(torch.ones(3, 2), torch.tensor([2, 0, 1]), 3).tolist()
        [[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]]
    """
    bags = torch.repeat_interleave(torch.arange(batch, device=rows.device), lengths, output_size=rows.shape[0])
    return rows.new_zeros(batch, rows.shape[1]).index_add(0, bags, rows)


class _Feature(nn.Module):
    """One feature: its remap without checks, the stored tables its virtual features read, its variant."""

    keys: torch.Tensor  # buffer (Hash plans)

    def __init__(self, variant: EmbeddingVariant, tables: List[int]) -> None:
        super().__init__()
        self.variant = variant
        self.name = variant.feature.name
        self.tables = tables  # index into the module's table list, per virtual feature
        own_remap = type(variant).remap is not EmbeddingVariant.remap
        plan = None if own_remap else variant.remap_plan()
        self.kind = type(plan).__name__ if plan is not None else "own"
        if plan is not None and not isinstance(plan, (Identity, Hash, DivMod, Blocks)):
            raise ConfigError(f"feature {self.name!r}: remap plan {type(plan).__name__} has no inference form")
        self.plan = plan
        if isinstance(plan, Hash):  # its keys as a buffer of this module: they follow it across devices
            self.register_buffer("keys", plan.keys.detach().clone(), persistent=False)

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[_Part]:
        if isinstance(self.plan, Hash):
            return self.plan.parts(ids, lengths, keys=self.keys)
        if self.plan is not None:
            return self.plan.parts(ids, lengths)
        return [(v, l, None) for v, l in self.variant.remap(ids, lengths)]

    def rows(self, tables: nn.ModuleList, ids: torch.Tensor, lengths: torch.Tensor
             ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """``(rows (m, d), lengths (B,))`` per virtual feature; masked rows are zero."""
        out = []
        for (values, lens, weight), t in zip(self.remap(ids, lengths), self.tables):
            r = tables[t](values)
            out.append((r if weight is None else r * weight.unsqueeze(1), lens))
        return out

    def pooled(self, tables: nn.ModuleList, ids: torch.Tensor, lengths: torch.Tensor, batch: int,
               mean: bool) -> torch.Tensor:
        """The feature's pooled embedding ``(B, output_dim)`` by its variant's own ``combine`` (or its own
        pooling, for a variant whose rows are not table rows: tensor-train cores)."""
        if self.variant.owns_rows:
            y = self.variant.pooled(ids, lengths, batch)
        else:
            y = self.variant.combine([bag_sum(r, lens, batch) for r, lens in self.rows(tables, ids, lengths)])
        return y / lengths.clamp(min=1).unsqueeze(1).to(y.dtype) if mean else y

    def sequence(self, tables: nn.ModuleList, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One embedding per id ``(n, output_dim)``. Masked blocks give one row per id and block, so their
        per-id output is the sum of the blocks' projected rows: the variant's ``combine``."""
        if self.variant.owns_rows:
            return self.variant.combine_sequence([], ids)
        rows = [r for r, _ in self.rows(tables, ids, lengths)]
        if self.kind == "Blocks":
            return self.variant.combine(rows)
        return self.variant.combine_sequence(rows, ids)


def _layer_tables(layer: nn.Module) -> Dict[str, torch.Tensor]:
    """``{table name: (rows, dim) weight}`` of an unsharded layer's collections."""
    out: Dict[str, torch.Tensor] = {}
    for collection in layer.collections():  # type: ignore[operator]
        named = collection.named_tables() if hasattr(collection, "named_tables") else [
            (name.split(".")[-2], p) for name, p in collection.named_parameters()]
        for name, weight in named:
            if weight.device.type == "meta" or weight.dim() != 2:
                raise ConfigError(f"table {name!r} is not materialised ({weight.device}, {type(weight).__name__}); "
                                  "build the inference module from an unsharded model with its weights, as "
                                  "recsys_emb.serving.load_model returns")
            out[name] = weight
    return out


def _dense_part(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without its embedding layers and own buffers (DIN's frequency buffers serve only
    the training regulariser): what its ``head`` reads."""
    part = copy.copy(model)
    part._modules = {k: copy.deepcopy(m) for k, m in model._modules.items()
                     if not isinstance(m, (EmbeddingLayer, SequenceEmbeddingLayer))}
    part._parameters = {}
    part._buffers = {}
    part._non_persistent_buffers_set = set()
    return part.eval()


class InferenceModule(nn.Module):
    """A trained DLRM or DIN over plain tensors (module docstring: signature and contents). Build it with
    :func:`inference_module`.

    Attributes:
        feature_names: the order of ``values`` / ``lengths``.
        dense_in: columns of ``dense``.
        table_dtype: the tables' storage (``fp32``, ``fp16``, ``int8``).
        model_kind: ``"dlrm"`` or ``"din"``.
    """

    def __init__(self, model: Union[DLRM, DIN], feature_names: Sequence[str], table_dtype: str) -> None:
        super().__init__()
        self.table_dtype = check_table_dtype(table_dtype)
        self.model_kind = "dlrm" if isinstance(model, DLRM) else "din"
        self.feature_names = list(feature_names)
        self.dense_in = int(model.dense_in)
        pooled: List[EmbeddingLayer] = []
        sequence: Optional[SequenceEmbeddingLayer] = None
        attention: Optional[SequenceEmbeddingLayer] = None  # DIN's attention twins (decoupled embeddings)
        if isinstance(model, DLRM):
            pooled = [model.embeddings]
        else:
            pooled, sequence = ([model.profile] if model.profile is not None else []), model.sequences
            attention = model.attention
        layers: List[Union[EmbeddingLayer, SequenceEmbeddingLayer]] = [*pooled, *([sequence] if sequence else []),
                                                                       *([attention] if attention else [])]
        weights: Dict[str, torch.Tensor] = {}
        for layer in layers:
            weights.update(_layer_tables(layer))
        names = list(weights)
        index = {n: i for i, n in enumerate(names)}
        self.tables = nn.ModuleList(StoredTable(weights[n], table_dtype) for n in names)
        self.table_names = names
        position = {n: i for i, n in enumerate(self.feature_names)}
        self.pooled_features = nn.ModuleList()
        self.pooled_pos: List[int] = []
        self.pooled_mean: List[bool] = []
        self.sequence_features = nn.ModuleList()
        self.sequence_pos: List[int] = []
        self.attention_features = nn.ModuleList()  # twin i reads the ids of sequence feature i
        targets = [self.pooled_features] * len(pooled) + [self.sequence_features] * (sequence is not None) \
            + [self.attention_features] * (attention is not None)
        for layer, target in zip(layers, targets):
            pos = self.pooled_pos if target is self.pooled_features else self.sequence_pos
            variants = copy.deepcopy(layer.variants)  # shared dense parameters stay shared inside the copy
            for f in layer.features:
                vfs = layer.variant(f.name).virtual_features()
                target.append(_Feature(cast(EmbeddingVariant, variants[f.name]), [index[vf.table] for vf in vfs]))
                if target is not self.attention_features:
                    pos.append(position[f.name])
                if target is self.pooled_features:
                    self.pooled_mean.append(f.pooling == "mean")
        if isinstance(model, DIN):
            seq = {f.name: i for i, f in enumerate(model.sequences.features)}
            self.candidates = [seq[n] for n in model.candidate_names]
            self.histories = [seq[n] for n in model.history_names]
        self.dense_part = _dense_part(model)
        self.requires_grad_(False)  # its own copies: nothing here trains
        self.eval()

    @property
    def table_bytes(self) -> int:
        """Bytes of the stored tables."""
        return sum(cast(StoredTable, t).nbytes for t in self.tables)

    def _split(self, values: torch.Tensor, lengths: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor], int]:
        lens = lengths.view(len(self.feature_names), -1)
        counts = lens.sum(1).tolist()
        for c in counts:  # torch.export: the per-feature counts are sizes that add up to the values
            torch._check(c >= 0)
        torch._check(sum(counts) == values.shape[0])
        return list(values.split(counts)), list(lens.unbind(0)), lens.shape[1]

    def forward(self, dense: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``dense (B, dense_in)`` float32, ``values (n,)`` int64, ``lengths (F * B,)`` int64 -> logits ``(B,)``."""
        ids, lens, batch = self._split(values, lengths.long())
        pooled = [f.pooled(self.tables, ids[p], lens[p], batch, mean)  # type: ignore[operator]
                  for f, p, mean in zip(self.pooled_features, self.pooled_pos, self.pooled_mean)]
        embedded = (pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)) if pooled else None
        d = dense if self.dense_in > 0 else None
        if self.model_kind == "dlrm":
            logits = self.dense_part.head(d, embedded)  # type: ignore[operator]
            linear = self.dense_part.linear
            if linear is not None:  # the first-order term reads the ids (features in the model's order)
                logits = logits + linear(d,  # type: ignore[operator]
                                          [ids[p] for p in self.pooled_pos], [lens[p] for p in self.pooled_pos])
            return logits
        rows = [f.sequence(self.tables, ids[p], lens[p])  # type: ignore[operator]
                for f, p in zip(self.sequence_features, self.sequence_pos)]
        for i in self.candidates:  # one id per sample
            torch._check(rows[i].shape[0] == batch)
        first = self.histories[0]
        for i in self.histories[1:]:  # every pair's history has the same lengths
            torch._check(rows[i].shape[0] == rows[first].shape[0])
        candidate = torch.cat([rows[i] for i in self.candidates], dim=1)
        history = torch.cat([rows[i] for i in self.histories], dim=1)
        att_candidate = att_history = None
        if len(self.attention_features):
            att = [f.sequence(self.tables, ids[p], lens[p])  # type: ignore[operator]
                   for f, p in zip(self.attention_features, self.sequence_pos)]
            att_candidate = torch.cat([att[i] for i in self.candidates], dim=1)
            att_history = torch.cat([att[i] for i in self.histories], dim=1)
        return self.dense_part.head(d, embedded, candidate, history,  # type: ignore[operator]
                                    lens[self.sequence_pos[first]], att_candidate, att_history)


def inference_module(model: nn.Module, features: Sequence[FeatureSpec], table_dtype: str = "fp32") -> InferenceModule:
    """The inference module of a trained, unsharded DLRM or DIN (as :func:`recsys_emb.serving.load_model`
    returns it, with its feature specs).

    Args:
        model: the model (its tables materialised, not sharded).
        features: its feature specs; their order is the order of ``values`` and ``lengths``.
        table_dtype: table storage: ``"fp32"``, ``"fp16"`` or ``"int8"`` (row-wise, dequantised on lookup).

    Example:
        >>> from recsys_emb.specs import Full, Hashed
        >>> specs = [FeatureSpec("a", Full(dim=4), cardinality=10), FeatureSpec("b", Hashed(dim=4, buckets=8))]
        >>> model = DLRM(EmbeddingLayer(specs), dense_in=2, bottom_mlp=(4,), top_mlp=(4,)).eval()
        >>> m = inference_module(model, specs, "int8")
        >>> m(torch.randn(3, 2), torch.tensor([1, 2, 3, -5, 7, 9]), torch.tensor([1, 1, 1, 1, 1, 1])).shape
        torch.Size([3])
    """
    if not isinstance(model, (DLRM, DIN)):
        raise ConfigError(f"inference_module takes a DLRM or DIN model; got {type(model).__name__}")
    names = [f.name for f in features]
    if isinstance(model, DLRM):
        own = list(model.feature_names)
    else:
        own = (model.profile_names if model.profile is not None else []) + list(model.sequences.feature_names)
    if sorted(names) != sorted(own) or len(set(names)) != len(names):
        raise ConfigError(f"features {names} are not the model's features {own}; pass the specs the model was "
                          f"loaded with (recsys_emb.serving.load_model returns them)")
    return InferenceModule(model, names, table_dtype)
