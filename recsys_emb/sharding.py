"""TorchRec sharding for models built on EmbeddingLayer: planner, DistributedModelParallel, fused
optimizers and a readable plan report. Unsharded modules never import this file.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
import torch.distributed as dist
from torch import nn

from recsys_emb.errors import ConfigError
from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import HardwareConfig, KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import BoundsCheckMode, ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer
from recsys_emb.tables import (
    CPU_FUSED_OPTIMIZERS,
    EmbeddingOptimizer,
    TableBatchedEmbeddingBags,
    collection_configs,
    init_tables,
)
from recsys_emb.tables.init import TABLE_STATE_KEY

__all__ = [
    "HBM_RESERVED",
    "SHARDING_TYPES_BY_DEVICE",
    "collections_of",
    "checked_tables",
    "apply_fused_optimizer",
    "init_single_process_group",
    "shard_model",
    "plan_model",
    "table_shapes",
    "plan_report",
    "rank_bytes",
    "format_plan",
]

logger = logging.getLogger(__name__)

_TORCH_OPTIMIZERS: Dict[str, Type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
}
"""The optimizer classes TorchRec maps to FBGEMM's fused kernels, by :class:`EmbeddingOptimizer` name."""

HBM_RESERVED = 0.15
"""Share of each GPU's memory the planner leaves to dense tensors, inputs and activations (the share
TorchRec's default policy keeps as its margin)."""

SHARDING_TYPES_BY_DEVICE: Dict[str, Tuple[str, ...]] = {
    # FBGEMM's CPU kernels and gloo serve these; TorchRec refuses row-wise layouts on CPU.
    "cpu": ("table_wise", "column_wise", "data_parallel"),
    "cuda": ("table_wise", "column_wise", "row_wise", "table_row_wise", "table_column_wise", "data_parallel"),
}


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
    apply_optimizer_in_backward(_TORCH_OPTIMIZERS[optimizer.name], params, kwargs)


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
    world_size: int = 1,
) -> Dict[str, ParameterConstraints]:
    allowed = SHARDING_TYPES_BY_DEVICE.get(device_type, SHARDING_TYPES_BY_DEVICE["cuda"])
    checked = set(checked_tables(model))
    out: Dict[str, ParameterConstraints] = {}
    dims = {cfg.name: int(cfg.embedding_dim) for c in collections_of(model) for cfg in collection_configs(c)}
    names = list(dims)
    for table, types in (per_table or {}).items():
        if table not in names:
            raise ConfigError(f"per_table_sharding names table {table!r}, which the model does not have; "
                              f"name one of {names}")
    for name in names:
        types = list((per_table or {}).get(name, sharding_types or ("table_wise",)))
        bad = [t for t in types if t not in allowed]
        if bad:
            raise ConfigError(
                f"train.sharding_types: table {name!r}: sharding type(s) {bad} are not available on device "
                f"{device_type!r}; choose from {list(allowed)} there"
            )
        kernels = ["dense"] if types == ["data_parallel"] else [compute_kernel]
        min_partition = None
        if "column_wise" in types and world_size > 1:
            # TorchRec cuts column shards of at least 128 columns by default, so a table of dim <= 128
            # would stay whole on one rank; cut it into world_size slices (multiples of 4, FBGEMM's rule).
            min_partition = max(4, dims[name] // world_size // 4 * 4)
        out[name] = ParameterConstraints(sharding_types=types, compute_kernels=kernels, min_partition=min_partition,
                                         bounds_check_mode=BoundsCheckMode.NONE if name in checked else None)
    return out


def checked_tables(model: nn.Module) -> List[str]:
    """Tables whose ids an :class:`~recsys_emb.layer.EmbeddingLayer` (or sequence layer) of ``model``
    has already checked: every table of a layer built with ``validate_ids=True``. Its remap raises on
    an id outside a full, QR or mixed-dimension vocabulary, and hashed and unified rows are in range
    by construction, so FBGEMM's own per-lookup bounds check (a pass over every index, clamping bad
    ones with a warning) would check the same ids again. Those tables are sharded with
    ``BoundsCheckMode.NONE``; every other table (a plain TorchRec collection, a layer with
    ``validate_ids=False``) keeps TorchRec's default check.
    """
    return [cfg.name for m in model.modules() if isinstance(m, (EmbeddingLayer, SequenceEmbeddingLayer)) and m.validate_ids
            for c in m.collections() if isinstance(c, (EmbeddingBagCollection, EmbeddingCollection))
            for cfg in collection_configs(c)]


def _planner(
    model: nn.Module,
    optimizer: Optional[EmbeddingOptimizer],
    device_type: str,
    world_size: int,
    local_world_size: int,
    sharding_types: Optional[Sequence[str]],
    per_table_sharding: Optional[Mapping[str, Sequence[str]]],
    compute_kernel: str,
    hbm_bytes: Optional[int] = None,
) -> EmbeddingShardingPlanner:
    """The planner :func:`shard_model` and :func:`plan_model` share (fused optimizer applied to ``model``).

    Built as TorchRec asks, so that planning prints nothing: the topology through its factory (the default
    capacities and bandwidths of the ``Topology`` built directly before), and a fixed share of each device's
    HBM kept free instead of the default heuristic policy, which warns on every construction and
    reserves a guess of the dense tensors (an over-estimate, TorchRec says, for a model planned on
    ``meta``).
    """
    optimizer = optimizer or EmbeddingOptimizer()
    if device_type == "cpu" and optimizer.name not in CPU_FUSED_OPTIMIZERS:
        raise ValueError(f"embedding optimizer {optimizer.name!r} has no fused FBGEMM kernel on CPU; "
                         f"use one of {list(CPU_FUSED_OPTIMIZERS)} there (adam is GPU-only)")
    apply_fused_optimizer(model, optimizer)
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=world_size, local_world_size=local_world_size),
        hardware_config=HardwareConfig(hbm_cap_bytes=hbm_bytes) if hbm_bytes is not None else None,
        kernel_config=KernelConfig(compute_device=device_type))
    constraints = _constraints(model, sharding_types, compute_kernel, per_table_sharding, device_type, world_size)
    return EmbeddingShardingPlanner(topology=topology, constraints=constraints,
                                    storage_reservation=FixedPercentageStorageReservation(HBM_RESERVED))


def shard_model(
    model: nn.Module,
    optimizer: Optional[EmbeddingOptimizer] = None,
    device: Optional[torch.device] = None,
    sharding_types: Optional[Sequence[str]] = None,
    per_table_sharding: Optional[Mapping[str, Sequence[str]]] = None,
    compute_kernel: str = "fused",
    init_seed: Optional[int] = None,
    init_scale: Optional[float] = None,
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
        init_seed: for a model built on ``meta``: fill every table with :func:`init_tables` (values that
            depend on the seed, table and element only, so any world size and sharding type starts
            from the same weights). ``None`` keeps TorchRec's per-shard random initialisation.
        init_scale: with ``init_seed``: the uniform bound of every table (default ``1/sqrt(rows)``).

    Returns:
        The DistributedModelParallel module; ``plan_report(dmp)`` describes the placement.
    """
    batched = [name or type(model).__name__ for name, m in model.named_modules()
               if isinstance(m, TableBatchedEmbeddingBags)]
    if batched:
        raise ValueError(f"{batched[0]!r} holds its tables in the table-batched single-device kernel, which "
                         f"DistributedModelParallel cannot shard; shard the model as built (TorchRec collections), "
                         f"before attaching TableBatched")
    if not dist.is_initialized():
        raise RuntimeError("shard_model needs torch.distributed initialised (torchrun, or init_single_process_group())")
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    world = dist.get_world_size()
    if world > 1:
        _refuse_managed_collisions(model, world)
    planner = _planner(model, optimizer, device.type, world, int(os.environ.get("LOCAL_WORLD_SIZE", world)),
                       sharding_types, per_table_sharding, compute_kernel)
    plan: ShardingPlan = planner.collective_plan(model, pg=dist.GroupMember.WORLD)
    # DMP allocates fresh shards; a model built with real weights keeps them (loaded into the shards).
    materialized = not any(p.is_meta for p in model.parameters())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()} if materialized else None
    # One process has nothing to all-reduce: DDP around the dense part would only add hooks.
    with warnings.catch_warnings():
        # TorchRec 1.8 wraps the dense part in DDP with broadcast_buffers=False, which torch 2.13 deprecates
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        dmp = DistributedModelParallel(model, device=device, plan=plan, init_data_parallel=world > 1)
    if state is not None:
        dmp.load_state_dict(state)
    elif init_seed is not None:
        init_tables(dmp, init_seed, scale=init_scale)
    return dmp


def _refuse_managed_collisions(model: nn.Module, world: int) -> None:
    """Managed-collision remaps (:class:`~recsys_emb.specs.ManagedCollision`) train in one process only."""
    from recsys_emb.specs import ManagedCollision

    for m in model.modules():
        if isinstance(m, (EmbeddingLayer, SequenceEmbeddingLayer)):
            mc = [f.name for f in m.features if isinstance(f.embedding, ManagedCollision)]
            if mc:
                raise ConfigError(
                    f"feature(s) {mc}: managed-collision tables are not sharded over {world} processes: each "
                    f"process would update its own copy of the remap from its own batches (TorchRec's "
                    f"DistributedModelParallel does not synchronise buffers), and TorchRec's managed-collision "
                    f"sharder, which shards the remap with its table, supports row_wise only, which TorchRec "
                    f"refuses on CPU; train them in one process, or choose another variant (e.g. 'hashed')")


def plan_model(
    model: nn.Module,
    world_size: int,
    device_type: str = "cpu",
    optimizer: Optional[EmbeddingOptimizer] = None,
    sharding_types: Optional[Sequence[str]] = None,
    per_table_sharding: Optional[Mapping[str, Sequence[str]]] = None,
    compute_kernel: str = "fused",
    local_world_size: Optional[int] = None,
    hbm_bytes: Optional[int] = None,
) -> ShardingPlan:
    """TorchRec's sharding plan for ``model`` on ``world_size`` ranks, without processes or a group.

    The same planner, topology and constraints as :func:`shard_model`, so ``recsys-emb plan`` shows the
    placement a run of that size gets. Build the model on ``meta`` to plan tables of any size: planning
    for ``device_type="cuda"`` needs no GPU. ``hbm_bytes``: each GPU's memory (TorchRec's default
    otherwise); the planner keeps 15% of it free and raises TorchRec's ``PlannerError`` when the tables
    do not fit.

    Example:
        >>> from recsys_emb.layer import EmbeddingLayer
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(8), cardinality=100)], device=torch.device("meta"))
        >>> plan = plan_model(layer, world_size=2)
        >>> [r["sharding_type"] for r in plan_report(plan, table_shapes(layer))]
        ['table_wise']
    """
    from torchrec.distributed.sharding_plan import get_default_sharders

    if world_size < 1:
        raise ValueError(f"world_size={world_size} must be >= 1")
    planner = _planner(model, optimizer, device_type, world_size, local_world_size or world_size,
                       sharding_types, per_table_sharding, compute_kernel, hbm_bytes)
    return planner.plan(model, get_default_sharders())


def table_shapes(module: nn.Module) -> Dict[str, Tuple[int, int]]:
    """``{table name: (rows, dim)}`` of every embedding table of a model (unsharded, meta or DMP)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out: Dict[str, Tuple[int, int]] = {}
    for c in collections_of(module):
        for cfg in collection_configs(c):
            out[cfg.name] = (int(cfg.num_embeddings), int(cfg.embedding_dim))
    if not out:  # sharded modules no longer hold configs: read the global sizes from the state dict
        for key, value in module.state_dict().items():
            m = TABLE_STATE_KEY.search(key)
            if m is not None:
                size = value.metadata().size if isinstance(value, ShardedTensor) else value.shape
                out[m.group(1)] = (int(size[0]), int(size[1]))
    return out


def plan_report(
    plan: Any,
    shapes: Optional[Mapping[str, Tuple[int, int]]] = None,
    optimizer: str = "none",
) -> List[Dict[str, Any]]:
    """One row per table: sharding type, kernel, and its shards as ``(rank, rows, cols, bytes)``.

    Args:
        plan: a DistributedModelParallel (its plan and table sizes are read from it) or a ShardingPlan.
        shapes: ``{table: (rows, dim)}`` (see :func:`table_shapes`); needed for a bare ShardingPlan.
        optimizer: embedding optimizer whose state each shard's bytes include (``none``: weights only).
    Returns:
        ``[{"module", "table", "sharding_type", "compute_kernel", "ranks", "shards", "bytes"}]`` where
        ``shards`` lists ``{"rank", "rows", "cols", "bytes"}`` (float32 weights + optimizer state) and a
        data-parallel table has one full copy per rank.
    """
    from recsys_emb.memory import OPTIMIZER_STATE_PER_ROW

    if isinstance(plan, DistributedModelParallel):
        shapes = shapes or table_shapes(plan)
        plan = plan.plan
    if optimizer not in OPTIMIZER_STATE_PER_ROW:
        raise ValueError(f"optimizer={optimizer!r} is not one of {sorted(OPTIMIZER_STATE_PER_ROW)}")
    per_row, per_param = OPTIMIZER_STATE_PER_ROW[optimizer]

    def nbytes(rows: int, cols: int) -> int:
        return 4 * (rows * cols + rows * per_row + rows * cols * per_param)

    rows_out: List[Dict[str, Any]] = []
    for module_path, module_plan in plan.plan.items():
        for table, ps in module_plan.items():
            shards = []
            if ps.sharding_spec is not None:
                for sh in ps.sharding_spec.shards:
                    r, c = (int(v) for v in sh.shard_sizes)
                    shards.append({"rank": int(sh.placement.rank()), "rows": r, "cols": c, "bytes": nbytes(r, c)})
            else:  # data parallel: replicated
                if shapes is None or table not in shapes:
                    raise ValueError(f"table {table!r} is replicated; pass its (rows, dim) in shapes")
                r, c = shapes[table]
                shards = [{"rank": int(k), "rows": r, "cols": c, "bytes": nbytes(r, c)} for k in (ps.ranks or [])]
            rows_out.append({
                "module": module_path,
                "table": table,
                "sharding_type": ps.sharding_type,
                "compute_kernel": ps.compute_kernel,
                "ranks": sorted({s["rank"] for s in shards} | set(ps.ranks or [])),
                "shards": shards,
                "bytes": sum(s["bytes"] for s in shards),
            })
    return rows_out


def rank_bytes(report: Sequence[Mapping[str, Any]], world_size: int) -> List[int]:
    """Table bytes held by each rank, from a :func:`plan_report`."""
    out = [0] * world_size
    for row in report:
        for s in row["shards"]:
            out[s["rank"]] += s["bytes"]
    return out


def format_plan(report: Sequence[Mapping[str, Any]], world_size: int) -> str:
    """The plan report as a text table (one line per table), then bytes per rank.

    Example:
        >>> rep = [{"table": "a", "sharding_type": "table_wise", "compute_kernel": "fused", "bytes": 3200,
        ...         "shards": [{"rank": 1, "rows": 100, "cols": 8, "bytes": 3200}]}]
        >>> print(format_plan(rep, 2).splitlines()[2])
        a      table_wise  fused   rank1:100x8                3.1 KiB
    """
    from recsys_emb.memory import format_bytes

    head = ("table", "sharding", "kernel", "shards (rank:rows x cols)", "bytes")
    lines = [(r["table"], r["sharding_type"], r["compute_kernel"],
              " ".join(f"rank{s['rank']}:{s['rows']}x{s['cols']}" for s in r["shards"]), format_bytes(r["bytes"]))
             for r in report]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + f"  {{:>{widths[-1]}}}"
    out = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    per_rank = rank_bytes(report, world_size)
    out.append("")
    out += [f"rank {k}: {format_bytes(b)} in {sum(1 for r in report for s in r['shards'] if s['rank'] == k)} shards"
            for k, b in enumerate(per_rank)]
    return "\n".join(out)
