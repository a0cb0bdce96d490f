"""All features' combines as one pass of column arithmetic (forward) and one pass back.

Composing per-feature outputs with autograd costs a split of the pooled tensor, a concatenation
of the outputs and, backward, a concatenation of the gradients: three full-width copies per step.
When every combine is plain column arithmetic (copy, mul, add), :class:`ColumnProgram` writes the
output once forward and the pooled gradient once backward.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from recsys_emb.embeddings.base import ColumnOp

__all__ = ["ColumnProgram"]


def _merge_copies(ops: Sequence[ColumnOp]) -> List[ColumnOp]:
    """Fuse runs of copies that are contiguous on both sides into one copy."""
    out: List[ColumnOp] = []
    for op in ops:
        if out and op[0] == "copy" and out[-1][0] == "copy":
            _, (s0,), d0, w0 = out[-1]
            _, (s1,), d1, w1 = op
            if s0 + w0 == s1 and d0 + w0 == d1:
                out[-1] = ("copy", (s0,), d0, w0 + w1)
                continue
        out.append(op)
    return out


class ColumnProgram:
    """A fixed list of column ops from a ``(B, in_width)`` pooled tensor to ``(B, out_width)``.

    Example:
        >>> prog = ColumnProgram([("mul", (0, 2), 0, 2)], in_width=4, out_width=2)
        >>> p = torch.arange(8.0).view(2, 4)
        >>> prog(p).tolist()
        [[0.0, 3.0], [24.0, 35.0]]
    """

    def __init__(self, ops: Sequence[ColumnOp], in_width: int, out_width: int) -> None:
        self.ops = _merge_copies(ops)
        self.in_width = in_width
        self.out_width = out_width
        covered = torch.zeros(in_width, dtype=torch.int32)
        written = torch.zeros(out_width, dtype=torch.int32)
        for op, srcs, dst, w in self.ops:
            if op not in ("copy", "mul", "add"):
                raise ValueError(f"unknown column op {op!r}")
            for s in srcs:
                covered[s:s + w] += 1
            written[dst:dst + w] += 1
        if not bool((covered == 1).all()) or not bool((written == 1).all()):
            raise ValueError("column program must read every pooled column once and write every output column once")
        self.needs_input = any(op == "mul" for op, *_ in self.ops)
        self.is_identity = in_width == out_width and self.ops == [("copy", (0,), 0, out_width)]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        out = pooled.new_empty(pooled.shape[0], self.out_width)
        for op, srcs, dst, w in self.ops:
            o = out[:, dst:dst + w]
            if op == "copy":
                o.copy_(pooled[:, srcs[0]:srcs[0] + w])
            elif op == "mul":
                torch.mul(pooled[:, srcs[0]:srcs[0] + w], pooled[:, srcs[1]:srcs[1] + w], out=o)
            else:
                torch.add(pooled[:, srcs[0]:srcs[0] + w], pooled[:, srcs[1]:srcs[1] + w], out=o)
        return out

    def backward(self, grad: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        g_in = grad.new_empty(grad.shape[0], self.in_width)
        for op, srcs, dst, w in self.ops:
            g = grad[:, dst:dst + w]
            if op == "mul":
                a, b = srcs
                torch.mul(g, pooled[:, b:b + w], out=g_in[:, a:a + w])
                torch.mul(g, pooled[:, a:a + w], out=g_in[:, b:b + w])
            else:
                for s in srcs:
                    g_in[:, s:s + w].copy_(g)
        return g_in

    def __call__(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.is_identity:  # the pooled layout already is the output layout
            return pooled
        return _ColumnCombine.apply(pooled, self)


class _ColumnCombine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pooled: torch.Tensor, program: ColumnProgram) -> torch.Tensor:  # type: ignore[override]
        ctx.program = program
        if program.needs_input:
            ctx.save_for_backward(pooled)
        return program.forward(pooled)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[torch.Tensor, None]:  # type: ignore[override]
        program: ColumnProgram = ctx.program
        pooled = ctx.saved_tensors[0] if program.needs_input else None
        return program.backward(grad, pooled), None  # type: ignore[arg-type]
