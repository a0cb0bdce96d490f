"""Input files as blocks of whole lines, read as bytes: gzip decompressed on the fly (by its magic bytes or a
``.gz`` name), CR-only line endings read as line ends, a line longer than a limit skipped without holding it
in memory, and a truncated or corrupt compressed stream reported with the last complete line; and the
vectorised check of a block's bytes (:func:`line_byte_codes`).

Example:
    >>> _ = (tmp / "a.tsv").write_bytes(b"1\\t2\\n3\\t4\\n5")
    >>> list(iter_line_blocks(tmp / "a.tsv", chunk_bytes=6))
    [Block(data=b'1\\t2\\n', first_line=1), Block(data=b'3\\t4\\n', first_line=2), Block(data=b'5\\n', first_line=3)]
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Set, Tuple, Union

import numpy as np
import pyarrow as pa

__all__ = ["Block", "OverlongLine", "DamagedStream", "iter_line_blocks", "line_byte_codes", "is_compressed",
           "LINE_REASONS", "OVERLONG"]

logger = logging.getLogger(__name__)
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_READ_BYTES = 1 << 20
_ARROW_CODECS = (".bz2", ".zst", ".lz4", ".br")  # decompressed by pyarrow, detected by name as before
_WARNED_CR_ONLY: Set[str] = set()


# Bytes that never occur in a valid line, by class; the lowest class of a line names its reason. A valid
# line holds only printable ASCII, tabs and its line end (\n or \r\n).
OVERLONG, _NUL, _CR, _NON_ASCII, _CONTROL = 1, 2, 3, 4, 5
LINE_REASONS = {_NUL: "NUL byte", _CR: "carriage return inside a line", _NON_ASCII: "non-ASCII byte",
                _CONTROL: "control character"}
"""Reasons of the byte classes (``OVERLONG`` is named by the caller, with its limit)."""
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)
_BYTE_CLASS[:32] = _CONTROL
_BYTE_CLASS[[9, 10]] = 0
_BYTE_CLASS[0] = _NUL
_BYTE_CLASS[13] = _CR
_BYTE_CLASS[127] = _CONTROL
_BYTE_CLASS[128:] = _NON_ASCII


@dataclass(frozen=True)
class Block:
    """Whole lines, each ending in ``\\n`` (CR-only endings already turned into ``\\n``)."""

    data: bytes
    first_line: int


@dataclass(frozen=True)
class OverlongLine:
    """A line longer than the limit, skipped without being read into memory."""

    line: int


@dataclass(frozen=True)
class DamagedStream:
    """The compressed stream cannot be read past ``last_line`` (the last complete line); nothing follows."""

    last_line: int
    error: str


class _Damaged(Exception):
    pass


def _corrupt(e: zlib.error) -> _Damaged:
    detail = "its checksum does not match: lines before this point may be garbled" \
        if "incorrect data check" in str(e) else str(e)
    return _Damaged(f"the gzip stream is corrupt ({detail})")


def _salvage(d: "zlib._Decompress", data: bytes, out_bytes: int, step: int = 4096) -> Iterator[bytes]:
    """Decompress ``data`` with ``d`` in ever smaller pieces up to the byte where it fails (a failing call
    returns nothing, so feeding it whole would lose everything it decoded before the damage); raises the
    error at the end."""
    for i in range(0, len(data), step):
        piece, snap = data[i:i + step], d.copy()
        try:
            outs = []
            while piece:
                outs.append(d.decompress(piece, out_bytes))
                piece = d.unconsumed_tail
                if d.eof:
                    break
        except zlib.error:
            if step == 1:
                raise
            yield from _salvage(snap, data[i:i + step], out_bytes, max(step // 64, 1))
            raise  # unreachable: the smaller steps raise at the same byte
        yield from (o for o in outs if o)
        if d.eof:
            return


def _gunzip(f: BinaryIO, out_bytes: int) -> Iterator[bytes]:
    """Decompressed gzip data (members one after the other), at most ``out_bytes`` per piece. On damage,
    all output up to a few bytes before it is yielded, then :class:`_Damaged` is raised."""
    d = zlib.decompressobj(wbits=31)
    in_member, pending = True, b""
    while True:
        if not pending:
            pending = f.read(_GZIP_READ_BYTES)
            if not pending:
                if in_member:
                    try:
                        tail = d.flush()
                    except zlib.error as e:
                        raise _corrupt(e) from None
                    if tail:
                        yield tail
                    if not d.eof:
                        raise _Damaged("the gzip stream is truncated (it ends before its end-of-stream marker)")
                return
        if not in_member:
            pending = pending.lstrip(b"\0")  # gzip allows zero padding between members
            if not pending:
                continue
            d, in_member = zlib.decompressobj(wbits=31), True
        before = d.copy()
        try:
            out = d.decompress(pending, out_bytes)
        except zlib.error as e:
            try:
                yield from _salvage(before, pending, out_bytes)
            except zlib.error:
                pass
            raise _corrupt(e) from None
        pending = d.unconsumed_tail
        if d.eof:
            pending, in_member = d.unused_data, False
        if out:
            yield out


def is_compressed(path: Union[str, Path]) -> bool:
    """Whether ``path`` is read through a decompressor (gzip by its magic bytes or name; bz2, zstd, lz4,
    brotli by name): such a file can only be read from its start."""
    path = Path(path)
    if path.name.lower().endswith((".gz",) + _ARROW_CODECS):
        return True
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _pieces(path: Path, chunk_bytes: int, start: int = 0, end: Optional[int] = None) -> Iterator[bytes]:
    if start or end is not None:  # a byte range of a plain file
        with open(path, "rb") as f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                data = f.read(chunk_bytes if left is None else min(chunk_bytes, left))
                if not data:
                    return
                if left is not None:
                    left -= len(data)
                yield data
        return
    with open(path, "rb") as f:  # a BufferedReader: peek() leaves a pipe's bytes in place (no seek)
        gz = f.peek(2)[:2] == _GZIP_MAGIC or path.name.lower().endswith(".gz")
        if gz:
            yield from _gunzip(f, chunk_bytes)
            return
        if not path.name.lower().endswith(_ARROW_CODECS):
            while True:
                data = f.read(chunk_bytes)
                if not data:
                    return
                yield data
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            while True:
                data = stream.read(chunk_bytes)
                if not data:
                    return
                yield data
    except (OSError, pa.ArrowException) as e:
        raise _Damaged(f"the compressed stream is truncated or corrupt ({' '.join(str(e).split())})") from None


def iter_line_blocks(path: Union[str, Path], chunk_bytes: int = 8 << 20, max_line_bytes: int = 4096,
                     byte_range: Optional[Tuple[int, Optional[int]]] = None,
                     first_line: int = 1) -> Iterator[Union[Block, OverlongLine, DamagedStream]]:
    """Blocks of whole lines of a file, in order, with the 1-based number of their first line.

    ``byte_range=(start, end)`` (``end`` None: to the end of the file) reads only those bytes of a plain
    file whose line ends are ``\\n``; ``start`` must be the first byte of a line and ``end`` the byte after
    a ``\\n`` (``recsys_emb.data.criteo.units.plan_units`` cuts files so), and ``first_line`` is the number
    of the range's first line in the file.

    Line ends are ``\\n`` (``\\r\\n`` stays in the block: the ``\\r`` is a line end's, not a field's) or, in a
    file whose first line ends in a lone ``\\r`` and that has no ``\\n`` before it, ``\\r`` (translated to
    ``\\n``, with a warning). A line longer than ``max_line_bytes`` with no end in sight is yielded as an
    :class:`OverlongLine` and skipped; shorter lines are only ever held whole. A read error of a
    compressed stream ends the iteration with a :class:`DamagedStream` after every complete line before it.
    A last line without an end is completed with ``\\n``.

    Memory: ``chunk_bytes`` (decompressed) plus ``max_line_bytes``.
    """
    path = Path(path)
    line, rest = first_line, b""
    skipping = False  # inside an overlong line: drop bytes up to its end
    cr_only = None  # unknown until the first line end is seen
    if byte_range is not None:
        cr_only = False  # ranges are cut only in files whose first block holds a \n
        pieces = _pieces(path, chunk_bytes, int(byte_range[0]), byte_range[1])
    else:
        pieces = _pieces(path, chunk_bytes)
    while True:
        try:
            data = next(pieces, None)
        except _Damaged as e:
            yield DamagedStream(line - 1, str(e))
            return
        if data is None:
            break
        if cr_only is None:
            probe = rest + data
            if b"\n" in probe:
                cr_only = False
            else:
                cr = probe.find(b"\r", 0, max_line_bytes + 1)
                if 0 <= cr < len(probe) - 1:  # a lone \r (the byte after it is known, and is not \n)
                    cr_only = True
                    if str(path) not in _WARNED_CR_ONLY:  # once per file, not once per pass over it
                        _WARNED_CR_ONLY.add(str(path))
                        logger.warning("%s has CR-only line endings (classic Mac OS); reading each \\r as a "
                                       "line end", path)
                    rest = rest.replace(b"\r", b"\n")
                elif len(probe) > max_line_bytes:
                    cr_only = False
        if cr_only:
            data = data.replace(b"\r", b"\n")
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                continue
            data, skipping, line = data[nl + 1:], False, line + 1
        buf = rest + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            rest = buf
        else:
            block, rest = buf[:cut + 1], buf[cut + 1:]
            yield Block(block, line)
            line += block.count(b"\n")
        if len(rest) > max_line_bytes:
            yield OverlongLine(line)
            rest, skipping = b"", True
    if rest and not skipping:
        if cr_only is None and rest.endswith(b"\r") and rest.count(b"\r") == 1:
            rest = rest[:-1]  # a one-line file ending in a lone \r
        yield Block(rest + b"\n", line)


def line_byte_codes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_tabs: int,
                    max_line_bytes: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The bytes of each line of a block checked, vectorised.

    Args:
        data: the block, uint8, ending in ``\\n``.
        starts, ends: each line's first byte and its ``\\n``, ``(L,)``.
        n_tabs: tabs in the block.
        max_line_bytes: longest line allowed.
    Returns:
        None when every line is fine (the common case, found in two passes over the block: its maximum
        and a count of bytes below 32); else ``(codes, first)``, ``(L,)`` each: the line's reason
        (0 = fine, ``OVERLONG``, or a key of :data:`LINE_REASONS`; the lowest class present wins) and
        the position of its first byte of that class (-1 for an overlong line).

    Example:
        >>> data = np.frombuffer(b"1\\t2\\n3\\x00\\t4\\r\\n5\\t6\\r\\n", np.uint8)
        >>> ends = np.flatnonzero(data == 10)
        >>> codes, first = line_byte_codes(data, np.r_[0, ends[:-1] + 1], ends, 3, 100)
        >>> [LINE_REASONS.get(int(c)) for c in codes], first.tolist()
        ([None, 'NUL byte', None], [-1, 5, -1])
    """
    long = (ends - starts) > max_line_bytes
    special = np.zeros(0, np.int64)
    if data.max() >= 127 or np.count_nonzero(data < 32) != n_tabs + len(ends):
        special = np.flatnonzero(_BYTE_CLASS.take(data))  # rare: CRLF line ends or bad bytes
        # A \r right before \n ends the line (CRLF). The block ends in \n, so special + 1 is in range.
        special = special[(data[special] != 13) | (data[special + 1] != 10)]
    if not special.size and not long.any():
        return None
    codes = np.zeros(len(ends), np.uint8)
    first = np.full(len(ends), -1, np.int64)
    if special.size:
        line_of = np.searchsorted(ends, special)
        cls = _BYTE_CLASS[data[special]]
        order = np.lexsort((cls, line_of))  # stable: within a line and class, by position
        lo = line_of[order]
        head = order[np.flatnonzero(np.concatenate(([True], lo[1:] != lo[:-1])))]
        codes[line_of[head]] = cls[head]
        first[line_of[head]] = special[head]
    codes[long] = OVERLONG
    first[long] = -1
    return codes, first
