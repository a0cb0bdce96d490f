"""Embedding tables as stored for inference: fp32, fp16, or int8 row-wise quantised, dequantised on lookup.

int8 row-wise is FBGEMM's inference layout: each row keeps ``dim`` uint8 codes and an fp32 scale and bias,
``scale = (max - min) / 255``, ``bias = min`` over the row, ``code = round((w - bias) / scale)``; a lookup
returns ``code * scale + bias``, within ``scale / 2`` of the trained weight. Bytes per table are what
:func:`recsys_emb.memory.memory_from_specs` counts for ``table_dtype`` (:data:`recsys_emb.memory.TABLE_DTYPES`).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from recsys_emb.errors import ConfigError
from recsys_emb.memory import TABLE_DTYPES

__all__ = ["StoredTable", "quantize_rowwise", "dequantize_rowwise", "check_table_dtype"]


def check_table_dtype(table_dtype: str) -> str:
    """``table_dtype`` if it is one of :data:`~recsys_emb.memory.TABLE_DTYPES`, else a
    :class:`~recsys_emb.errors.ConfigError` naming the choices."""
    if table_dtype not in TABLE_DTYPES:
        raise ConfigError(f"table_dtype={table_dtype!r} is not a table storage; choose one of "
                          f"{', '.join(TABLE_DTYPES)}")
    return table_dtype


def quantize_rowwise(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row-wise int8 quantisation of a ``(rows, dim)`` float table.

    Returns:
        ``codes`` uint8 ``(rows, dim)`` and ``scale_bias`` float32 ``(rows, 2)`` (``scale = (max - min) / 255``,
        ``bias = min`` of each row; a constant row gets scale 0 and is restored exactly).

    Example:
        >>> codes, sb = quantize_rowwise(torch.tensor([[10.0, 12.0, 265.0]]))
        >>> codes.tolist(), sb.tolist(), dequantize_rowwise(codes, sb).tolist()
        ([[0, 2, 255]], [[1.0, 10.0]], [[10.0, 12.0, 265.0]])
    """
    w = weight.detach().to(torch.float32)
    lo = w.min(dim=1).values if w.shape[1] else w.new_zeros(w.shape[0])
    hi = w.max(dim=1).values if w.shape[1] else w.new_zeros(w.shape[0])
    scale = (hi - lo) / 255.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round((w - lo.unsqueeze(1)) / safe.unsqueeze(1)).clamp_(0, 255).to(torch.uint8)
    return codes, torch.stack([scale, lo], dim=1).contiguous()


def dequantize_rowwise(codes: torch.Tensor, scale_bias: torch.Tensor) -> torch.Tensor:
    """``codes (n, dim)`` uint8 and their rows' ``scale_bias (n, 2)`` -> float32 ``(n, dim)``."""
    return codes.to(torch.float32) * scale_bias[:, :1] + scale_bias[:, 1:]


class StoredTable(nn.Module):
    """One ``(rows, dim)`` table in ``table_dtype`` storage; ``forward(rows (n,) int64) -> (n, dim)`` float32.

    The storage lives in buffers (no gradients, no optimizer state): ``weight`` (fp32 / fp16), or ``codes``
    and ``scale_bias`` (int8). Row indices are not checked: an index outside the table is an indexing
    error of the lookup.

    Example:
        >>> t = StoredTable(torch.randn(10, 4), "int8")
        >>> t(torch.tensor([3, 3, 9])).shape, t.nbytes
        (torch.Size([3, 4]), 120)
    """

    codes: torch.Tensor  # buffers, by storage
    scale_bias: torch.Tensor
    weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, table_dtype: str = "fp32") -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"StoredTable takes a (rows, dim) table; got shape {tuple(weight.shape)}")
        self.table_dtype = check_table_dtype(table_dtype)
        self.rows, self.dim = (int(s) for s in weight.shape)
        w = weight.detach()
        if table_dtype == "int8":
            codes, scale_bias = quantize_rowwise(w)
            self.register_buffer("codes", codes)
            self.register_buffer("scale_bias", scale_bias)
        else:
            self.register_buffer("weight", w.to(torch.float32 if table_dtype == "fp32" else torch.float16).clone())

    @property
    def nbytes(self) -> int:
        """Bytes held (what :func:`~recsys_emb.memory.memory_from_specs` counts for this dtype)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def dequantized(self) -> torch.Tensor:
        """The whole table as float32 ``(rows, dim)`` (what every lookup reads)."""
        return self(torch.arange(self.rows, device=next(self.buffers()).device))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if self.table_dtype == "int8":
            return dequantize_rowwise(self.codes.index_select(0, rows), self.scale_bias.index_select(0, rows))
        out = self.weight.index_select(0, rows)
        return out if self.table_dtype == "fp32" else out.to(torch.float32)

    def extra_repr(self) -> str:
        return f"{self.rows}, {self.dim}, {self.table_dtype}"
