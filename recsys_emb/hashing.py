"""Stable, seeded 64-bit hashes for ids (vectorized torch, CPU and CUDA) and for raw values.

The same id, seed and bucket count give the same bucket in every process, on every machine and
in every version of this library: the functions are pinned by golden values in the tests.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, List, Sequence, Union

import numpy as np
import torch

__all__ = [
    "GOLDEN64",
    "mix64_reference",
    "seed_key",
    "hash64_reference",
    "bucket_reference",
    "seed_from_name",
    "mix64",
    "hash64",
    "hash_to_buckets",
    "seed_keys",
    "bucket_matrix",
    "bucket_matrices",
    "bucket_rows",
    "hash_raw_value",
    "hash_raw_values",
]

_MASK64 = (1 << 64) - 1
GOLDEN64 = 0x9E3779B97F4A7C15
"""2**64 / golden ratio: the odd constant of splitmix64 (Steele, Lea, Flood 2014)."""
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def _to_signed(x: int) -> int:
    """A 64-bit unsigned Python int as the int64 with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= (1 << 63) else x


# ---------------------------------------------------------------------------------------------
# Pure-Python reference (unsigned 64-bit arithmetic on Python ints). The tensor code below must
# agree with it bit for bit; tests check both against each other and against golden values.
# ---------------------------------------------------------------------------------------------
def mix64_reference(z: int) -> int:
    """splitmix64's finalizer on a 64-bit value; returns an unsigned int in [0, 2**64)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _C1) & _MASK64
    z = ((z ^ (z >> 27)) * _C2) & _MASK64
    return z ^ (z >> 31)


def seed_key(seed: int) -> int:
    """The 64-bit key of a seed: splitmix64's first output for that seed, ``mix64(seed + GOLDEN64)``."""
    return mix64_reference((seed + GOLDEN64) & _MASK64)


def hash64_reference(x: int, seed: int) -> int:
    """Reference for :func:`hash64`: ``mix64(x * GOLDEN64 + seed_key(seed))`` modulo 2**64, unsigned."""
    return mix64_reference((x * GOLDEN64 + seed_key(seed)) & _MASK64)


def bucket_reference(x: int, seed: int, buckets: int) -> int:
    """Reference for :func:`hash_to_buckets`: the top 63 bits of the hash, modulo ``buckets``."""
    return (hash64_reference(x, seed) >> 1) % buckets


def seed_from_name(*parts: Union[str, int]) -> int:
    """A stable non-negative 63-bit seed from names (e.g. a feature name and a chunk index).

    Uses BLAKE2b, never Python's salted ``hash()``, so it is the same in every process.

    Example:
        >>> seed_from_name("C1") == seed_from_name("C1")
        True
    """
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


# ---------------------------------------------------------------------------------------------
# Vectorized torch versions. int64 multiplication wraps modulo 2**64 on CPU and CUDA; right shifts
# of int64 are arithmetic, so logical shifts are done as a shift followed by a mask.
# ---------------------------------------------------------------------------------------------
def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (z >> s) & ((1 << (64 - s)) - 1)


_C1_S = _to_signed(_C1)
_C2_S = _to_signed(_C2)
_GOLDEN_S = _to_signed(GOLDEN64)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer applied elementwise to an int64 tensor (bits as unsigned).

    Args:
        z: int64 tensor of any shape, on any device.
    Returns:
        int64 tensor of the same shape: the mixed bits, read as signed int64.
    """
    if z.dtype != torch.int64:
        raise TypeError(f"mix64 needs an int64 tensor, got {z.dtype}; convert with .long()")
    z = (z ^ _srl(z, 30)) * _C1_S
    z = (z ^ _srl(z, 27)) * _C2_S
    return z ^ _srl(z, 31)


def hash64(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded 64-bit hash of int64 ids (negative ids included).

    Args:
        ids: int64 tensor, any shape, CPU or CUDA.
        seed: any Python int; equal seeds give equal hashes in every process.
    Returns:
        int64 tensor of ``ids.shape``: ``mix64(ids * GOLDEN64 + seed_key(seed))`` (bits as signed).

    Example:
        >>> h = hash64(torch.tensor([0, 1, -1]), seed=7)
        >>> h.dtype
        torch.int64
    """
    if ids.dtype != torch.int64:
        raise TypeError(f"hash64 needs int64 ids, got {ids.dtype}; convert with .long()")
    return mix64(ids * _GOLDEN_S + _to_signed(seed_key(seed)))


def hash_to_buckets(ids: torch.Tensor, seed: int, buckets: int) -> torch.Tensor:
    """Map int64 ids to ``[0, buckets)`` with the seeded hash (top 63 bits, modulo ``buckets``).

    Args:
        ids: int64 tensor, any shape.
        seed: hash seed (use :func:`seed_from_name` for a per-feature seed).
        buckets: number of buckets, >= 1.
    Returns:
        int64 tensor of ``ids.shape`` with values in ``[0, buckets)``.

    Example:
        >>> b = hash_to_buckets(torch.arange(10), seed=1, buckets=4)
        >>> bool(((b >= 0) & (b < 4)).all())
        True
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    return _srl(hash64(ids, seed), 1) % buckets


def seed_keys(seeds: torch.Tensor) -> torch.Tensor:
    """:func:`seed_key` of an int64 tensor of seeds (so saved salts can be hashed on any device)."""
    return mix64(seeds + _GOLDEN_S)


def bucket_matrix(ids: torch.Tensor, keys: torch.Tensor, buckets: int) -> torch.Tensor:
    """Buckets of every id under every seed key at once.

    Args:
        ids: int64 tensor of shape ``(n,)``.
        keys: int64 tensor of shape ``(k,)`` from :func:`seed_keys` (or :func:`seed_key` per seed).
        buckets: number of buckets.
    Returns:
        int64 tensor ``(n, k)``; column ``j`` equals ``hash_to_buckets(ids, seed_j, buckets)``.
    """
    h = mix64(ids.unsqueeze(1) * _GOLDEN_S + keys.unsqueeze(0))
    return _srl(h, 1) % buckets


def bucket_matrices(ids: Sequence[torch.Tensor], keys: torch.Tensor, buckets: torch.Tensor) -> List[torch.Tensor]:
    """:func:`bucket_matrix` for several features in one pass (one set of tensor ops, not one per
    feature): feature ``f`` hashes ``ids[f]`` under the seed keys ``keys[f]`` into ``buckets[f]``
    buckets.

    Args:
        ids: ``F`` int64 tensors ``(n_f,)``.
        keys: int64 ``(F, k)``: every feature's ``k`` seed keys.
        buckets: int64 ``(F,)``.
    Returns:
        ``F`` int64 tensors ``(n_f, k)``, each equal to ``bucket_matrix(ids[f], keys[f], buckets[f])``.
    """
    counts = [int(t.numel()) for t in ids]
    n = sum(counts)
    sizes = torch.tensor(counts, device=keys.device)
    x = torch.cat(list(ids)) if len(ids) > 1 else ids[0]
    per_value_keys = torch.repeat_interleave(keys, sizes, dim=0, output_size=n)
    per_value_buckets = torch.repeat_interleave(buckets, sizes, output_size=n)
    return list(bucket_rows(x, per_value_keys, per_value_buckets).split(counts))


def bucket_rows(x: torch.Tensor, value_keys: torch.Tensor, value_buckets: torch.Tensor) -> torch.Tensor:
    """Buckets of ids that each carry their own seed keys and bucket count (what
    :func:`bucket_matrices` computes once the per-feature keys are repeated per id; callers that
    see the same id counts every step keep those repeated tensors).

    Args:
        x: int64 ``(n,)``.
        value_keys: int64 ``(n, k)``: the seed keys of each id.
        value_buckets: int64 ``(n,)``: the bucket count of each id.
    Returns:
        int64 ``(n, k)``: row ``i`` equals ``bucket_matrix(x[i:i+1], value_keys[i], value_buckets[i])``.
    """
    h = torch.add(value_keys, x.unsqueeze(1), alpha=_GOLDEN_S)  # wraps modulo 2**64 like mul + add
    _mix64_(h)
    h = torch.bitwise_right_shift(h, 1).bitwise_and_((1 << 63) - 1)
    return h.remainder_(value_buckets.unsqueeze(1))


def _mix64_(z: torch.Tensor) -> torch.Tensor:
    """:func:`mix64` in place on a temporary (one scratch tensor instead of eleven new ones)."""
    t = torch.empty_like(z)
    for shift, mult in ((30, _C1_S), (27, _C2_S), (31, None)):
        torch.bitwise_right_shift(z, shift, out=t).bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(t)
        if mult is not None:
            z.mul_(mult)
    return z


# ---------------------------------------------------------------------------------------------
# Raw values (data preparation): strings and ints to int64, stable across processes.
# ---------------------------------------------------------------------------------------------
def hash_raw_value(value: Union[str, bytes, int], seed: int = 0) -> int:
    """Stable signed 64-bit hash of one raw value (str, bytes or int), for data preparation.

    Strings and bytes are hashed with BLAKE2b keyed by the seed; ints go through :func:`hash64`'s
    reference, so ``hash_raw_value(5, s)`` equals ``hash64(torch.tensor([5]), s)``.

    Example:
        >>> hash_raw_value("68fd1e64") == hash_raw_value(b"68fd1e64")
        True
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"cannot hash a bool raw value ({value!r}); encode it as an int or a string")
    if isinstance(value, (int, np.integer)):
        return _to_signed(hash64_reference(int(value), seed))
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        key = (seed & _MASK64).to_bytes(8, "little")
        return _to_signed(int.from_bytes(hashlib.blake2b(value, digest_size=8, key=key).digest(), "little"))
    raise TypeError(f"cannot hash raw value {value!r} of type {type(value).__name__}; expected str, bytes or int")


def hash_raw_values(values: Union[Sequence, Iterable, np.ndarray], seed: int = 0) -> np.ndarray:
    """Vectorized :func:`hash_raw_value` over many values; hashes each distinct value once.

    Args:
        values: a sequence or array of str / bytes / int.
    Returns:
        int64 numpy array of the same length.
    """
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values))
    if arr.dtype.kind in "iu":
        return hash64(torch.from_numpy(arr.astype(np.int64)), seed).numpy()
    uniq, inverse = np.unique(arr, return_inverse=True)
    hashed = np.fromiter((hash_raw_value(u.item() if hasattr(u, "item") else u, seed) for u in uniq),
                         dtype=np.int64, count=len(uniq))
    return hashed[inverse.reshape(-1)]
