"""All features' combines as one pass of column arithmetic (forward) and one pass back.

Composing per-feature outputs with autograd costs a split of the pooled tensor, a concatenation
of the outputs and, backward, a concatenation of the gradients: three full-width copies per step.
When every combine is column arithmetic (copy, mul, add, and ``proj``: a column range times a
weight matrix, as mixed-dimension blocks need), :class:`ColumnProgram` writes the output once
forward and the pooled gradient once backward; projections go straight into their output columns
(BLAS writes a strided block) and accumulate there.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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

    Ops (:data:`~recsys_emb.embeddings.base.ColumnOp`), applied in order:

    * ``("copy", (s,), d, w)``: ``out[:, d:d+w] = x[:, s:s+w]``;
    * ``("mul" | "add", (s1, s2), d, w)``: ``out[:, d:d+w] = x[:, s1:s1+w] * (+) x[:, s2:s2+w]``;
    * ``("proj", (s, k), d, w)``: ``out[:, d:d+w] (+)= x[:, s:s+k] @ W.T`` with the next weight
      ``W`` of shape ``(w, k)`` passed to :meth:`__call__`. A projection onto columns an earlier
      op wrote accumulates; every other op must be the first to write its columns.

    Every pooled column is read by exactly one op and every output column written.

    Example:
        >>> prog = ColumnProgram([("mul", (0, 2), 0, 2)], in_width=4, out_width=2)
        >>> p = torch.arange(8.0).view(2, 4)
        >>> prog(p).tolist()
        [[0.0, 3.0], [24.0, 35.0]]
        >>> proj = ColumnProgram([("copy", (0,), 0, 2), ("proj", (2, 2), 0, 2)], in_width=4, out_width=2)
        >>> proj(p, [torch.eye(2)]).tolist()
        [[2.0, 4.0], [10.0, 12.0]]
    """

    def __init__(self, ops: Sequence[ColumnOp], in_width: int, out_width: int) -> None:
        self.ops = _merge_copies(ops)
        self.in_width = in_width
        self.out_width = out_width
        covered = torch.zeros(in_width, dtype=torch.int32)
        written = torch.zeros(out_width, dtype=torch.int32)
        self.accumulates: List[bool] = []
        for op, srcs, dst, w in self.ops:
            if op not in ("copy", "mul", "add", "proj"):
                raise ValueError(f"unknown column op {op!r}")
            reads = [(srcs[0], srcs[1])] if op == "proj" else [(s, w) for s in srcs]
            for s, k in reads:
                covered[s:s + k] += 1
            before = written[dst:dst + w]
            if bool((before > 0).any()):
                if op != "proj" or not bool((before > 0).all()):
                    raise ValueError(f"column op {(op, srcs, dst, w)} writes output columns an earlier op wrote; "
                                     f"only a projection may accumulate onto them")
                self.accumulates.append(True)
            else:
                self.accumulates.append(False)
            written[dst:dst + w] += 1
        if not bool((covered == 1).all()) or not bool((written >= 1).all()):
            raise ValueError("column program must read every pooled column once and write every output column")
        self.n_weights = sum(op == "proj" for op, *_ in self.ops)
        self.needs_input = any(op in ("mul", "proj") for op, *_ in self.ops)
        self.is_identity = in_width == out_width and self.ops == [("copy", (0,), 0, out_width)]

    def forward(self, pooled: torch.Tensor, weights: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        out = pooled.new_empty(pooled.shape[0], self.out_width)
        wi = 0
        for (op, srcs, dst, w), acc in zip(self.ops, self.accumulates):
            o = out[:, dst:dst + w]
            if op == "copy":
                o.copy_(pooled[:, srcs[0]:srcs[0] + w])
            elif op == "mul":
                torch.mul(pooled[:, srcs[0]:srcs[0] + w], pooled[:, srcs[1]:srcs[1] + w], out=o)
            elif op == "add":
                torch.add(pooled[:, srcs[0]:srcs[0] + w], pooled[:, srcs[1]:srcs[1] + w], out=o)
            else:
                x, weight = pooled[:, srcs[0]:srcs[0] + srcs[1]], weights[wi]
                wi += 1
                if acc:
                    o.addmm_(x, weight.t())
                else:
                    torch.mm(x, weight.t(), out=o)
        return out

    def backward(self, grad: torch.Tensor, pooled: Optional[torch.Tensor], weights: Sequence[torch.Tensor] = ()
                 ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Gradients of the pooled tensor and of each projection weight."""
        g_in = grad.new_empty(grad.shape[0], self.in_width)
        g_weights: List[torch.Tensor] = []
        for op, srcs, dst, w in self.ops:
            g = grad[:, dst:dst + w]
            if op == "mul":
                assert pooled is not None
                a, b = srcs
                torch.mul(g, pooled[:, b:b + w], out=g_in[:, a:a + w])
                torch.mul(g, pooled[:, a:a + w], out=g_in[:, b:b + w])
            elif op == "proj":
                assert pooled is not None
                s, k = srcs
                weight = weights[len(g_weights)]
                torch.mm(g, weight, out=g_in[:, s:s + k])
                # (x^T g)^T, not g^T x: BLAS reads a narrow strided x far faster as the left operand
                g_weights.append((pooled[:, s:s + k].t() @ g).t())
            else:
                for s in srcs:
                    g_in[:, s:s + w].copy_(g)
        return g_in, g_weights

    def __call__(self, pooled: torch.Tensor, weights: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        if len(weights) != self.n_weights:
            raise ValueError(f"column program has {self.n_weights} projection(s) but got {len(weights)} weight(s)")
        if self.is_identity:  # the pooled layout already is the output layout
            return pooled
        return _ColumnCombine.apply(pooled, self, *weights)


class _ColumnCombine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pooled: torch.Tensor, program: ColumnProgram, *weights: torch.Tensor  # type: ignore[override]
                ) -> torch.Tensor:
        ctx.program = program
        ctx.save_for_backward(pooled if program.needs_input else None, *weights)
        return program.forward(pooled, weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        program: ColumnProgram = ctx.program
        pooled, *weights = ctx.saved_tensors
        g_in, g_weights = program.backward(grad, pooled, weights)
        return (g_in, None, *g_weights)
