"""A variant's fast path, described as data.

A variant may describe its ``remap`` as a :data:`RemapPlan` and its ``combine`` as a list of
:class:`ColumnOp`. :mod:`recsys_emb.embeddings.fused` executes the plans of all features of a layer at
once (one set of tensor ops per plan kind and step, one pass of column arithmetic forward and one back),
so a variant gets the batched speed without writing batched code. A variant without plans implements
``remap`` / ``combine`` directly and is run feature by feature.

Remap plans (``ids (n,)``, bag ``lengths (B,)`` -> one ``(values, lengths)`` pair per virtual feature):

============  ========================================================  ===============================
plan          values of each virtual feature                            virtual features
============  ========================================================  ===============================
Identity      ``ids`` (checked ``< cardinality`` unless it is None)     1
Hash          ``hash(id, key_j) mod buckets`` for each seed key         ``k`` (``split``), else 1 with
              (``oov_row`` in every probe for ``id == oov_id``)         the ``k`` rows of an id in its bag
DivMod        ``id // modulus`` and ``id % modulus``                    2
Blocks        ``id - starts[i]`` for the ids in ``[starts[i], starts[i+1])``  one per block
============  ========================================================  ===============================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple, Union

import torch

from recsys_emb.hashing import bucket_rows

__all__ = ["Identity", "Hash", "DivMod", "Blocks", "RemapPlan", "StaticPart", "ColumnOp", "COLUMN_OPS"]

StaticPart = Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]
"""One virtual feature of one feature's remap with static shapes: ``(values, lengths, per-value weight or
None)``; a weight of 0 masks a value's row (:meth:`Blocks.parts`)."""


@dataclass(frozen=True)
class Identity:
    """Ids are the table rows. ``cardinality``: ids are checked to lie in ``[0, cardinality)``
    (``None``: not checked)."""

    feature: str
    cardinality: Optional[int]

    def parts(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[StaticPart]:
        """One feature's remap, unchecked and with static shapes (every plan kind has this method: the
        per-feature interpreter of the inference module and of :func:`~recsys_emb.embeddings.fused.run_plan`)."""
        return [(ids, lengths, None)]


@dataclass(frozen=True, eq=False)
class Hash:
    """Each id is hashed under ``k`` seed keys into ``buckets`` rows (any int64 id, negative included).

    ``keys``: int64 ``(k,)`` seed keys (:func:`recsys_emb.hashing.seed_keys`), a buffer of the variant.
    ``split=True``: probe ``j`` is virtual feature ``j`` (``n`` values each); ``False``: one virtual
    feature whose bags hold the ``k`` rows of each id in a row (``n * k`` values, lengths ``* k``).
    ``oov_id``, ``oov_row``: that id is not hashed; every probe of it reads row ``oov_row`` (a row
    past the hashed ones). ``None``: every id is hashed.
    """

    feature: str
    keys: torch.Tensor
    buckets: int
    split: bool
    oov_id: Optional[int] = None
    oov_row: Optional[int] = None

    @property
    def probes(self) -> int:
        return int(self.keys.numel())

    def rows(self, ids: torch.Tensor, keys: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(n, probes)`` rows of ``ids (n,)``, the OOV id sent to its row; ``keys``: the seed keys to use
        (default ``self.keys``; a module passes its own buffer, which follows it across devices)."""
        keys = self.keys if keys is None else keys
        n = ids.shape[0]
        rows = bucket_rows(ids, keys.unsqueeze(0).expand(n, -1),
                           torch.full((n,), self.buckets, dtype=torch.int64, device=ids.device))
        if self.oov_id is not None:
            rows = torch.where(torch.eq(ids, int(self.oov_id)).unsqueeze(1), int(self.oov_row), rows)  # type: ignore[arg-type]
        return rows

    def split_rows(self, rows: torch.Tensor, lengths: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """``rows (n, probes)`` as ``(values, lengths)`` per virtual feature: one per probe (``split``),
        else one whose bags hold each id's probes in a row."""
        k = rows.shape[1]
        if k == 1:
            return [(rows.view(-1), lengths)]
        if self.split:
            return [(rows[:, j].contiguous(), lengths) for j in range(k)]
        return [(rows.reshape(-1), lengths * k)]  # row-major: an id's probes stay inside its bag

    def parts(self, ids: torch.Tensor, lengths: torch.Tensor, keys: Optional[torch.Tensor] = None) -> List[StaticPart]:
        """One feature's remap (:meth:`Identity.parts`)."""
        return [(v, l, None) for v, l in self.split_rows(self.rows(ids, keys), lengths)]


@dataclass(frozen=True)
class DivMod:
    """Two virtual features: ``id // modulus`` and ``id % modulus``; ids checked against
    ``cardinality`` unless it is None."""

    feature: str
    modulus: int
    cardinality: Optional[int]

    def parts(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[StaticPart]:
        """One feature's remap (:meth:`Identity.parts`)."""
        q = torch.div(ids, self.modulus, rounding_mode="floor")
        return [(q, lengths, None), (ids - q * self.modulus, lengths, None)]


@dataclass(frozen=True)
class Blocks:
    """One virtual feature per block of contiguous ids: block ``i`` holds ids in ``[starts[i],
    starts[i+1])`` and reads row ``id - starts[i]`` (``starts[0] == 0``). Bags keep their ids' order
    inside a block. ``cardinality``: the ids' bound (checked unless ``check`` is False)."""

    feature: str
    starts: Tuple[int, ...]
    cardinality: int
    check: bool = True

    def parts(self, ids: torch.Tensor, lengths: torch.Tensor) -> List[StaticPart]:
        """One feature's remap with static shapes: masked lookups, every block reads a row per id (row
        0 outside the block), weighted 1 inside the block and 0 outside (the batched layer instead sorts
        the ids into their blocks)."""
        parts: List[StaticPart] = []
        ends: List[Optional[int]] = [*self.starts[1:], None]
        for start, end in zip(self.starts, ends):
            inside = ids >= start if end is None else (ids >= start) & (ids < end)
            local = torch.where(inside, ids - start, torch.zeros_like(ids))
            parts.append((local, lengths, inside.to(torch.float32)))
        return parts


RemapPlan = Union[Identity, Hash, DivMod, Blocks]
"""Any remap plan."""

COLUMN_OPS = ("copy", "mul", "add", "proj")


class ColumnOp(NamedTuple):
    """One step of a combine as column arithmetic, from the pooled tensor ``x`` (every virtual
    feature's sum-pooled columns side by side) to the output ``out``:

    * ``("copy", (s,), d, w)``: ``out[:, d:d+w] = x[:, s:s+w]``;
    * ``("mul" | "add", (s1, s2), d, w)``: ``out[:, d:d+w] = x[:, s1:s1+w] * (+) x[:, s2:s2+w]``;
    * ``("proj", (s, k), d, w, names)``: ``out[:, d:d+w] (+)= x[:, s:s+k] @ W.T`` where ``W``
      ``(w, k)`` is the variant's parameters named ``names`` concatenated along their columns (fetched
      on every forward, so autograd sees the current parameters).
    """

    op: str
    sources: Tuple[int, ...]
    dst: int
    width: int
    weights: Tuple[str, ...] = ()
