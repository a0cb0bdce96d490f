"""Where ``preprocess`` runs its per-unit functions: ``process`` (a pool of worker processes on this
machine) or ``ray`` (Ray tasks on a local or an existing cluster). Both run the same functions and return
their results in unit order, so the output is the same byte for byte whichever runs them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import re
import socket
import sys
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import pyarrow as pa

from recsys_emb.errors import ConfigError, RecsysEmbError

__all__ = ["ENGINES", "MapUnits", "RAY_MAX_RETRIES", "map_ordered", "ray_map_units", "require_ray", "unit_engine"]

logger = logging.getLogger(__name__)

ENGINES = ("process", "ray")
"""The engines of :func:`unit_engine` (``preprocess --engine``)."""
RAY_MAX_RETRIES = 3
"""Times Ray runs a unit's task again when the worker process running it dies (killed, out of memory, its
machine lost). A unit's function rewrites whatever an earlier try of it left, so a re-run unit leaves
neither partial nor duplicate files. An error the function raises (a malformed line) is not retried."""
RAY_INSTALL = "pip install 'recsys_emb[ray]'"
_CONNECT_TIMEOUT_S = 10.0

MapUnits = Callable[[Callable[[Any], Any], Sequence[Any]], Iterable[Any]]
"""``map_units(fn, items)``: ``fn(item)`` for every item, in order."""


def _init_worker() -> None:
    # One process per core: Arrow's own thread pool would make each worker fight the others for cores.
    pa.set_cpu_count(1)


def _module_of(fn: Callable[[Any], Any]) -> Optional[str]:
    while isinstance(fn, partial):
        fn = fn.func
    return getattr(fn, "__module__", None)


def pool_context(fn: Callable[[Any], Any]) -> Any:
    """The ``multiprocessing`` context of :func:`map_ordered`'s pool: ``forkserver`` where the platform has
    it, else ``spawn``; never a plain ``fork``. A process forked from this one inherits its locks in
    whatever state its other threads held them (Arrow's, the allocator's, a thread pool's), and a worker
    forked at the wrong moment waits on such a lock for ever; the fork server forks its workers from a
    process with one thread. It preloads ``fn``'s module, so each worker starts with it imported."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    module = _module_of(fn)
    if module and module != "__main__":
        ctx.set_forkserver_preload([module])  # effective when this process starts its fork server
    return ctx


def map_ordered(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> Iterator[Any]:
    """``fn`` over ``items``, results in order: in this process for one worker or item, else in a pool of
    ``workers`` processes (:func:`pool_context`; ``fn`` and the items are pickled to them, so ``fn`` must be
    a module-level function or a ``functools.partial`` of one)."""
    if workers <= 1 or len(items) <= 1:
        yield from (fn(x) for x in items)
        return
    ctx = pool_context(fn)
    with _main_not_imported(fn):  # the workers start inside the Pool's constructor
        pool = ctx.Pool(min(workers, len(items)), initializer=_init_worker)
    with pool:
        yield from pool.imap(fn, items, chunksize=1)


@contextmanager
def _main_not_imported(fn: Callable[[Any], Any]) -> Iterator[None]:
    """While the pool starts its workers, hide where ``__main__`` came from, unless ``fn`` lives there.

    A ``forkserver`` or ``spawn`` worker imports the parent's main script (as ``__mp_main__``) before its
    first task. A script that calls the library at its top level, without ``if __name__ == "__main__":``,
    would then run again in every worker, and its call to start a pool there fails in the worker, which
    the pool replaces for ever: a hang. The workers run library functions only, so they need no main
    script; one whose ``fn`` is the script's own gets the usual import."""
    main = sys.modules.get("__main__")
    if main is None or _module_of(fn) == "__main__":
        yield
        return
    saved: Dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"the ray engine needs Ray, which is not installed ({e}); install it with: {RAY_INSTALL}") from None
    return ray


def _run_unit(fn: Callable[[Any], Any], item: Any) -> Any:
    """A Ray task: one unit's function, with Arrow on one thread as in the process pool."""
    _init_worker()
    return fn(item)


def ray_map_units(fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """``fn(item)`` for every item as Ray tasks of one CPU each, on the cluster this process is connected
    to (``ray.init``), results in order; a task whose worker process dies is run again (up to
    :data:`RAY_MAX_RETRIES` times). An error raised by ``fn`` is raised here as itself. Tasks still
    pending when the consumer stops (an error) are cancelled.

    Every worker must import ``recsys_emb`` and see the inputs and the output's parent directory at the
    same paths as this process (a shared file system on a cluster).

    Example (any ``map_units`` hook takes it, after ``ray.init()``; not run here):
        >>> import ray  # doctest: +SKIP
        >>> from recsys_emb.data.criteo import preprocess  # doctest: +SKIP
        >>> ray.init(address="auto")  # doctest: +SKIP
        >>> preprocess("day_*.gz", "/shared/criteo", map_units=ray_map_units)  # doctest: +SKIP
    """
    ray = require_ray()
    if not ray.is_initialized():
        raise ConfigError("ray_map_units needs a Ray connection: call ray.init() first (or use --engine ray, "
                          "which starts or joins a cluster)")
    task = ray.remote(num_cpus=1, max_retries=RAY_MAX_RETRIES)(_run_unit)
    fn_ref = ray.put(fn)  # the same function for every unit: shipped once
    refs: List[Any] = [task.remote(fn_ref, x) for x in items]
    try:
        for i in range(len(refs)):
            try:
                result = ray.get(refs[i])
            except ray.exceptions.RayTaskError as e:  # fn raised: its own error, not Ray's wrapper
                cause = e.cause if isinstance(e.cause, BaseException) else None
                raise (cause or e) from None
            except ray.exceptions.RayError as e:
                raise RecsysEmbError(f"ray engine: task {i + 1} of {len(refs)} of this pass was lost after "
                                     f"{RAY_MAX_RETRIES} retries: {' '.join(str(e).split())[:300]}") from None
            finally:
                refs[i] = None  # done: never cancelled below, and its result may leave the object store
            yield result
    finally:
        for ref in refs:
            if ref is not None:  # not started, or running (interrupted): the consumer stopped early
                ray.cancel(ref)


def _check_reachable(address: str) -> None:
    """Fail within seconds where ``ray.init(address=...)`` would retry for minutes: an address of the form
    ``[ray://]host:port`` where nothing listens."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]\s]+?)\]?:(\d+)", address)
    if not m:
        return  # "auto", "local": ray.init says what is wrong at once
    host, port = m.group(1), int(m.group(2))
    try:
        socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                          "`ray start --head` and pass the address it prints (host:6379), or leave --address "
                          "out to start a local cluster") from None


@contextmanager
def unit_engine(engine: str = "process", workers: int = 1, address: Optional[str] = None) -> Iterator[MapUnits]:
    """The ``map_units`` of an engine, for the duration of a ``with`` block.

    ``process``: :func:`map_ordered` over ``workers`` processes. ``ray``: :func:`ray_map_units` on the
    cluster this process is already connected to (``ray.init`` called before), else on the one at
    ``address`` (``host:port`` of its head, or ``auto``), else on a local cluster of ``workers`` CPUs
    started here; a connection or cluster made here is closed at the end.

    Example:
        >>> with unit_engine("process", workers=1) as map_units:
        ...     list(map_units(abs, [-1, 2, -3]))
        [1, 2, 3]
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {list(ENGINES)}")
    if engine == "process":
        if address is not None:
            raise ConfigError(f"--address {address} is for --engine ray; the process engine runs on this machine")
        yield partial(map_ordered, workers=workers)
        return
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        quiet = logging.WARNING if logger.isEnabledFor(logging.INFO) else logging.ERROR
        if address is not None:
            _check_reachable(address)
            try:
                ray.init(address=address, logging_level=quiet)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ConfigError(f"--address {address}: cannot join a Ray cluster there: {' '.join(str(e).split())}"
                                  ) from None
        else:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level=quiet)
        started = True
        logger.info("ray engine: %s", "cluster at " + address if address else f"local cluster of {workers} CPUs")
    elif address is not None:
        logger.warning("ray engine: this process is already connected to a Ray cluster; --address %s is unused", address)
    try:
        yield ray_map_units
    finally:
        if started:
            ray.shutdown()
