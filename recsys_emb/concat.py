"""Plain-PyTorch pooled lookups for one device: every table of a dimension in one concatenated
weight, one lookup call per dimension, and the optimizer applied inside the backward pass.

What it is for: training on a GPU without FBGEMM's GPU kernels (TorchRec's sharded modules need
them), and any single-device run where per-table modules cost a kernel launch and a sparse gradient
tensor per table. The layout follows FBGEMM's table-batched embedding (TBE): tables stacked into one
``(sum of rows, dim)`` weight, ids shifted by their table's row offset, one gather / one scatter per
step. Like FBGEMM's fused kernels, the update happens in backward (SGD: one ``index_add_``; row-wise
Adagrad: coalesce duplicate rows, then update), so no gradient the size of the tables ever exists.

It does not shard: with several processes use TorchRec's DistributedModelParallel (the default
``kernel="torchrec"`` of :class:`~recsys_emb.layer.EmbeddingLayer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys_emb.specs import TableDef

__all__ = ["FusedOptimizer", "ConcatenatedEmbeddingBags"]


@dataclass(frozen=True)
class FusedOptimizer:
    """The update the backward pass applies to the rows a batch touched.

    Attributes:
        kind: ``sgd`` (``w -= lr * g``, duplicates of a row summed first, as autograd would) or
            ``rowwise_adagrad`` (one accumulator per row: ``s += mean(g**2)``,
            ``w -= lr * g / (sqrt(s) + eps)``; FBGEMM's and DLRM's default for embeddings).
        lr: learning rate (> 0).
        eps: Adagrad's epsilon.
        initial_accumulator_value: Adagrad's starting ``s``.
    """

    kind: str = "sgd"
    lr: float = 0.01
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("sgd", "rowwise_adagrad"):
            raise ValueError(f"optimizer kind={self.kind!r} must be 'sgd' or 'rowwise_adagrad'")
        if not self.lr > 0:
            raise ValueError(f"optimizer lr={self.lr} must be > 0")
        if not self.eps > 0:
            raise ValueError(f"optimizer eps={self.eps} must be > 0")


class ConcatenatedEmbeddingBags(nn.Module):
    """Sum-pooled lookups of many tables through one concatenated weight per dimension.

    Args:
        tables: the physical tables (name, rows, dim).
        features: ``{feature key: table name}``: the KeyedJaggedTensor keys this module serves.
        optimizer: the update applied in backward; ``None`` leaves ``weight.grad`` to autograd
            (a dense gradient the size of the concatenated table: for tests and tiny tables only).
        device: where to allocate the weights.

    Input: a ``KeyedJaggedTensor`` whose keys are among ``features`` (any order), int64 row ids
    within each table. Output: a ``KeyedTensor`` with the input's keys, ``(B, sum of their dims)``.

    Example:
        >>> m = ConcatenatedEmbeddingBags([TableDef("t", 10, 4)], {"a": "t", "b": "t"})
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(keys=["a", "b"], values=torch.tensor([1, 2, 3]),
        ...                                           lengths=torch.tensor([1, 0, 2, 0]))
        >>> m(kjt).values().shape
        torch.Size([2, 8])
    """

    def __init__(self, tables: Sequence[TableDef], features: Dict[str, str],
                 optimizer: Optional[FusedOptimizer] = FusedOptimizer(), device: Optional[torch.device] = None) -> None:
        super().__init__()
        by_name = {t.name: t for t in tables}
        missing = sorted({t for t in features.values() if t not in by_name})
        if missing:
            raise ValueError(f"features read unknown table(s) {missing}; tables: {sorted(by_name)}")
        self.optimizer = optimizer
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
        if optimizer is not None and optimizer.kind == "rowwise_adagrad":
            for d in dims:
                self.register_buffer(f"momentum_{self._group_of_dim[d]}",
                                     torch.full((rows[d],), optimizer.initial_accumulator_value, device=device),
                                     persistent=False)  # optimizer state: fused_optimizer_state_dict()
        self.features = dict(features)
        # state_dict() speaks TorchRec's EmbeddingBagCollection keys (embedding_bags.<table>.weight), so a
        # checkpoint moves between this kernel and TorchRec's (sharded or not) in either direction
        self._register_state_dict_hook(_per_table_state)
        self._register_load_state_dict_pre_hook(_load_per_table_state, with_module=True)
        self._dims = {k: by_name[t].dim for k, t in features.items()}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each table U(-1/sqrt(rows), 1/sqrt(rows)), as TorchRec initialises its tables."""
        with torch.no_grad():
            for t in self.table_defs:
                self.table_weight(t.name).uniform_(-(t.rows ** -0.5), t.rows ** -0.5)

    def materialize(self, device: torch.device) -> None:
        """Allocate a module built on ``meta`` on ``device`` without touching the random number generator
        (so the rest of a model initialises as if the tables were still on ``meta``, as under
        DistributedModelParallel). The weights are uninitialised until :meth:`reset_parameters` or
        :func:`recsys_emb.sharding.init_tables`; optimizer accumulators start at their initial value."""
        self.to_empty(device=device)
        if self.optimizer is not None and self.optimizer.kind == "rowwise_adagrad":
            for group in self.weights:
                getattr(self, f"momentum_{group}").fill_(self.optimizer.initial_accumulator_value)

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
        if self.optimizer is None or self.optimizer.kind != "rowwise_adagrad":
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

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """``features`` (KJT over the served keys) -> ``KeyedTensor`` ``(B, sum of dims)``."""
        keys = features.keys()
        unknown = [k for k in keys if k not in self.features]
        if unknown:
            raise ValueError(f"KeyedJaggedTensor key(s) {unknown} are not served; served keys: {sorted(self.features)}")
        batch = features.stride()
        counts = features.length_per_key()
        values = features.values().split(counts)
        lengths = features.lengths().view(len(keys), batch)
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
            outs[g] = _Lookup.apply(placeholder, self.weights[g], ids, bag_lengths, state, self.optimizer)
        if len(groups) == 1:
            out_keys = list(keys)
            values_out = next(iter(outs.values()))
        else:  # one column block per dimension group
            out_keys = [keys[i] for idx in groups.values() for i in idx]
            values_out = torch.cat(list(outs.values()), dim=1)
        return KeyedTensor(keys=out_keys, length_per_key=[self._dims[k] for k in out_keys], values=values_out)

    def extra_repr(self) -> str:
        shapes = {g: tuple(w.shape) for g, w in self.weights.items()}
        return f"tables={len(self.table_defs)}, weights={shapes}, optimizer={self.optimizer}"


def _per_table_state(module: "ConcatenatedEmbeddingBags", state: Dict[str, Any], prefix: str,
                     local_metadata: Any) -> None:
    """state_dict hook: the concatenated weights as one entry per table, TorchRec's key names."""
    for group in module.weights:
        weight = state.pop(f"{prefix}weights.{group}")
        for t in module.table_defs:
            if module.table_group[t.name] == group:
                state[f"{prefix}embedding_bags.{t.name}.weight"] = module._rows_of(t.name, weight)


def _load_per_table_state(module: "ConcatenatedEmbeddingBags", state: Dict[str, Any], prefix: str,
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
    def forward(ctx, placeholder: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor,  # type: ignore[override]
                lengths: torch.Tensor, state: Optional[torch.Tensor], optimizer: Optional[FusedOptimizer]
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
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        ids, bags = ctx.saved_tensors
        weight, opt = ctx.weight, ctx.optimizer
        grad = grad.reshape(-1, weight.shape[1])  # (B * K, dim), sample-major like the bags
        grad_values = grad if ctx.single else grad.index_select(0, bags)
        if opt is None:
            g = torch.zeros_like(weight).index_add_(0, ids, grad_values)
            return None, g, None, None, None, None
        with torch.no_grad():
            if opt.kind == "sgd":
                _add_rows(weight, ids, grad_values.to(weight.dtype), -opt.lr)
            else:
                rows, inverse = torch.unique(ids, return_inverse=True)
                g = grad.new_zeros(rows.numel(), grad.shape[1]).index_add_(0, inverse, grad_values)
                state = ctx.state
                s = state.index_select(0, rows) + g.pow(2).mean(1)
                state.index_copy_(0, rows, s)
                _add_rows(weight, rows, (g / (s.sqrt() + opt.eps).unsqueeze(1)).to(weight.dtype), -opt.lr)
        return None, None, None, None, None, None
