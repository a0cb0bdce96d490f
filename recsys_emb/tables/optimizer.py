"""The fused optimizer of the embedding tables: one type for both table backends.

TorchRec's fused kernels (FBGEMM) and the table-batched single-device kernel both apply the update to
the rows a batch touched inside the backward pass, so no gradient the size of a table ever exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Tuple

from recsys_emb.errors import ConfigError

__all__ = ["EMBEDDING_OPTIMIZERS", "CPU_FUSED_OPTIMIZERS", "TABLE_BATCHED_OPTIMIZERS", "EmbeddingOptimizer"]

EMBEDDING_OPTIMIZERS: Tuple[str, ...] = ("sgd", "rowwise_adagrad", "adagrad", "adam")
"""Optimizers TorchRec fuses into the embedding backward (FBGEMM kernels), by config name."""

CPU_FUSED_OPTIMIZERS: Tuple[str, ...] = ("sgd", "rowwise_adagrad", "adagrad")
"""FBGEMM's CPU kernels implement these; fused Adam exists only on GPUs."""

TABLE_BATCHED_OPTIMIZERS: Tuple[str, ...] = ("sgd", "rowwise_adagrad")
"""What the table-batched kernel (:mod:`recsys_emb.tables.table_batched`) implements."""

_TABLE_BATCHED_KWARGS = {"eps": 1e-10, "initial_accumulator_value": 0.0}


@dataclass(frozen=True)
class EmbeddingOptimizer:
    """The update applied to the rows a batch touched, inside the backward pass.

    Attributes:
        name: ``sgd`` (``w -= lr * g``, duplicates of a row summed first, as autograd would),
            ``rowwise_adagrad`` (one accumulator per row: ``s += mean(g**2)``,
            ``w -= lr * g / (sqrt(s) + eps)``; FBGEMM's and DLRM's default for embeddings),
            ``adagrad`` or ``adam`` (TorchRec only; fused Adam on GPUs only).
        lr: learning rate (> 0).
        kwargs: further arguments of the optimizer (TorchRec passes them to FBGEMM; the table-batched
            kernel takes ``eps`` and ``initial_accumulator_value`` of row-wise Adagrad, defaults
            ``1e-10`` and ``0.0`` as TorchRec's).

    Example:
        >>> EmbeddingOptimizer("rowwise_adagrad", lr=0.05).table_batched_kwargs()
        {'eps': 1e-10, 'initial_accumulator_value': 0.0}
    """

    name: str = "rowwise_adagrad"
    lr: float = 0.01
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in EMBEDDING_OPTIMIZERS:
            raise ConfigError(f"embedding optimizer {self.name!r} is not one of {list(EMBEDDING_OPTIMIZERS)}")
        if not self.lr > 0:
            raise ConfigError(f"embedding optimizer lr={self.lr} must be > 0")

    def table_batched_kwargs(self) -> Mapping[str, float]:
        """``eps`` and ``initial_accumulator_value`` for the table-batched kernel (checked)."""
        if self.name not in TABLE_BATCHED_OPTIMIZERS:
            raise ConfigError(f"embedding optimizer {self.name!r}: the table-batched kernel implements "
                              f"{list(TABLE_BATCHED_OPTIMIZERS)}; use one of them, or TorchRec's kernels")
        unknown = sorted(set(self.kwargs) - set(_TABLE_BATCHED_KWARGS))
        if unknown:
            raise ConfigError(f"embedding optimizer kwargs {unknown} are not taken by the table-batched kernel; "
                              f"it takes {sorted(_TABLE_BATCHED_KWARGS)}")
        out = {**_TABLE_BATCHED_KWARGS, **{k: float(v) for k, v in self.kwargs.items()}}
        if not out["eps"] > 0:
            raise ConfigError(f"embedding optimizer eps={out['eps']} must be > 0")
        return out
