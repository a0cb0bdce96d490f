"""TorchRec sharding for models built on EmbeddingLayer: planner, DistributedModelParallel, fused
optimizers and a readable plan report. Unsharded modules never import this file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

__all__ = [
    "EMBEDDING_OPTIMIZERS",
    "SHARDING_TYPES_BY_DEVICE",
    "EmbeddingOptimizer",
    "collections_of",
    "apply_fused_optimizer",
    "init_single_process_group",
    "shard_model",
    "plan_report",
]

logger = logging.getLogger(__name__)

EMBEDDING_OPTIMIZERS: Dict[str, Type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
}
"""Optimizers TorchRec fuses into the embedding backward (FBGEMM kernels), by config name."""

CPU_FUSED_OPTIMIZERS = ("sgd", "rowwise_adagrad", "adagrad")
"""FBGEMM's CPU kernels implement these; fused Adam exists only on GPUs."""

SHARDING_TYPES_BY_DEVICE: Dict[str, Tuple[str, ...]] = {
    # FBGEMM's CPU kernels and gloo serve these; TorchRec refuses row-wise layouts on CPU.
    "cpu": ("table_wise", "column_wise", "data_parallel"),
    "cuda": ("table_wise", "column_wise", "row_wise", "table_row_wise", "table_column_wise", "data_parallel"),
}


@dataclass(frozen=True)
class EmbeddingOptimizer:
    """The fused optimizer for embedding tables: name (see ``EMBEDDING_OPTIMIZERS``) and kwargs."""

    name: str = "rowwise_adagrad"
    lr: float = 0.01
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in EMBEDDING_OPTIMIZERS:
            raise ValueError(f"embedding optimizer {self.name!r} is not one of {sorted(EMBEDDING_OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"embedding optimizer lr={self.lr} must be > 0")


def collections_of(model: nn.Module) -> List[nn.Module]:
    """The TorchRec embedding collections (pooled and sequence) inside ``model``."""
    return [m for m in model.modules() if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection))]


def apply_fused_optimizer(model: nn.Module, optimizer: EmbeddingOptimizer) -> None:
    """Mark every embedding-table parameter for an optimizer fused into the backward pass.

    DistributedModelParallel then updates the rows touched by a batch inside FBGEMM's kernel; the
    tables never hold a dense gradient.
    """
    params: List[nn.Parameter] = [p for c in collections_of(model) for p in c.parameters()]
    if not params:
        raise ValueError("model has no TorchRec embedding collection to put a fused optimizer on")
    kwargs = {"lr": optimizer.lr, **dict(optimizer.kwargs)}
    apply_optimizer_in_backward(EMBEDDING_OPTIMIZERS[optimizer.name], params, kwargs)


def init_single_process_group(backend: str = "gloo") -> None:
    """A world of one process (no network), for fused single-process training and benchmarks."""
    if dist.is_initialized():
        return
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _constraints(
    model: nn.Module,
    sharding_types: Optional[Sequence[str]],
    compute_kernel: str,
    per_table: Optional[Mapping[str, Sequence[str]]],
    device_type: str,
) -> Dict[str, ParameterConstraints]:
    allowed = SHARDING_TYPES_BY_DEVICE.get(device_type, SHARDING_TYPES_BY_DEVICE["cuda"])
    out: Dict[str, ParameterConstraints] = {}
    names = [cfg.name for c in collections_of(model) for cfg in _configs(c)]
    for table, types in (per_table or {}).items():
        if table not in names:
            raise ValueError(f"sharding constraint names table {table!r}, which the model does not have; tables: {names}")
    for name in names:
        types = list((per_table or {}).get(name, sharding_types or ("table_wise",)))
        bad = [t for t in types if t not in allowed]
        if bad:
            raise ValueError(
                f"table {name!r}: sharding type(s) {bad} are not available on device {device_type!r}; "
                f"allowed there: {list(allowed)}"
            )
        kernels = ["dense"] if types == ["data_parallel"] else [compute_kernel]
        out[name] = ParameterConstraints(sharding_types=types, compute_kernels=kernels)
    return out


def _configs(collection: nn.Module) -> list:
    if isinstance(collection, EmbeddingBagCollection):
        return collection.embedding_bag_configs()
    return collection.embedding_configs()


def shard_model(
    model: nn.Module,
    optimizer: Optional[EmbeddingOptimizer] = None,
    device: Optional[torch.device] = None,
    sharding_types: Optional[Sequence[str]] = None,
    per_table_sharding: Optional[Mapping[str, Sequence[str]]] = None,
    compute_kernel: str = "fused",
) -> DistributedModelParallel:
    """Wrap ``model`` in DistributedModelParallel with fused embedding optimizers.

    Needs an initialised process group (see :func:`init_single_process_group` for one process).

    Args:
        model: any module containing EmbeddingLayers (or TorchRec collections); built on CPU/CUDA
            (weights are copied into the shards) or on ``meta`` (tables initialised by TorchRec).
        optimizer: fused optimizer of the tables (default row-wise Adagrad, lr 0.01).
        device: compute device (default: CUDA if the group is NCCL, else CPU).
        sharding_types: allowed sharding types for every table (default ``["table_wise"]``).
        per_table_sharding: ``{table name: [types]}`` overriding ``sharding_types`` per table.
        compute_kernel: TorchRec compute kernel (``fused`` = FBGEMM with the optimizer in backward).

    Returns:
        The DistributedModelParallel module; ``plan_report(dmp)`` describes the placement.
    """
    if not dist.is_initialized():
        raise RuntimeError("shard_model needs torch.distributed initialised (torchrun, or init_single_process_group())")
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    optimizer = optimizer or EmbeddingOptimizer()
    if device.type == "cpu" and optimizer.name not in CPU_FUSED_OPTIMIZERS:
        raise ValueError(f"embedding optimizer {optimizer.name!r} has no fused FBGEMM kernel on CPU; "
                         f"use one of {list(CPU_FUSED_OPTIMIZERS)} there (adam is GPU-only)")
    apply_fused_optimizer(model, optimizer)
    world = dist.get_world_size()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    topology = Topology(world_size=world, compute_device=device.type, local_world_size=local_world)
    constraints = _constraints(model, sharding_types, compute_kernel, per_table_sharding, device.type)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan: ShardingPlan = planner.collective_plan(model, pg=dist.GroupMember.WORLD)
    # DMP allocates fresh shards; a model built with real weights keeps them (loaded into the shards).
    materialized = not any(p.is_meta for p in model.parameters())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()} if materialized else None
    # One process has nothing to all-reduce: DDP around the dense part would only add hooks.
    dmp = DistributedModelParallel(model, device=device, plan=plan, init_data_parallel=world > 1)
    if state is not None:
        dmp.load_state_dict(state)
    return dmp


def plan_report(dmp: DistributedModelParallel) -> List[Dict[str, Any]]:
    """One row per table shard: table, sharding type, compute kernel, ranks, rows x cols per shard."""
    rows: List[Dict[str, Any]] = []
    for module_path, module_plan in dmp.plan.plan.items():
        for table, ps in module_plan.items():  # type: ignore[union-attr]
            shards = ps.sharding_spec.shards if ps.sharding_spec is not None else []
            rows.append({
                "module": module_path,
                "table": table,
                "sharding_type": ps.sharding_type,
                "compute_kernel": ps.compute_kernel,
                "ranks": list(ps.ranks or []),
                "shards": [tuple(s.shard_sizes) for s in shards],
            })
    return rows
