"""Checks of typed input values: the Criteo TSV reader's rules (:mod:`recsys_emb.data.criteo.reader`) for
values that arrive already typed, in processed Parquet or in a DataFrame / Arrow table. Each check returns
the values as the model reads them and a :class:`BadRows` per problem found (the rows, their column,
the reason and the rule broken), so that a caller refuses the first or skips and counts them all, as
``on_bad_line`` says: a NaN, infinity or null never reaches the model as a number, a label is never
wrapped into int8, an id is never rounded, a count is never clamped.

Example:
    >>> import pyarrow as pa
    >>> labels, bad = check_labels(pa.array([0, 1, None, 300]))
    >>> labels.tolist(), [(b.reason, b.rows().tolist()) for b in bad]
    ([0, 1, -1, -1], [('label not 0/1', [3])])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_emb.errors import InvalidInputError

__all__ = ["BadRows", "check_labels", "check_dense", "check_ids", "check_id_lists", "check_counts", "first_bad",
           "bad_mask", "MAX_RAW_VALUE"]

MAX_RAW_VALUE = (1 << 60) - 1
"""Largest raw categorical value: 15 hex digits, as the TSV reader accepts."""
_INT64_LIMIT = float(1 << 63)


@dataclass(frozen=True)
class BadRows:
    """Rows of one column that break one rule.

    Attributes:
        mask: bool ``(n,)``, True at the rows concerned.
        column: the column.
        reason: short, as the TSV reader counts reasons (``"non-finite I2"``, ``"label not 0/1"``).
        rule: what is allowed, for the message (``"dense inputs are finite numbers"``).
        values: the column, to quote an offending value.
    """

    mask: np.ndarray
    column: str
    reason: str
    rule: str
    values: Any

    def rows(self) -> np.ndarray:
        """Indices of the rows concerned, int64."""
        return np.flatnonzero(self.mask)

    def value(self, row: int) -> Any:
        """The value at ``row`` as Python (None for null)."""
        return self.values[row].as_py()

    def describe(self, row: Optional[int] = None, offset: int = 0) -> str:
        """``"column C, row R: VALUE: REASON (RULE)"`` for ``row`` (default: the first concerned), numbered
        from ``offset``."""
        r = int(self.rows()[0]) if row is None else row
        v = self.value(r)
        shown = "null" if v is None else repr(v)
        return f"column {self.column}, row {r + offset}: {shown}: {self.reason} ({self.rule})"


def _array(col: Any) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks()
    return col if isinstance(col, pa.Array) else pa.array(col)


def _null(arr: pa.Array) -> np.ndarray:
    return arr.is_null().to_numpy(zero_copy_only=False)


def _bad(mask: np.ndarray, column: str, reason: str, rule: str, arr: pa.Array) -> List[BadRows]:
    return [BadRows(mask, column, reason, rule, arr)] if mask.any() else []


def _type_error(name: str, arr: pa.Array, expected: str) -> InvalidInputError:
    return InvalidInputError(f"column {name}: type {arr.type}, expected {expected}")


def _floats(arr: pa.Array) -> np.ndarray:
    """float64 values (NaN at nulls) of a numeric array."""
    return arr.cast(pa.float64()).to_numpy(zero_copy_only=False) if len(arr) else np.zeros(0)


def _int64(arr: pa.Array, name: str, what: str) -> Tuple[np.ndarray, np.ndarray, List[BadRows]]:
    """(int64 values, 0 at bad or null rows; null mask; problems) of an integer or float column whose
    values must be integers within int64."""
    n = len(arr)
    null = _null(arr)
    problems: List[BadRows] = []
    if pa.types.is_boolean(arr.type) or pa.types.is_null(arr.type):
        return np.zeros(n, np.int64) if pa.types.is_null(arr.type) else \
            arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), null, []
    if pa.types.is_unsigned_integer(arr.type):
        big = pc.greater(arr, pa.scalar(np.iinfo(np.int64).max, arr.type)).fill_null(False).to_numpy(
            zero_copy_only=False) if arr.type == pa.uint64() else np.zeros(n, bool)
        problems += _bad(big, name, f"{name} out of the int64 range", f"{what} are integers within int64", arr)
        v = pc.if_else(pa.array(big), pa.scalar(0, arr.type), arr).cast(pa.int64())
        return v.fill_null(0).to_numpy(zero_copy_only=False), null, problems
    if pa.types.is_integer(arr.type):
        return arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), null, []
    if pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type):
        f = _floats(arr)
        nan = np.isnan(f) & ~null
        finite = np.isfinite(f)
        whole = finite & (np.floor(f) == f)
        big = whole & (np.abs(f) >= _INT64_LIMIT)
        non_integer = ~null & ~nan & ~whole
        problems += _bad(non_integer, name, f"non-integer {name}", f"{what} are integers", arr)
        problems += _bad(big, name, f"{name} out of the int64 range", f"{what} are integers within int64", arr)
        ok = whole & ~big
        v = np.zeros(n, np.int64)
        v[ok] = f[ok].astype(np.int64)
        return v, null | nan, problems
    raise _type_error(name, arr, f"integers ({what})")


def check_labels(col: Any, name: str = "label") -> Tuple[np.ndarray, List[BadRows]]:
    """Labels: 0 or 1 (integer, float or bool), null or NaN = no label.

    Returns:
        int8 ``(n,)`` labels, -1 where there is none or the row is bad; the bad rows (``"label not 0/1"``).
    """
    arr = _array(col)
    values, missing, problems = _int64(arr, name, "labels")
    bad = ~missing & ~((values == 0) | (values == 1))
    for p in problems:
        bad &= ~p.mask  # counted once, under the problem found first
    problems = [BadRows(p.mask, name, "label not 0/1", "labels are 0 or 1, null = none", arr) for p in problems]
    problems += _bad(bad, name, "label not 0/1", "labels are 0 or 1, null = none", arr)
    out = np.where(missing, -1, values).astype(np.int8)
    for p in problems:
        out[p.mask] = -1
    return out, problems


def check_dense(col: Any, name: str) -> Tuple[np.ndarray, List[BadRows]]:
    """A processed dense column: finite numbers (no null, NaN or infinity).

    Returns:
        float32 ``(n,)`` values (0 at bad rows); the bad rows (``"non-finite NAME"``).
    """
    arr = _array(col)
    if not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type)):
        raise _type_error(name, arr, "numbers (a processed dense input)")
    f = _floats(arr)
    bad = ~np.isfinite(f)
    problems = _bad(bad, name, f"non-finite {name}",
                    "processed dense inputs are finite numbers; preprocess writes 0 for a missing count", arr)
    return np.where(bad, 0.0, f).astype(np.float32), problems


def check_ids(col: Any, name: str, vocab_size: Optional[int]) -> Tuple[np.ndarray, List[BadRows]]:
    """A processed id column: integers in ``[0, vocab_size)`` (any int64 >= 0 without a size), no null;
    floats only where integral.

    Returns:
        int64 ``(n,)`` ids (0 at bad rows); the bad rows (``"null C1"``, ``"non-integer C1"``,
        ``"C1 id out of range"``).
    """
    arr = _array(col)
    values, null, problems = _int64(arr, name, "ids")
    nan = null & ~_null(arr)  # NaN in a float column
    problems = [p if p.reason.startswith("non-integer") else
                BadRows(p.mask, name, f"{name} id out of range", p.rule, arr) for p in problems]
    problems += _bad(_null(arr), name, f"null {name}", "every row has an id", arr)
    problems += _bad(nan, name, f"non-integer {name}", "ids are integers", arr)
    claimed = np.zeros(len(arr), bool)
    for p in problems:
        claimed |= p.mask
    hi = vocab_size if vocab_size is not None else None
    out = (values < 0) | ((values >= hi) if hi is not None else False)
    rule = f"ids of {name} are 0..{hi - 1}, its vocabulary's" if hi is not None else f"ids of {name} are >= 0"
    problems += _bad(out & ~claimed, name, f"{name} id out of range", rule, arr)
    bad = claimed | out
    return np.where(bad, 0, values), problems


def check_id_lists(col: Any, name: str, vocab_size: Optional[int]) -> List[BadRows]:
    """A processed list column of ids (a sequence feature): every id as :func:`check_ids` requires; an
    empty list is allowed, a null list is not. Returns the bad rows (the rows holding a bad id)."""
    arr = _array(col)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise _type_error(name, arr, "lists of integer ids")
    problems = _bad(_null(arr), name, f"null {name}", "every row has a list of ids, possibly empty", arr)
    flat = arr.flatten()
    if len(flat):
        parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
        for p in check_ids(flat, name, vocab_size)[1]:
            mask = np.zeros(len(arr), bool)
            mask[parents[p.mask]] = True
            problems.append(BadRows(mask, name, p.reason, p.rule, arr))
    return problems


def check_counts(col: Any, name: str) -> Tuple[np.ndarray, np.ndarray, List[BadRows]]:
    """A raw Criteo count column (``I1..I13``): integers within int64, null or NaN = missing; integer or
    float types (a float must be integral: 1.5, infinity and 1e30 are refused, not rounded or clamped).

    Returns:
        int64 ``(n,)`` counts (0 where missing or bad), bool ``(n,)`` missing, the bad rows
        (``"non-integer I1"``, ``"I1 out of the int64 range"``).
    """
    arr = _array(col)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type)):
        raise _type_error(name, arr, "numbers (null or NaN = missing)")
    values, missing, problems = _int64(arr, name, "counts")
    return values, missing, problems


def first_bad(problems: List[BadRows]) -> Optional[Tuple[int, BadRows]]:
    """The earliest bad row over ``problems`` and the problem it breaks, or None."""
    best: Optional[Tuple[int, BadRows]] = None
    for p in problems:
        r = int(p.rows()[0])
        if best is None or r < best[0]:
            best = (r, p)
    return best


def bad_mask(problems: List[BadRows], n: int) -> np.ndarray:
    """Rows concerned by any problem, bool ``(n,)``."""
    mask = np.zeros(n, bool)
    for p in problems:
        mask |= p.mask
    return mask
