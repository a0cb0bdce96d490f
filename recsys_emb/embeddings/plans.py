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
from typing import NamedTuple, Optional, Tuple, Union

import torch

__all__ = ["Identity", "Hash", "DivMod", "Blocks", "RemapPlan", "ColumnOp", "COLUMN_OPS"]


@dataclass(frozen=True)
class Identity:
    """Ids are the table rows. ``cardinality``: ids are checked to lie in ``[0, cardinality)``
    (``None``: not checked)."""

    feature: str
    cardinality: Optional[int]


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


@dataclass(frozen=True)
class DivMod:
    """Two virtual features: ``id // modulus`` and ``id % modulus``; ids checked against
    ``cardinality`` unless it is None."""

    feature: str
    modulus: int
    cardinality: Optional[int]


@dataclass(frozen=True)
class Blocks:
    """One virtual feature per block of contiguous ids: block ``i`` holds ids in ``[starts[i],
    starts[i+1])`` and reads row ``id - starts[i]`` (``starts[0] == 0``). Bags keep their ids' order
    inside a block. ``cardinality``: the ids' bound (checked unless ``check`` is False)."""

    feature: str
    starts: Tuple[int, ...]
    cardinality: int
    check: bool = True


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
