"""The table-batched single-device kernel: plain-PyTorch pooled lookups with every table of a dimension
in one weight, one lookup call per dimension, and the optimizer applied inside the backward pass.

What it is for: training on a GPU without FBGEMM's GPU kernels (TorchRec's sharded modules need
them), and any single-device run where per-table modules cost a kernel launch and a sparse gradient
tensor per table. The layout is FBGEMM's table-batched embedding (TBE): tables stacked into one
``(sum of rows, dim)`` weight, ids shifted by their table's row offset, one gather / one scatter per
step. Like FBGEMM's fused kernels, the update happens in backward (SGD: one ``index_add_``; row-wise
Adagrad: coalesce duplicate rows, then update), so no gradient the size of the tables ever exists.

:class:`TableBatched` attaches it to a model from outside, as DistributedModelParallel attaches
TorchRec's sharded kernels. It does not shard: with several processes use DistributedModelParallel
(:func:`recsys_emb.sharding.shard_model`).

The module needs PyTorch alone: :meth:`TableBatchedEmbeddingBags.lookup` takes plain tensors, and only
its ``KeyedJaggedTensor`` entry point (``forward``) touches TorchRec's types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.specs import TableDef
from recsys_emb.tables.init import init_tables
from recsys_emb.tables.optimizer import EmbeddingOptimizer

if TYPE_CHECKING:  # the kernel itself is plain PyTorch: TorchRec's types only at its KJT entry point
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

__all__ = ["TableBatchedEmbeddingBags", "TableBatched", "FusedOptimizerState", "UnallocatedTables"]


class TableBatchedEmbeddingBags(nn.Module):
    """Sum-pooled lookups of many tables through one concatenated weight per dimension.

    Args:
        tables: the physical tables (name, rows, dim).
        features: ``{feature key: table name}``: the KeyedJaggedTensor keys this module serves.
        optimizer: the update applied in backward; ``None`` leaves ``weight.grad`` to autograd
            (a dense gradient the size of the concatenated table: for tests and tiny tables only).
        device: where to allocate the weights.

    Input: a ``KeyedJaggedTensor`` whose keys are among ``features`` (any order), int64 row ids
    within each table. Output: a ``KeyedTensor`` with the input's keys, ``(B, sum of their dims)``.
    :meth:`lookup` does the same on plain tensors (no TorchRec needed).

    Example:
        >>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
        >>> m = TableBatchedEmbeddingBags([TableDef("t", 10, 4)], {"a": "t", "b": "t"})
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.tensor([1, 2, 3]),
        ...                                           lengths=torch.tensor([1, 0, 2, 0]))
        >>> m(kjt).values().shape
        torch.Size([2, 8])
        >>> keys, out = m.lookup(["a", "b"], [torch.tensor([1]), torch.tensor([2, 3])],
        ...                      torch.tensor([[1, 0], [2, 0]]))
        >>> keys, torch.equal(out, m(kjt).values())
        (['a', 'b'], True)
    """

    def __init__(self, tables: Sequence[TableDef], features: Dict[str, str],
                 optimizer: Optional[EmbeddingOptimizer] = EmbeddingOptimizer("sgd"),
                 device: Optional[torch.device] = None) -> None:
        super().__init__()
        by_name = {t.name: t for t in tables}
        missing = sorted({t for t in features.values() if t not in by_name})
        if missing:
            raise ValueError(f"features read unknown table(s) {missing}; tables: {sorted(by_name)}")
        self.optimizer = optimizer
        self._hyper = dict(optimizer.table_batched_kwargs()) if optimizer is not None else {}
        self._update = None if optimizer is None else _Update(optimizer.name, optimizer.lr, self._hyper["eps"])
        self.table_defs = list(tables)
        self._defs = {t.name: t for t in self.table_defs}
        dims = sorted({t.dim for t in tables})
        self._group_of_dim = {d: f"d{d}" for d in dims}
        self.table_offsets: Dict[str, int] = {}
        self.table_group: Dict[str, str] = {}
        rows = {d: 0 for d in dims}
        for t in tables:
            self.table_offsets[t.name] = rows[t.dim]
            self.table_group[t.name] = self._group_of_dim[t.dim]
            rows[t.dim] += t.rows
        grad = optimizer is None
        self.weights = nn.ParameterDict({
            self._group_of_dim[d]: nn.Parameter(torch.empty(rows[d], d, device=device), requires_grad=grad)
            for d in dims})
        if optimizer is not None and optimizer.name == "rowwise_adagrad":
            for d in dims:
                self.register_buffer(f"momentum_{self._group_of_dim[d]}",
                                     torch.full((rows[d],), self._hyper["initial_accumulator_value"], device=device),
                                     persistent=False)  # optimizer state: fused_optimizer_state_dict()
        self.features = dict(features)
        # state_dict() speaks TorchRec's EmbeddingBagCollection keys (embedding_bags.<table>.weight), so a
        # checkpoint moves between this kernel and TorchRec's (sharded or not) in either direction
        self._register_state_dict_hook(_per_table_state)
        self._register_load_state_dict_pre_hook(_load_per_table_state, with_module=True)
        self._dims = {k: by_name[t].dim for k, t in features.items()}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each table ``U(-bound, bound)`` (:attr:`TableDef.bound`: ``1/sqrt(rows)`` unless the layer set
        one), as TorchRec initialises its tables."""
        with torch.no_grad():
            for t in self.table_defs:
                self.table_weight(t.name).uniform_(-t.bound, t.bound)

    def materialize(self, device: torch.device) -> None:
        """Allocate a module built on ``meta`` on ``device`` without touching the random number generator
        (so the rest of a model initialises as if the tables were still on ``meta``, as under
        DistributedModelParallel). The weights are uninitialised until :meth:`reset_parameters` or
        :func:`recsys_emb.tables.init_tables`; optimizer accumulators start at their initial value."""
        self.to_empty(device=device)
        if self.optimizer is not None and self.optimizer.name == "rowwise_adagrad":
            for group in self.weights:
                getattr(self, f"momentum_{group}").fill_(self._hyper["initial_accumulator_value"])

    def _rows_of(self, table: str, stacked: torch.Tensor) -> torch.Tensor:
        """``table``'s rows of a tensor stacked like its dimension group (weight or accumulators), a view."""
        t = self._defs.get(table)
        if t is None:
            raise KeyError(f"no table {table!r}; tables: {list(self._defs)}")
        off = self.table_offsets[table]
        return stacked[off:off + t.rows]

    def table_weight(self, table: str) -> torch.Tensor:
        """The ``(rows, dim)`` slice of the concatenated weight that holds ``table`` (a view)."""
        return self._rows_of(table, self.weights[self.table_group[table]])

    def _momentum(self, table: str) -> torch.Tensor:
        return self._rows_of(table, getattr(self, f"momentum_{self.table_group[table]}"))

    def fused_optimizer_state_dict(self) -> Dict[str, torch.Tensor]:
        """Row-wise Adagrad's accumulators per table (``{table: (rows,)}``); empty for SGD."""
        if self.optimizer is None or self.optimizer.name != "rowwise_adagrad":
            return {}
        return {t.name: self._momentum(t.name).clone() for t in self.table_defs}

    def load_fused_optimizer_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Load what :meth:`fused_optimizer_state_dict` returned (every table must be present)."""
        expected = self.fused_optimizer_state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(f"fused optimizer state: missing tables {missing}, unexpected tables {extra}")
        with torch.no_grad():
            for t in self.table_defs:
                self._momentum(t.name).copy_(state[t.name])

    def named_tables(self) -> List[Tuple[str, torch.Tensor]]:
        """``(table name, (rows, dim) view)`` for every table, in construction order."""
        return [(t.name, self.table_weight(t.name)) for t in self.table_defs]

    def forward(self, features: "KeyedJaggedTensor") -> "KeyedTensor":
        """``features`` (KJT over the served keys) -> ``KeyedTensor`` ``(B, sum of dims)``."""
        from torchrec.sparse.jagged_tensor import KeyedTensor  # loaded already: the caller holds a KJT

        keys = features.keys()
        values = features.values().split(features.length_per_key())
        out_keys, out = self.lookup(keys, values, features.lengths().view(len(keys), features.stride()))
        return KeyedTensor(keys=out_keys, length_per_key=self.output_dims(out_keys), values=out)

    def lookup(self, keys: Sequence[str], values: Sequence[torch.Tensor], lengths: torch.Tensor
               ) -> Tuple[List[str], torch.Tensor]:
        """The pooled lookup on plain tensors: ``keys`` (served keys, any order), ``values[i]`` the int64 row
        ids of key ``i`` (1-D, its bags one after another), ``lengths`` ``(len(keys), B)`` the bag sizes.

        Returns the output's keys (the input's, grouped by dimension when tables differ in it) and the
        ``(B, sum of their dims)`` pooled sums, each key a column block.
        """
        keys = list(keys)
        unknown = [k for k in keys if k not in self.features]
        if unknown:
            raise ValueError(f"key(s) {unknown} are not served; served keys: {sorted(self.features)}")
        groups: Dict[str, List[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(self.table_group[self.features[k]], []).append(i)
        outs: Dict[str, torch.Tensor] = {}
        for g, idx in groups.items():
            offsets = [self.table_offsets[self.features[keys[i]]] for i in idx]
            ids = torch.cat([values[i] + o if o else values[i] for i, o in zip(idx, offsets)]) if len(idx) > 1 \
                else values[idx[0]] + offsets[0]
            bag_lengths = lengths[idx] if len(idx) < len(keys) else lengths
            state = getattr(self, f"momentum_{g}", None)
            # an input that requires grad, so that autograd calls the fused backward
            placeholder = torch.zeros(0, device=ids.device, requires_grad=self.optimizer is not None)
            # (B, len(idx) * dim): sample-major, each key's pooled vector a column block
            outs[g] = _Lookup.apply(placeholder, self.weights[g], ids, bag_lengths, state, self._update)
        if len(groups) == 1:
            return keys, next(iter(outs.values()))
        # one column block per dimension group
        return [keys[i] for idx in groups.values() for i in idx], torch.cat(list(outs.values()), dim=1)

    def output_dims(self, keys: Sequence[str]) -> List[int]:
        """The output columns of each of ``keys`` (their tables' dims)."""
        return [self._dims[k] for k in keys]

    def extra_repr(self) -> str:
        shapes = {g: tuple(w.shape) for g, w in self.weights.items()}
        return f"tables={len(self.table_defs)}, weights={shapes}, optimizer={self.optimizer}"


class _Update(NamedTuple):
    """What the backward pass needs of the optimizer."""

    name: str
    lr: float
    eps: float


def _per_table_state(module: "TableBatchedEmbeddingBags", state: Dict[str, Any], prefix: str,
                     local_metadata: Any) -> None:
    """state_dict hook: the concatenated weights as one entry per table, TorchRec's key names."""
    for group in module.weights:
        weight = state.pop(f"{prefix}weights.{group}")
        for t in module.table_defs:
            if module.table_group[t.name] == group:
                state[f"{prefix}embedding_bags.{t.name}.weight"] = module._rows_of(t.name, weight)


def _load_per_table_state(module: "TableBatchedEmbeddingBags", state: Dict[str, Any], prefix: str,
                          local_metadata: Any, strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                          error_msgs: List[str]) -> None:
    """load_state_dict pre-hook: per-table entries (TorchRec's names) copied into the concatenated
    weights; a missing or misshapen table is reported under its own key."""
    for t in module.table_defs:
        key = f"{prefix}embedding_bags.{t.name}.weight"
        if key not in state:
            missing_keys.append(key)
            continue
        value = state.pop(key)
        if tuple(value.shape) != (t.rows, t.dim):
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, the "
                              f"table is {(t.rows, t.dim)}")
            continue
        with torch.no_grad():
            module.table_weight(t.name).copy_(value)
    # the module's own keys, already filled in above (a missing table is reported under its name)
    for group, weight in module.weights.items():
        state[f"{prefix}weights.{group}"] = weight.detach()


def _sample_major_bags(lengths: torch.Tensor, n_values: int) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """For key-major ``lengths`` ``(K, B)``: the sample-major bag (``b * K + k``) of every value, and
    the order that puts the values of one-id bags sample-major. When every bag holds exactly one
    value the first is ``None`` (value ``order[j]`` is bag ``j``)."""
    n_keys, batch = lengths.shape
    if n_values == lengths.numel() and bool((lengths == 1).all()):
        order = torch.arange(n_values, device=lengths.device).view(n_keys, batch).t().reshape(-1)
        return None, order
    key_major = torch.arange(lengths.numel(), device=lengths.device)
    sample_major = (key_major % batch) * n_keys + key_major // batch
    bags = torch.repeat_interleave(sample_major, lengths.reshape(-1).long(), output_size=n_values)
    return bags, torch.empty(0, dtype=torch.int64, device=lengths.device)


def _add_rows(weight: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, alpha: float) -> None:
    """``weight[rows[i]] += alpha * values[i]`` in place, repeated rows summed. On CPU through a sparse
    COO tensor (PyTorch's dense += sparse kernel runs in parallel; measured 2x faster than
    ``index_add_`` on 2 cores), on CUDA with ``index_add_`` (atomic adds)."""
    if weight.device.type == "cpu":
        weight.add_(torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape, check_invariants=False),
                    alpha=alpha)
    else:
        weight.index_add_(0, rows, values, alpha=alpha)


class _Lookup(torch.autograd.Function):
    """Pooled lookup, ``(B, K * dim)``, whose backward updates the weight in place (fused optimizer)
    or returns its gradient."""

    @staticmethod
    def forward(ctx, placeholder: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor,
                lengths: torch.Tensor, state: Optional[torch.Tensor], optimizer: Optional["_Update"]
                ) -> torch.Tensor:
        n_keys, batch = lengths.shape
        dim = weight.shape[1]
        bags, order = _sample_major_bags(lengths, ids.numel())
        if bags is None:
            ids = ids.index_select(0, order)
            out = weight.index_select(0, ids)
        else:
            out = weight.new_zeros(n_keys * batch, dim).index_add_(0, bags, weight.index_select(0, ids))
        ctx.save_for_backward(ids, bags if bags is not None else ids.new_empty(0))
        ctx.single = bags is None
        ctx.weight, ctx.state, ctx.optimizer = weight, state, optimizer
        return out.view(batch, n_keys * dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ids, bags = ctx.saved_tensors
        weight, opt = ctx.weight, ctx.optimizer
        grad = grad.reshape(-1, weight.shape[1])  # (B * K, dim), sample-major like the bags
        grad_values = grad if ctx.single else grad.index_select(0, bags)
        if opt is None:
            g = torch.zeros_like(weight).index_add_(0, ids, grad_values)
            return None, g, None, None, None, None
        with torch.no_grad():
            if opt.name == "sgd":
                _add_rows(weight, ids, grad_values.to(weight.dtype), -opt.lr)
            else:
                rows, inverse = torch.unique(ids, return_inverse=True)
                g = grad.new_zeros(rows.numel(), grad.shape[1]).index_add_(0, inverse, grad_values)
                state = ctx.state
                s = state.index_select(0, rows) + g.pow(2).mean(1)
                state.index_copy_(0, rows, s)
                _add_rows(weight, rows, (g / (s.sqrt() + opt.eps).unsqueeze(1)).to(weight.dtype), -opt.lr)
        return None, None, None, None, None, None


class FusedOptimizerState:
    """The fused optimizers' state of a model's table-batched kernels, with the ``state_dict`` /
    ``load_state_dict`` interface of ``DistributedModelParallel.fused_optimizer``: ``{kernel path in the
    model: {table: row-wise Adagrad accumulators (rows,)}}`` (empty per kernel for SGD)."""

    def __init__(self, kernels: Dict[str, TableBatchedEmbeddingBags]) -> None:
        self.kernels = kernels

    def state_dict(self) -> Dict[str, Dict[str, torch.Tensor]]:
        return {name: k.fused_optimizer_state_dict() for name, k in self.kernels.items()}

    def load_state_dict(self, state: Dict[str, Dict[str, torch.Tensor]]) -> None:
        unknown = sorted(set(state) - set(self.kernels))
        if unknown:
            raise ValueError(f"fused optimizer state for unknown kernels {unknown}; kernels: {sorted(self.kernels)}")
        for name, k in self.kernels.items():
            k.load_fused_optimizer_state_dict(state.get(name, {}))


class UnallocatedTables(nn.Module):
    """The tables of an :class:`~recsys_emb.layer.EmbeddingLayer` built on ``meta`` where TorchRec is not
    installed: their definitions, no storage and no lookup. :class:`TableBatched` allocates them in the
    table-batched kernel (with TorchRec, a layer on ``meta`` holds a TorchRec collection instead, which
    DistributedModelParallel can shard too).

    Example:
        >>> UnallocatedTables([TableDef("t", 10, 4)])
        UnallocatedTables(tables=1, rows=10)
    """

    def __init__(self, tables: Sequence[TableDef]) -> None:
        super().__init__()
        self.table_defs = list(tables)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this layer's tables were built on meta without TorchRec and hold no storage: wrap the "
                           "model in recsys_emb.tables.TableBatched, which allocates them")

    def extra_repr(self) -> str:
        return f"tables={len(self.table_defs)}, rows={sum(t.rows for t in self.table_defs)}"


class TableBatched(nn.Module):
    """``module`` with the tables of every pooled embedding layer in the table-batched kernel, on one
    device: the single-device counterpart of DistributedModelParallel, attached the same way.

    Each :class:`~recsys_emb.layer.EmbeddingLayer`'s TorchRec collection (``layer.ebc``) is replaced by a
    :class:`TableBatchedEmbeddingBags` over the same tables, updated by ``optimizer`` inside backward;
    every other parameter (MLPs, projections) is left to a torch optimizer over the parameters that
    require grad. ``state_dict()`` holds the module's keys (the tables under TorchRec's names), so a
    checkpoint moves between this kernel and TorchRec's, sharded or not, in either direction.

    Args:
        module: a model or layer containing EmbeddingLayers (sequence layers are not served). Tables
            built on ``meta`` are allocated on ``device`` without touching the random number generator
            and filled by :func:`~recsys_emb.tables.init_tables` with ``init_seed`` (``init_scale``),
            or TorchRec's ``U(+-1/sqrt(rows))`` without a seed; tables with values keep them.
        optimizer: the fused update (``sgd`` or ``rowwise_adagrad``); ``None`` leaves dense gradients of
            the concatenated weights to autograd (tests and tiny tables only).
        device: where everything lives (default CPU).

    Example:
        >>> from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(dim=4), cardinality=10)], device=torch.device("meta"))
        >>> model = TableBatched(layer, EmbeddingOptimizer("sgd", lr=0.1), init_seed=0)
        >>> model(kjt_from_lists({"a": [[1], [2]]})).values().shape
        torch.Size([2, 4])
    """

    def __init__(self, module: nn.Module, optimizer: Optional[EmbeddingOptimizer],
                 device: Optional[torch.device] = None,
                 init_seed: Optional[int] = None, init_scale: Optional[float] = None) -> None:
        super().__init__()
        device = torch.device(device or "cpu")
        # embedding layers by what they hold (the layer module sits above this one): pooled layers keep
        # their collection in ``ebc``, sequence layers theirs in ``ecs``
        found = [(n, m) for n, m in module.named_modules() if hasattr(m, "table_defs") and hasattr(m, "virtual_tables")]
        sequence = [n or type(module).__name__ for n, m in found if hasattr(m, "ecs")]
        if sequence:
            raise ValueError(f"{sequence[0]!r} is a SequenceEmbeddingLayer: the table-batched kernel serves pooled "
                             f"EmbeddingLayers only; train this model with TorchRec (recsys_emb.sharding.shard_model)")
        layers = [(n, m) for n, m in found if hasattr(m, "ebc")]
        if not layers:
            raise ValueError(f"{type(module).__name__} has no EmbeddingLayer whose tables the kernel could hold")
        if optimizer is not None:
            optimizer.table_batched_kwargs()  # refuses what the kernel does not implement
        kernels: Dict[str, TableBatchedEmbeddingBags] = {}
        fresh = False
        for name, layer in layers:
            old = layer.ebc
            kernel = TableBatchedEmbeddingBags(layer.table_defs, layer.virtual_tables, optimizer=optimizer,
                                               device=torch.device("meta"))
            kernel.materialize(device)
            if isinstance(old, UnallocatedTables) or any(p.is_meta for p in old.parameters()):
                fresh = True
            else:
                kernel.load_state_dict(old.state_dict())
            layer.ebc = kernel
            kernels[f"{name}.ebc" if name else "ebc"] = kernel
        module.to(device)
        if fresh:
            if init_seed is not None:
                init_tables(module, init_seed, scale=init_scale)
            else:
                for k in kernels.values():
                    k.reset_parameters()
        self.module = module
        self.fused_optimizer = FusedOptimizerState(kernels)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:  # type: ignore[override]
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)

