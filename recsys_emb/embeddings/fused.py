"""Executes the plans (:mod:`recsys_emb.embeddings.plans`) of all features of a layer at once.

:class:`RemapProgram`: every feature whose variant has a remap plan is remapped in one set of tensor ops
per plan kind and step (one vocabulary check for all identity features, one hashing pass for all
features with the same number of probes, one division for all quotient-remainder features, one
``bucketize`` / sort / ``bincount`` for all frequency-block features) instead of one set per feature.

:class:`ColumnProgram`: every feature's combine as one pass of column arithmetic forward and one pass
back. Composing per-feature outputs with autograd costs a split of the pooled tensor, a concatenation
of the outputs and, backward, a concatenation of the gradients: three full-width copies per step.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.embeddings.plans import COLUMN_OPS, Blocks, ColumnOp, DivMod, Hash, Identity, RemapPlan
from recsys_emb.errors import InvalidInputError
from recsys_emb.hashing import bucket_rows

__all__ = ["Part", "RemapProgram", "ColumnProgram", "run_plan", "check_vocabulary", "format_bad_values"]

Part = Tuple[torch.Tensor, torch.Tensor, Optional[int]]
"""One virtual feature's ``(values, lengths, number of values)``; the count is ``None`` where it is
not known without reading the values (a device sync)."""


def format_bad_values(feature: str, values: torch.Tensor, bad: torch.Tensor, rule: str, fix: str) -> str:
    """Error text naming the feature, the first offending ids and their positions."""
    idx = bad.nonzero().flatten()
    shown = idx[:5].tolist()
    vals = values[idx[:5]].tolist()
    pairs = ", ".join(f"{v} (value #{i})" for v, i in zip(vals, shown))
    more = f" and {idx.numel() - len(shown)} more" if idx.numel() > len(shown) else ""
    return f"feature {feature!r}: {idx.numel()} id(s) break {rule}: {pairs}{more}. {fix}"


def check_vocabulary(feature: str, ids: torch.Tensor, cardinality: int) -> None:
    """Raise :class:`~recsys_emb.errors.InvalidInputError` naming the feature and its ids outside
    ``[0, cardinality)``."""
    if not ids.numel():
        return
    bad = (ids < 0) | (ids >= cardinality)
    if bool(bad.any()):
        raise InvalidInputError(format_bad_values(
            feature, ids, bad, f"0 <= id < cardinality={cardinality}",
            "Fix the vocabulary (raise cardinality, or map unseen ids to an out-of-vocabulary id at "
            "preprocessing), or use a 'hashed' embedding, which accepts any int64 id."))


def _check_all(names: Sequence[str], cards: Sequence[Optional[int]], ids: Sequence[torch.Tensor], x: torch.Tensor,
               value_card: Optional[torch.Tensor]) -> None:
    """One comparison over the concatenated ids ``x`` of several features (``value_card``: each id's
    feature cardinality); on failure the first feature with a bad id is named. Features whose
    cardinality is None are not checked."""
    if value_card is None or not x.numel():
        return
    if bool(((x < 0) | (x >= value_card)).any()):
        for name, card, i in zip(names, cards, ids):
            if card is not None:
                check_vocabulary(name, i, card)


class _PerValue:
    """Per-feature constants repeated once per id, for ids concatenated feature after feature; rebuilt
    only when the per-feature id counts (or the device) change, which for one id per field and
    sample is never."""

    def __init__(self) -> None:
        self._key: Optional[Tuple[Tuple[int, ...], torch.device]] = None
        self._values: List[torch.Tensor] = []

    def __call__(self, per_feature: Sequence[torch.Tensor], counts: Sequence[int]) -> List[torch.Tensor]:
        key = (tuple(counts), per_feature[0].device)
        if key != self._key:
            sizes = torch.tensor(list(counts), device=per_feature[0].device)
            n = sum(counts)
            self._values = [torch.repeat_interleave(c, sizes, dim=0, output_size=n) for c in per_feature]
            self._key = key
        return self._values


def _cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


class RemapProgram(nn.Module):
    """The remap of every feature that has a plan, in one pass per plan kind.

    Args:
        plans: one entry per feature of the layer, in feature order: its plan, or ``None`` (the layer
            calls that variant's own ``remap``).

    ``forward(ids, lengths)`` takes every feature's ids ``(n_f,)`` and bag lengths ``(B,)`` and returns
    ``{feature position: [Part per virtual feature]}`` for the planned features. The per-feature
    constants live in buffers (they follow the module across devices) and are not saved.

    Example:
        >>> prog = RemapProgram([Identity("a", 10), DivMod("b", 4, 10)])
        >>> out = prog([torch.tensor([3]), torch.tensor([9])], [torch.tensor([1]), torch.tensor([1])])
        >>> [v.tolist() for v, _, _ in out[1]]
        [[2], [1]]
    """

    # buffers (registered only for the plan kinds present)
    _identity_card: torch.Tensor
    _divmod_card: torch.Tensor
    _divmod_modulus: torch.Tensor
    _block_starts: torch.Tensor
    _block_card: torch.Tensor
    _block_offset: torch.Tensor

    def __init__(self, plans: Sequence[Optional[RemapPlan]]) -> None:
        super().__init__()
        self.plans = list(plans)
        self._identity = [i for i, p in enumerate(plans) if isinstance(p, Identity)]
        self._divmod = [i for i, p in enumerate(plans) if isinstance(p, DivMod)]
        self._blocks = [i for i, p in enumerate(plans) if isinstance(p, Blocks)]
        hashed: Dict[int, List[int]] = {}
        for i, p in enumerate(plans):
            if isinstance(p, Hash):
                hashed.setdefault(p.probes, []).append(i)
        self._hash = list(hashed.items())
        self._memo: Dict[str, _PerValue] = {}

        def card_tensor(members: List[int]) -> torch.Tensor:
            cards = [self.plans[i].cardinality for i in members]  # type: ignore[union-attr]
            # an unchecked feature gets the largest bound: only its negative ids could fail, and the
            # checks below skip features without a cardinality
            return torch.tensor([c if c is not None else (1 << 62) for c in cards], dtype=torch.int64)

        if self._identity:
            self.register_buffer("_identity_card", card_tensor(self._identity), persistent=False)
        if self._divmod:
            self.register_buffer("_divmod_card", card_tensor(self._divmod), persistent=False)
            self.register_buffer("_divmod_modulus", torch.tensor(
                [self.plans[i].modulus for i in self._divmod], dtype=torch.int64), persistent=False)  # type: ignore[union-attr]
        if self._blocks:
            blocks: List[Blocks] = [self.plans[i] for i in self._blocks]  # type: ignore[misc]
            cards = [b.cardinality for b in blocks]
            offsets = [sum(cards[:j]) for j in range(len(cards))]
            # ids of feature j are shifted into one global rank space starting at the earlier features'
            # total cardinality, so one bucketize over all block starts finds every id's block
            self.register_buffer("_block_starts", torch.tensor(
                [s + o for b, o in zip(blocks, offsets) for s in b.starts], dtype=torch.int64), persistent=False)
            self.register_buffer("_block_card", torch.tensor(cards, dtype=torch.int64), persistent=False)
            self.register_buffer("_block_offset", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        for probes, members in self._hash:
            plans_k: List[Hash] = [self.plans[i] for i in members]  # type: ignore[misc]
            self.register_buffer(f"_hash_keys_{probes}", torch.stack([p.keys.detach().cpu() for p in plans_k]),
                                 persistent=False)
            self.register_buffer(f"_hash_buckets_{probes}", torch.tensor([p.buckets for p in plans_k],
                                                                         dtype=torch.int64), persistent=False)
            if any(p.oov_id is not None for p in plans_k):  # per feature: OOV id, its row, whether it has one
                self.register_buffer(f"_hash_oov_{probes}", torch.tensor(
                    [[p.oov_id or 0, p.oov_row or 0, p.oov_id is not None] for p in plans_k], dtype=torch.int64),
                    persistent=False)

    def _repeat(self, name: str, per_feature: Sequence[torch.Tensor], ids: Sequence[torch.Tensor]
                ) -> List[torch.Tensor]:
        memo = self._memo.setdefault(name, _PerValue())
        return memo(per_feature, [int(t.numel()) for t in ids])

    def forward(self, ids: Sequence[torch.Tensor], lengths: Sequence[torch.Tensor]) -> Dict[int, List[Part]]:
        out: Dict[int, List[Part]] = {}
        if self._identity:
            self._run_identity(ids, lengths, out)
        if self._divmod:
            self._run_divmod(ids, lengths, out)
        if self._blocks:
            self._run_blocks(ids, lengths, out)
        for probes, members in self._hash:
            self._run_hash(probes, members, ids, lengths, out)
        return out

    def _names_cards(self, members: List[int]) -> Tuple[List[str], List[Optional[int]]]:
        plans = [self.plans[i] for i in members]
        return [p.feature for p in plans], [p.cardinality for p in plans]  # type: ignore[union-attr]

    def _run_identity(self, ids, lengths, out) -> None:
        members = self._identity
        names, cards = self._names_cards(members)
        if any(c is not None for c in cards):
            mine = [ids[i] for i in members]
            if len(members) == 1:
                check_vocabulary(names[0], mine[0], cards[0])  # type: ignore[arg-type]
            elif sum(int(t.numel()) for t in mine):
                (card,) = self._repeat("identity", [self._identity_card], mine)
                _check_all(names, cards, mine, torch.cat(mine), card)
        for i in members:
            out[i] = [(ids[i], lengths[i], int(ids[i].numel()))]

    def _run_divmod(self, ids, lengths, out) -> None:
        members = self._divmod
        mine = [ids[i] for i in members]
        counts = [int(t.numel()) for t in mine]
        x = _cat(mine)
        card, modulus = self._repeat("divmod", [self._divmod_card, self._divmod_modulus], mine)
        names, cards = self._names_cards(members)
        if any(c is not None for c in cards):
            _check_all(names, cards, mine, x, card)
        q = torch.div(x, modulus, rounding_mode="floor")
        r = x - q * modulus
        for i, a, b, n in zip(members, q.split(counts), r.split(counts), counts):
            out[i] = [(a, lengths[i], n), (b, lengths[i], n)]

    def _run_blocks(self, ids, lengths, out) -> None:
        members = self._blocks
        plans: List[Blocks] = [self.plans[i] for i in members]  # type: ignore[misc]
        mine = [ids[i] for i in members]
        x = _cat(mine)
        per_card, per_offset = self._repeat("blocks", [self._block_card, self._block_offset], mine)
        checked = [p.cardinality if p.check else None for p in plans]
        if any(c is not None for c in checked):
            _check_all([p.feature for p in plans], checked, mine, x, per_card)
        starts = self._block_starts
        gx = x + per_offset
        block = torch.bucketize(gx, starts, right=True) - 1  # global block index
        local = gx - starts[block]
        lens = torch.stack([lengths[i] for i in members])  # (F, B)
        batch = lens.shape[1]
        n_blocks = int(starts.numel())
        bag = torch.repeat_interleave(torch.arange(lens.numel(), device=x.device), lens.flatten().long(),
                                      output_size=x.numel()) % batch
        block_lengths = torch.bincount(block * batch + bag, minlength=n_blocks * batch).view(n_blocks, batch)
        values = local[torch.argsort(block, stable=True)]  # block by block, bag order kept inside a block
        per_block = values.split(block_lengths.sum(1).tolist())
        per_block_lengths = block_lengths.to(lens.dtype).unbind(0)
        b = 0
        for i, p in zip(members, plans):
            k = len(p.starts)
            out[i] = [(v, l, None) for v, l in zip(per_block[b:b + k], per_block_lengths[b:b + k])]
            b += k

    def _run_hash(self, probes: int, members: List[int], ids, lengths, out) -> None:
        mine = [ids[i] for i in members]
        counts = [int(t.numel()) for t in mine]
        per_feature = [getattr(self, f"_hash_keys_{probes}"), getattr(self, f"_hash_buckets_{probes}")]
        oov = getattr(self, f"_hash_oov_{probes}", None)
        if oov is not None:
            per_feature.append(oov)
        per_value = self._repeat(f"hash{probes}", per_feature, mine)
        x = _cat(mine)
        rows = bucket_rows(x, per_value[0], per_value[1])
        if oov is not None:  # one pass over every feature's ids: the OOV id of a feature that has one -> its row
            oov_v = per_value[2]
            hit = (x == oov_v[:, 0]) & oov_v[:, 2].bool()
            rows = torch.where(hit.unsqueeze(1), oov_v[:, 1:2], rows)
        for i, r, n in zip(members, rows.split(counts), counts):  # each (n_f, probes)
            plan: Hash = self.plans[i]  # type: ignore[assignment]
            out[i] = [(v, l, int(v.numel())) for v, l in plan.split_rows(r, lengths[i])]


def run_plan(plan: RemapPlan, ids: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """One feature's remap by its plan: ``(values, lengths)`` per virtual feature (what the layer
    computes for all features at once)."""
    if isinstance(plan, Hash):  # the buffers of a one-feature program would copy the keys to the CPU
        return [(v, l) for v, l, _ in plan.parts(ids, lengths)]
    parts = RemapProgram([plan]).to(ids.device)([ids], [lengths])[0]
    return [(v, l) for v, l, _ in parts]


# ----------------------------------------------------------------------------------------------- combine
def _merge_copies(ops: Sequence[ColumnOp]) -> List[ColumnOp]:
    """Fuse runs of copies that are contiguous on both sides into one copy."""
    out: List[ColumnOp] = []
    for op in ops:
        if out and op.op == "copy" and out[-1].op == "copy":
            prev = out[-1]
            if prev.sources[0] + prev.width == op.sources[0] and prev.dst + prev.width == op.dst:
                out[-1] = ColumnOp("copy", prev.sources, prev.dst, prev.width + op.width)
                continue
        out.append(op)
    return out


class ColumnProgram:
    """A fixed list of column ops (:class:`~recsys_emb.embeddings.plans.ColumnOp`) from a
    ``(B, in_width)`` pooled tensor to ``(B, out_width)``, applied in order. A projection onto columns
    an earlier op wrote accumulates; every other op must be the first to write its columns. Every
    pooled column is read by exactly one op and every output column written.

    Example:
        >>> prog = ColumnProgram([("mul", (0, 2), 0, 2)], in_width=4, out_width=2)
        >>> p = torch.arange(8.0).view(2, 4)
        >>> prog(p).tolist()
        [[0.0, 3.0], [24.0, 35.0]]
        >>> proj = ColumnProgram([("copy", (0,), 0, 2), ("proj", (2, 2), 0, 2)], in_width=4, out_width=2)
        >>> proj(p, [torch.eye(2)]).tolist()
        [[2.0, 4.0], [10.0, 12.0]]
    """

    def __init__(self, ops: Sequence[Sequence], in_width: int, out_width: int) -> None:
        self.ops = _merge_copies([op if isinstance(op, ColumnOp) else ColumnOp(*op) for op in ops])
        self.in_width = in_width
        self.out_width = out_width
        covered = torch.zeros(in_width, dtype=torch.int32)
        written = torch.zeros(out_width, dtype=torch.int32)
        self.accumulates: List[bool] = []
        for op in self.ops:
            if op.op not in COLUMN_OPS:
                raise ValueError(f"unknown column op {op.op!r}; ops are {COLUMN_OPS}")
            reads = [(op.sources[0], op.sources[1])] if op.op == "proj" else [(s, op.width) for s in op.sources]
            for s, k in reads:
                covered[s:s + k] += 1
            before = written[op.dst:op.dst + op.width]
            if bool((before > 0).any()):
                if op.op != "proj" or not bool((before > 0).all()):
                    raise ValueError(f"column op {tuple(op[:4])} writes output columns an earlier op wrote; only a "
                                     f"projection may accumulate onto them")
                self.accumulates.append(True)
            else:
                self.accumulates.append(False)
            written[op.dst:op.dst + op.width] += 1
        if not bool((covered == 1).all()) or not bool((written >= 1).all()):
            raise ValueError("column program must read every pooled column once and write every output column")
        self.n_weights = sum(op.op == "proj" for op in self.ops)
        self.needs_input = any(op.op in ("mul", "proj") for op in self.ops)
        self.is_identity = in_width == out_width and [tuple(op[:4]) for op in self.ops] == [("copy", (0,), 0, out_width)]

    def forward(self, pooled: torch.Tensor, weights: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        out = pooled.new_empty(pooled.shape[0], self.out_width)
        wi = 0
        for op, acc in zip(self.ops, self.accumulates):
            srcs, w = op.sources, op.width
            o = out[:, op.dst:op.dst + w]
            if op.op == "copy":
                o.copy_(pooled[:, srcs[0]:srcs[0] + w])
            elif op.op == "mul":
                torch.mul(pooled[:, srcs[0]:srcs[0] + w], pooled[:, srcs[1]:srcs[1] + w], out=o)
            elif op.op == "add":
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
        for op in self.ops:
            srcs, w = op.sources, op.width
            g = grad[:, op.dst:op.dst + w]
            if op.op == "mul":
                assert pooled is not None
                a, b = srcs
                torch.mul(g, pooled[:, b:b + w], out=g_in[:, a:a + w])
                torch.mul(g, pooled[:, a:a + w], out=g_in[:, b:b + w])
            elif op.op == "proj":
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
    def forward(ctx, pooled: torch.Tensor, program: ColumnProgram, *weights: torch.Tensor
                ) -> torch.Tensor:
        ctx.program = program
        ctx.save_for_backward(pooled if program.needs_input else None, *weights)
        return program.forward(pooled, weights)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        program: ColumnProgram = ctx.program
        pooled, *weights = ctx.saved_tensors
        g_in, g_weights = program.backward(grad, pooled, weights)
        return (g_in, None, *g_weights)
