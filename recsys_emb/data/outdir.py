"""Output directories that are never mixed or half written.

Every writer of a dataset directory (``preprocess``, ``generate_sequences``, ``prepare_movielens``,
``generate_criteo_like``) writes into a temporary sibling ``.NAME.partial-HOST-PID-RANDOM`` and renames it
into place at the end, so the destination holds either nothing, the previous complete output, or the new
complete output; a killed writer leaves only its temporary, which the next writer into the same
destination removes (when the process that owned it is gone). An existing non-empty destination is
refused unless ``overwrite=True``, which replaces it whole, and only when every file in it, at any depth,
has a path that writer produces (``--overwrite`` never deletes a file the library did not write), and
never when the destination is or contains one of the command's inputs.

The guarantee is against a writer that dies (an error, a kill): files are not fsynced, so a power loss
can still leave a renamed directory with unwritten blocks. The examples write under ``tmp``, any empty
directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fnmatch
import io
import logging
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from recsys_emb.errors import DataError, RecsysEmbError, WriteError

__all__ = ["check_output_dir", "atomic_output_dir", "partial_sibling", "foreign_files", "check_not_over_inputs",
           "make_parent_dirs", "write_error", "is_write_failure", "save_file", "WRITE_ERRNOS"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]+$")


_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
WRITE_ERRNOS = frozenset(_FULL | _READ_ONLY)
"""The errors of a write that the environment refused (a full disk, a size limit, a read-only location)."""


def write_error(dest: PathLike, error: OSError, command: str) -> WriteError:
    """A one-line :class:`~recsys_emb.errors.WriteError` for ``error`` (an ``OSError`` of
    :data:`WRITE_ERRNOS`) met while ``command`` wrote ``dest``: the destination, the file, the reason, and that
    ``dest`` is left as it was (the writers' temporaries are removed).

    Example:
        >>> import errno
        >>> str(write_error("out", OSError(errno.EFBIG, "File too large", "out/.x.partial"), "predict"))
        'out: predict could not write out/.x.partial: the disk is full or a file size limit was reached ([Errno 27] File too large); out is left as it was: free space (or raise the limit) and run it again'
    """
    where = f" {error.filename}" if error.filename else ""
    if error.errno in _FULL:
        reason, fix = "the disk is full or a file size limit was reached", "free space (or raise the limit)"
    elif error.errno in _READ_ONLY:
        reason, fix = "the location is read-only or not writable", "write to another path"
    else:
        reason, fix = "the write failed", "fix the cause"
    e = WriteError(f"{dest}: {command} could not write{where}: {reason} ([Errno {error.errno}] {error.strerror}); "
                   f"{dest} is left as it was: {fix} and run it again")
    e.errno = error.errno
    return e


def is_write_failure(error: OSError, under: PathLike) -> bool:
    """Whether ``error`` is a write the environment refused: a full disk or size limit anywhere (only a
    write meets those), or a read-only or permission error on a file under ``under`` (one elsewhere is an
    input's, which this is not)."""
    if error.errno in _FULL or error.errno == errno.EROFS:
        return True
    if error.errno in _READ_ONLY and error.filename:
        return os.path.abspath(str(error.filename)).startswith(os.path.abspath(under) + os.sep)
    return False


def make_parent_dirs(path: PathLike) -> None:
    """Create the directories above ``path``; one of them existing as a file is a
    :class:`~recsys_emb.errors.DataError` naming it (not a ``FileExistsError``).

    Example:
        >>> _ = (tmp / "f").write_text("")
        >>> make_parent_dirs(tmp / "f" / "out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recsys_emb.errors.DataError: .../f/out: its parent .../f is a file, not a directory; remove it or choose another path
    """
    p = Path(path)
    for parent in reversed(p.parents):
        if parent.exists() and not parent.is_dir():
            raise DataError(f"{p}: its parent {parent} is a file, not a directory; remove it or choose another path")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise write_error(p, e, "creating its directory") from e
        raise


class _RecordingWriter(io.RawIOBase):
    """A binary file that keeps the ``OSError`` of a failed write: torch's zip writer reports it only as
    ``RuntimeError: ... unexpected pos``. An ``io`` stream (writable, seekable as its file is), so that
    ``torch.export.save`` takes it for the buffer it is."""

    def __init__(self, fh: Any) -> None:
        super().__init__()
        self.fh = fh
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return int(self.fh.write(data))
        except OSError as e:
            self.error = e
            raise

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self.fh.seekable())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self.fh.seek(offset, whence))

    def tell(self) -> int:
        return int(self.fh.tell())

    def flush(self) -> None:
        if not self.fh.closed:  # io's close() (and so garbage collection) flushes too, after `with` closed fh
            self.fh.flush()


def save_file(save: Callable[[Any, Any], Any], obj: Any, path: PathLike) -> None:
    """``save(obj, file)`` (``torch.save``, ``torch.export.save``) into ``path``; a failed write (a full disk,
    a file size limit) is raised as its ``OSError`` (errno and file name), not torch's ``RuntimeError``."""
    with open(path, "wb") as fh:
        writer = _RecordingWriter(fh)
        try:
            save(obj, writer)
        except RuntimeError:
            if writer.error is not None:
                raise OSError(writer.error.errno, writer.error.strerror, str(path)) from None
            raise


def _listing(entries: Collection[str], limit: int = 5) -> str:
    names = sorted(entries)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _split(pattern: str) -> Tuple[str, ...]:
    return tuple(part for part in pattern.split("/") if part)


def _matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    if pattern and pattern[-1] == "**":  # the folder and anything below it
        head = pattern[:-1]
        return len(parts) >= len(head) and _matches(parts[:len(head)], head)
    return len(parts) == len(pattern) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pattern))


def foreign_files(root: PathLike, owned: Iterable[str], limit: int = 6) -> List[str]:
    """The paths under ``root`` (relative, ``/``-separated) that no pattern of ``owned`` accounts for, at
    any depth; at most ``limit`` of them (the search stops there).

    ``owned`` holds the relative paths a writer produces, each component an ``fnmatch`` pattern
    (``"train/part-*.parquet"``, ``"metadata.json"``; a last component ``**`` owns a folder whole). A file
    (or symbolic link, never followed) is owned when its whole path matches a pattern; a directory is
    owned whole when it matches a ``**`` pattern, entered when its path is a proper prefix of a pattern (an
    empty one is owned), and foreign otherwise (reported with a trailing ``/``).

    Example:
        >>> (tmp / "ds" / "train").mkdir(parents=True)
        >>> _ = (tmp / "ds" / "train" / "part-00000.parquet").write_text(""); _ = (tmp / "ds" / "train" / "day0.tsv").write_text("")
        >>> foreign_files(tmp / "ds", ["train/part-*.parquet", "metadata.json"])
        ['train/day0.tsv']
    """
    patterns = [_split(p) for p in owned]
    found: List[str] = []

    def walk(d: Path, prefix: Tuple[str, ...]) -> None:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            if len(found) >= limit:
                return
            parts = prefix + (entry.name,)
            if entry.is_dir(follow_symlinks=False):
                if any(p[-1:] == ("**",) and _matches(parts, p) for p in patterns):
                    continue
                if any(len(p) > len(parts) and _matches(parts, p[:len(parts)]) for p in patterns):
                    walk(Path(entry.path), parts)
                else:
                    found.append("/".join(parts) + "/")
            elif not any(_matches(parts, p) for p in patterns):
                found.append("/".join(parts))

    walk(Path(root), ())
    return found


def _real(p: PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(p)))


def check_not_over_inputs(out: PathLike, inputs: Iterable[PathLike], *, command: str, flag: str = "--out") -> None:
    """Refuse an output path that is one of the command's inputs or a directory holding one (replacing it
    would delete the input). Paths are compared resolved (symbolic links followed).

    Raises:
        DataError: one line naming the output, the input and the fix.

    Example:
        >>> check_not_over_inputs(tmp / "raw", [tmp / "raw" / "day0.tsv"], command="preprocess")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recsys_emb.errors.DataError: --out .../raw contains preprocess's input .../raw/day0.tsv: replacing it would delete the input; write to a path outside the inputs
    """
    dest = _real(out)
    for given in inputs:
        src = _real(given)
        if src == dest or dest in src.parents:
            how = "is" if src == dest else "contains"
            raise DataError(f"{flag} {out} {how} {command}'s input {given}: replacing it would delete the input; "
                            f"write to a path outside the inputs")


def check_output_dir(out: PathLike, *, overwrite: bool, owned: Collection[str], command: str,
                     inputs: Iterable[PathLike] = ()) -> None:
    """Refuse ``out`` before any work is done if the writer may not fill it.

    Allowed: ``out`` absent, an empty directory, or (with ``overwrite``) a directory whose every file, at
    any depth, matches a pattern of ``owned`` (the relative paths the writer produces, see
    :func:`foreign_files`). Never a path that is or contains one of ``inputs``. ``command`` names the
    command in the message.

    Raises:
        DataError: one line naming the directory, what is in it and the fix.

    Example:
        >>> (tmp / "d").mkdir(); _ = (tmp / "d" / "metadata.json").write_text("{}")
        >>> check_output_dir(tmp / "d", overwrite=True, owned={"metadata.json"}, command="preprocess")
        >>> check_output_dir(tmp / "d", overwrite=False, owned={"metadata.json"}, command="preprocess")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recsys_emb.errors.DataError: .../d is not empty (metadata.json): pass overwrite=True (--overwrite) to replace it whole, or write to another directory
    """
    d = Path(out)
    check_not_over_inputs(d, inputs, command=command)
    if not d.exists() and not d.is_symlink():
        return
    if not d.is_dir():
        raise DataError(f"{d} exists and is not a directory: {command} writes a directory there; "
                        "remove it or choose another output path")
    entries = {p.name for p in d.iterdir()}
    if not entries:
        return
    if not overwrite:
        raise DataError(f"{d} is not empty ({_listing(entries)}): pass overwrite=True (--overwrite) to replace "
                        f"it whole, or write to another directory")
    foreign = foreign_files(d, owned)
    if foreign:
        raise DataError(f"{d} holds {_listing(foreign)}, which {command} does not write, so --overwrite will not "
                        f"delete it; remove those yourself or write to another directory")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(out: Path) -> None:
    """Temporaries of ``out`` left by dead writers on this host (a killed run), removed."""
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        m = _TEMP_RE.match(p.name)
        if not m or m["name"] != out.name or m["host"] != _HOST:
            continue
        pid = int(m["pid"])
        if pid != os.getpid() and not _pid_alive(pid):
            logger.warning("removing %s, left by a writer (pid %d) that did not finish", p, pid)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:  # the temporary of a single output file (predict's scores)
                p.unlink(missing_ok=True)


def _renameat2_exchange() -> Optional[Callable[[Path, Path], bool]]:
    """``exchange(a, b)``: swap two paths atomically (Linux renameat2 RENAME_EXCHANGE), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: Path, b: Path) -> bool:
        return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0

    return exchange


_EXCHANGE = _renameat2_exchange()


def _temp_sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def partial_sibling(out: PathLike) -> Path:
    """The path of a temporary sibling of the output file or directory ``out`` to write and then rename
    into place (``.NAME.partial-HOST-PID-RANDOM``), after removing the temporaries of ``out`` left by dead
    writers on this host (a killed run; never those of a live process or another host).

    Example:
        >>> (tmp / ".s.parquet.partial-otherhost-1-ab").write_text("")  # another host's: kept
        0
        >>> partial_sibling(tmp / "s.parquet").name.startswith(".s.parquet.partial-")
        True
    """
    dest = Path(out)
    _remove_stale_temporaries(dest)
    return _temp_sibling(dest, "partial")


def _commit(tmp: Path, out: Path, overwrite: bool, owned: Collection[str], command: str,
            inputs: Sequence[PathLike]) -> None:
    """Move the finished ``tmp`` to ``out``: a rename, or an atomic exchange with the old output."""
    check_output_dir(out, overwrite=overwrite, owned=owned, command=command, inputs=inputs)  # it may have changed
    if out.is_dir() and any(out.iterdir()):
        if _EXCHANGE is not None and _EXCHANGE(tmp, out):
            shutil.rmtree(tmp)  # now the old output
            return
        old = _temp_sibling(out, "old")  # no atomic exchange here: the old output steps aside first
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old)
        return
    try:
        os.rename(tmp, out)  # replaces an empty directory in one step
    except OSError as e:
        if e.errno not in (errno.EBUSY, errno.EPERM, errno.EXDEV) or not out.is_dir():
            raise
        # An empty mount point cannot be replaced: move the contents in, metadata.json last, so a reader
        # never sees a dataset before it is complete.
        for p in sorted(tmp.iterdir(), key=lambda q: q.name == "metadata.json"):
            os.rename(p, out / p.name)
        tmp.rmdir()


@contextmanager
def atomic_output_dir(out: PathLike, *, overwrite: bool = False, owned: Collection[str] = (),
                      command: str = "this command", inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write into; renamed to ``out`` when the block ends without error.

    On an error (or KeyboardInterrupt) the temporary is removed and ``out`` is untouched. ``out`` is checked
    with :func:`check_output_dir` (``owned``: the relative path patterns the writer produces; ``inputs``:
    the paths it reads, which ``out`` may neither be nor contain) on entry and again before the rename.

    Yields:
        The temporary directory (empty, on the same filesystem as ``out``).

    Example:
        >>> with atomic_output_dir(tmp / "ds", owned={"a.txt"}) as d:
        ...     _ = (d / "a.txt").write_text("complete")
        >>> (tmp / "ds" / "a.txt").read_text(), sorted(p.name for p in tmp.iterdir())
        ('complete', ['ds'])
    """
    dest = Path(os.path.abspath(out))
    if dest.parent == dest:
        raise DataError(f"cannot write a dataset to the root directory {dest}; choose a subdirectory")
    if dest.is_symlink() and dest.is_dir():
        dest = Path(os.path.realpath(dest))
    inputs = list(inputs)
    check_output_dir(dest, overwrite=overwrite, owned=owned, command=command, inputs=inputs)
    make_parent_dirs(dest)
    _remove_stale_temporaries(dest)
    tmp = _temp_sibling(dest, "partial")
    try:
        tmp.mkdir()
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise write_error(dest, e, command) from e
        raise
    try:
        yield tmp
        _commit(tmp, dest, overwrite, owned, command, inputs)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, RecsysEmbError) and is_write_failure(e, dest.parent):
            raise write_error(dest, e, command) from e
        raise
