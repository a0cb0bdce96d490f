"""Parameter and byte accounting per table, per feature and in total -- from specs alone (nothing
built, so a search can reject an over-budget trial before training) and from a built module.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from recsys_emb.specs import FeatureSpec, Robe, TableDef, Unified, validate_feature_set

__all__ = ["OPTIMIZER_STATE_PER_ROW", "TABLE_DTYPES", "TableMemory", "MemoryReport", "memory_from_specs",
           "memory_from_module", "format_bytes", "available_memory"]

OPTIMIZER_STATE_PER_ROW: Dict[str, Tuple[int, int]] = {
    # (extra floats per row, extra floats per parameter) of optimizer state for embedding tables
    "none": (0, 0),
    "sgd": (0, 0),
    "rowwise_adagrad": (1, 0),
    "adagrad": (0, 1),
    "adam": (0, 2),
}


TABLE_DTYPES: Dict[str, Tuple[int, int]] = {
    # (bytes per element, extra bytes per row) of a table's storage for inference
    "fp32": (4, 0),
    "fp16": (2, 0),
    "int8": (1, 8),  # row-wise: uint8 codes, and an fp32 scale and bias per row (FBGEMM's inference layout)
}
"""Table storage for inference (:func:`recsys_emb.inference.inference_module`): bytes per element and per row."""


@dataclass(frozen=True)
class TableMemory:
    """One physical table: shape, parameters, bytes, and the features that read it."""

    name: str
    rows: int
    dim: int
    features: Tuple[str, ...]
    bytes_per_param: int = 4
    optimizer_floats: int = 0
    owner: str = ""
    """Who the table's memory is attributed to: its first feature, or the unified group's name."""
    row_bytes: int = 0
    """Bytes stored per row beside the elements (8 for int8 row-wise tables: a scale and a bias)."""

    @property
    def params(self) -> int:
        return self.rows * self.dim

    @property
    def bytes(self) -> int:
        """Weight bytes (``params * bytes_per_param + rows * row_bytes``), without optimizer state."""
        return self.params * self.bytes_per_param + self.rows * self.row_bytes

    @property
    def optimizer_bytes(self) -> int:
        return self.optimizer_floats * 4


@dataclass(frozen=True)
class MemoryReport:
    """Memory of an embedding layer. ``per_feature`` attributes a table to the feature that owns it
    (a feature with ``shared_with`` owns 0) and a unified table to its group name (one entry beside
    the features); dense parameters (projections, probe weights) count for the feature that has them."""

    tables: Tuple[TableMemory, ...]
    dense_params: Dict[str, int] = field(default_factory=dict)
    bytes_per_param: int = 4

    @property
    def table_params(self) -> int:
        return sum(t.params for t in self.tables)

    @property
    def params(self) -> int:
        """All trainable parameters: tables plus dense parameters."""
        return self.table_params + sum(self.dense_params.values())

    @property
    def bytes(self) -> int:
        """Weight bytes of all trainable parameters: every table as stored (its own ``bytes``) and the dense
        parameters at ``bytes_per_param``."""
        return sum(t.bytes for t in self.tables) + sum(self.dense_params.values()) * self.bytes_per_param

    @property
    def optimizer_bytes(self) -> int:
        return sum(t.optimizer_bytes for t in self.tables)

    @property
    def per_feature_params(self) -> Dict[str, int]:
        out: Dict[str, int] = OrderedDict((name, 0) for name in self.dense_params)
        for t in self.tables:
            out[t.owner] = out.get(t.owner, 0) + t.params
        for name, n in self.dense_params.items():
            out[name] = out.get(name, 0) + n
        return dict(out)

    @property
    def per_feature_bytes(self) -> Dict[str, int]:
        out: Dict[str, int] = OrderedDict((name, 0) for name in self.dense_params)
        for t in self.tables:
            out[t.owner] = out.get(t.owner, 0) + t.bytes
        for name, n in self.dense_params.items():
            out[name] = out.get(name, 0) + n * self.bytes_per_param
        return dict(out)

    def summary(self) -> Dict[str, object]:
        return {"params": self.params, "bytes": self.bytes, "tables": len(self.tables),
                "optimizer_bytes": self.optimizer_bytes}


def _optimizer_floats(rows: int, dim: int, optimizer: str) -> int:
    if optimizer not in OPTIMIZER_STATE_PER_ROW:
        raise ValueError(f"optimizer={optimizer!r} is not one of {sorted(OPTIMIZER_STATE_PER_ROW)}")
    per_row, per_param = OPTIMIZER_STATE_PER_ROW[optimizer]
    return rows * per_row + rows * dim * per_param


def memory_from_specs(
    features: Sequence[FeatureSpec], bytes_per_param: int = 4, optimizer: str = "none",
    table_dtype: Optional[str] = None,
) -> MemoryReport:
    """Memory of the layer these specs would build, computed without building anything.

    Args:
        features: the layer's feature specs.
        bytes_per_param: 4 for fp32 tables, 2 for fp16/bf16 (tables and dense parameters alike).
        optimizer: embedding optimizer whose state to count in ``optimizer_bytes``
            (``none``, ``sgd``, ``rowwise_adagrad``, ``adagrad``, ``adam``).
        table_dtype: the tables' storage for inference, one of :data:`TABLE_DTYPES` (``fp32``: 4 bytes per
            element; ``fp16``: 2; ``int8``: 1 byte per element and 8 per row, row-wise quantised); dense
            parameters stay at ``bytes_per_param``. None: tables at ``bytes_per_param`` too.

    Example:
        >>> from recsys_emb.specs import Full
        >>> memory_from_specs([FeatureSpec("a", Full(dim=8), cardinality=100)]).bytes
        3200
        >>> memory_from_specs([FeatureSpec("a", Full(dim=8), cardinality=100)], table_dtype="int8").bytes
        1600
    """
    validate_feature_set(features)
    if table_dtype is None:
        element, row_bytes = bytes_per_param, 0
    elif table_dtype in TABLE_DTYPES:
        element, row_bytes = TABLE_DTYPES[table_dtype]
    else:
        raise ValueError(f"table_dtype={table_dtype!r} is not one of {sorted(TABLE_DTYPES)} (or None)")
    readers: "OrderedDict[str, List[str]]" = OrderedDict()
    defs: Dict[str, TableDef] = {}
    for f in features:
        for t in f.tables():
            if f.shared_with is None:
                defs.setdefault(t.name, t)
            readers.setdefault(t.name, []).append(f.name)
    unified = {f.embedding.group.name for f in features if isinstance(f.embedding, (Unified, Robe))}
    tables = tuple(
        TableMemory(t.name, t.rows, t.dim, tuple(readers[t.name]), element,
                    _optimizer_floats(t.rows, t.dim, optimizer),
                    owner=t.name if t.name in unified else readers[t.name][0], row_bytes=row_bytes)
        for t in defs.values()
    )
    dense = {f.name: f.embedding.dense_params(f.cardinality) if f.shared_with is None else 0 for f in features}
    return MemoryReport(tables=tables, dense_params=dense, bytes_per_param=bytes_per_param)


def memory_from_module(module: nn.Module, optimizer: str = "none") -> MemoryReport:
    """Memory of a built (Sequence)EmbeddingLayer, read from its actual parameter tensors.

    Works on unsharded layers (any device, ``meta`` included). For a model holding several layers,
    call it on each layer.
    """
    from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer  # local: memory.py stays importable without torchrec
    from recsys_emb.tables.table_batched import TableBatchedEmbeddingBags

    if not isinstance(module, (EmbeddingLayer, SequenceEmbeddingLayer)):
        raise TypeError(f"memory_from_module expects an EmbeddingLayer or SequenceEmbeddingLayer, "
                        f"got {type(module).__name__}")
    unified = {f.embedding.group.name for f in module.features if isinstance(f.embedding, (Unified, Robe))}
    readers: Dict[str, List[str]] = {}
    for f in module.features:
        for vf in module.variant(f.name).virtual_features():
            names = readers.setdefault(vf.table, [])
            if f.name not in names:
                names.append(f.name)
    found: Dict[str, TableMemory] = {}
    bytes_per_param = 4
    for collection in module.collections():
        named = collection.named_tables() if isinstance(collection, TableBatchedEmbeddingBags) else [
            (name.split(".")[-2], p) for name, p in collection.named_parameters()]
        for table, p in named:
            rows, dim = p.shape
            bytes_per_param = p.element_size()
            found[table] = TableMemory(table, rows, dim, tuple(readers[table]), bytes_per_param,
                                       _optimizer_floats(rows, dim, optimizer),
                                       owner=table if table in unified else readers[table][0])
    tables = [found.pop(t.name) for t in module.table_defs] + list(found.values())
    dense: Dict[str, int] = {}
    seen: set = set()
    for f in module.features:  # a sharing feature's tied parameters count once, for the owner
        params = [p for p in module.variants[f.name].parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        dense[f.name] = sum(p.numel() for p in params)
    return MemoryReport(tables=tuple(tables), dense_params=dense, bytes_per_param=bytes_per_param)


def format_bytes(n: float) -> str:
    """Human-readable bytes (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _cgroup_headroom() -> Optional[int]:
    """Bytes this process's cgroup (v2) may still use (``memory.max - memory.current``), or None."""
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(open("/sys/fs/cgroup/memory.current").read().strip()))
    except (OSError, ValueError):
        return None


def available_memory() -> Optional[int]:
    """Bytes of host memory a new allocation can take now: ``MemAvailable`` of ``/proc/meminfo`` (else the
    free pages of ``os.sysconf``), lowered to the cgroup's headroom where a cgroup v2 limit is set; None
    where neither is known. What the size checks compare a model's parameters with before allocating them.

    Example:
        >>> n = available_memory()
        >>> n is None or n > 0
        True
    """
    found: Optional[int] = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    headroom = _cgroup_headroom()
    if headroom is not None:
        found = headroom if found is None else min(found, headroom)
    return found
