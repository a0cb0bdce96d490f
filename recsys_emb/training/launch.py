"""Multi-process and multi-node launch through torchrun's elastic agent (``torch.distributed.run``):
what ``recsys-emb train --nproc N [--nnodes M --node-rank K --rdzv-endpoint HOST:PORT]`` uses.

The agent starts ``N`` workers on this node, each ``python -m recsys_emb.cli train ...`` (or any script)
with torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` ...). Every worker's
standard output and error go to ``<log_dir>/<launch>/rank<R>/stdout.log`` / ``stderr.log`` (local rank 0's
also to this terminal), and its uncaught exception, with the traceback, to ``error.json`` beside them.
When a worker fails, the agent stops the others on its node and :func:`launch` logs the failed rank,
its exit code and its traceback, and returns a non-zero code.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from torch.distributed.elastic.multiprocessing.api import LogsDest, LogsSpecs, Std
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from recsys_emb.errors import ConfigError

__all__ = ["RankLogs", "launch", "exit_worker", "free_port", "record_worker_error", "ERROR_FILE_ENV"]

logger = logging.getLogger(__name__)

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"
"""Set by the agent in each worker: where the worker writes its uncaught exception (JSON, with traceback)."""

_TAIL_LINES = 40
"""Lines of a failed worker's stderr.log quoted when it left no error file (a crash outside Python)."""


def exit_worker(code: int = 0) -> None:
    """End a worker process of a finished process group: flush the logs and standard streams, then
    leave with ``os._exit(code)`` without running the interpreter's finalisers.

    Call it last, after ``destroy_process_group`` and once every output is written and closed. Gloo's
    C++ worker threads can outlive ``destroy_process_group`` while Python objects (a sharded model,
    pending all-to-all work) still hold the group; torn down during interpreter finalisation they
    sometimes abort the process with ``terminate called without an active exception`` (SIGABRT, exit
    code -6) after all its work succeeded. Skipping finalisation keeps that from turning a finished
    run into a failed one.

    Example::

        if __name__ == "__main__":
            exit_worker(main())
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            pass
    os._exit(code)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record_worker_error(error: BaseException) -> None:
    """In a worker started by the agent: write ``error`` and the traceback being handled into the
    worker's error file (:data:`ERROR_FILE_ENV`), which the agent reports as the failure's root cause.
    Call it inside the ``except`` block; a no-op outside the agent.

    Example::

        try:
            run()
        except Exception as e:
            record_worker_error(e)
            raise
    """
    if not os.environ.get(ERROR_FILE_ENV):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(error)


class RankLogs(LogsSpecs):
    """torchrun's log layout keyed by global rank: ``<root>/<launch>/rank<R>/{stdout.log, stderr.log,
    error.json}``, where ``<launch>`` is the launch's start time and node rank (``20260101-120000-node0``),
    so the logs of several launches and nodes sharing one run directory never mix. A restarted attempt
    (``max_restarts > 0``) writes to ``rank<R>-attempt<n>``. Local rank 0's streams are also shown on the
    launcher's terminal, each line prefixed with ``[rank<R>]:``.

    Args:
        root: the logs directory (``<run directory>/logs`` for ``recsys-emb train``).
    """

    def __init__(self, root: Union[str, Path]) -> None:
        super().__init__(log_dir=str(root), redirects=Std.ALL, tee={0: Std.ALL})
        self._root = Path(root)
        self._stamp = time.strftime("%Y%m%d-%H%M%S")
        self.launch_dir: Optional[Path] = None
        self.rank_dirs: Dict[int, Path] = {}
        """Local rank -> its log directory, for the latest attempt."""

    @property
    def root_log_dir(self) -> str:
        return str(self._root)

    def reify(self, envs: Dict[int, Dict[str, str]]) -> LogsDest:
        """Create the attempt's directories and name each local rank's files (the agent calls this when
        it starts the workers, after the rendezvous assigned the ranks)."""
        node = envs[0].get("GROUP_RANK", "0") if envs else "0"
        self.launch_dir = self._root / f"{self._stamp}-node{node}"
        stdouts, stderrs, errors = {}, {}, {}
        tee_out, tee_err = {}, {}
        for local_rank, env in envs.items():
            attempt = int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
            name = f"rank{env.get('RANK', local_rank)}" + (f"-attempt{attempt}" if attempt else "")
            d = self.launch_dir / name
            d.mkdir(parents=True, exist_ok=True)
            self.rank_dirs[local_rank] = d
            stdouts[local_rank], stderrs[local_rank] = str(d / "stdout.log"), str(d / "stderr.log")
            errors[local_rank] = str(d / "error.json")
            env[ERROR_FILE_ENV] = errors[local_rank]
            if local_rank == 0:
                tee_out[local_rank], tee_err[local_rank] = stdouts[local_rank], stderrs[local_rank]
        return LogsDest(stdouts, stderrs, tee_out, tee_err, errors, "", "")


def _failure_report(error: ChildFailedError, logs: RankLogs) -> str:
    """The first failure (by time) of the agent's report: rank, exit code or signal, its traceback (from
    its error file, else the end of its stderr.log) and where every rank's logs are."""
    rank, failure = error.get_first_failure()
    what = f"signal {-failure.exitcode} ({failure.signal_name()})" if failure.exitcode < 0 else \
        f"exit code {failure.exitcode}"
    trace = _traceback_of(failure)
    if not trace:
        stderr = logs.rank_dirs.get(failure.local_rank, Path(os.devnull)) / "stderr.log"
        lines = stderr.read_text(errors="replace").splitlines()[-_TAIL_LINES:] if stderr.is_file() else []
        trace = "\n".join(lines) or "(no error file and an empty stderr.log)"
    others = sorted(set(error.failures) - {rank})
    also = f"; then rank(s) {others} ended (stopped by the agent or failed)" if others else ""
    return (f"rank {rank} (local rank {failure.local_rank}, pid {failure.pid}) failed first with {what}{also}. "
            f"Every rank's logs: {logs.launch_dir}\n{trace}")


def _traceback_of(failure: ProcessFailure) -> str:
    data = failure.error_file_data.get("message") if isinstance(failure.error_file_data, dict) else None
    if not isinstance(data, dict):
        return ""
    extra = data.get("extraInfo") or {}
    return str(extra.get("py_callstack") or data.get("message") or "").rstrip()


def _exit_code(failure: ProcessFailure) -> int:
    return 128 - failure.exitcode if failure.exitcode < 0 else (failure.exitcode or 1)


def launch(args: Sequence[str], nproc: int, log_dir: Union[str, Path], nnodes: int = 1, node_rank: int = 0,
           rdzv_endpoint: Optional[str] = None, env: Optional[Dict[str, str]] = None,
           rdzv_timeout_s: int = 900) -> int:
    """Run ``python *args`` in ``nproc`` workers on this node under torchrun's elastic agent, as node
    ``node_rank`` of ``nnodes``; the workers of all nodes form one process group of
    ``nnodes * nproc`` ranks (rank = ``node_rank * nproc + local rank``).

    Args:
        args: the worker's command after ``python``, e.g. ``["-m", "recsys_emb.cli", "train", "--config", c]``.
        nproc: workers on this node (one per GPU on a GPU node).
        log_dir: where :class:`RankLogs` keeps every worker's output and error file.
        nnodes: nodes of the job; more than one needs ``rdzv_endpoint``.
        node_rank: this node's rank (0 hosts the rendezvous store at ``rdzv_endpoint``).
        rdzv_endpoint: ``HOST:PORT`` of node 0, reachable from every node (torchrun's static rendezvous).
            ``None`` with one node: a free port on this machine (torchrun's ``--standalone``).
        env: extra environment variables of the workers. ``OMP_NUM_THREADS`` defaults to the cores divided
            by ``nproc``, unless set here or in the environment.
        rdzv_timeout_s: how long a node waits for the others to join.

    Returns:
        0 when every worker of this node succeeded; otherwise the first failed worker's exit code
        (``128 + signal`` for a worker killed by a signal) after the others were stopped, with the failure
        and the worker's traceback logged as an error.

    Example::

        code = launch(["-m", "recsys_emb.cli", "train", "--config", "configs/demo.yaml"], nproc=2,
                      log_dir="runs/demo/logs")
    """
    if nproc < 1 or nnodes < 1:
        raise ConfigError(f"--nproc {nproc} / --nnodes {nnodes}: both must be >= 1")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"--node-rank {node_rank} must be in [0, {nnodes - 1}] for --nnodes {nnodes}")
    if nnodes > 1 and not rdzv_endpoint:
        raise ConfigError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (node 0's address and a free port, "
                          f"the same on every node)")
    if rdzv_endpoint is not None:
        host, _, port = rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--rdzv-endpoint {rdzv_endpoint!r} must be HOST:PORT, e.g. 10.0.0.1:29500")
    logs = RankLogs(log_dir)
    if rdzv_endpoint is None:  # one node: torchrun --standalone (the store picks a free port itself)
        backend, endpoint, rdzv_conf, run_id = "c10d", "localhost:0", {}, str(uuid.uuid4())
    else:
        backend, endpoint, rdzv_conf, run_id = "static", rdzv_endpoint, {"rank": node_rank}, "recsys-emb"
    config = LaunchConfig(min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc, run_id=run_id,
                          rdzv_backend=backend, rdzv_endpoint=endpoint, rdzv_configs={**rdzv_conf,
                                                                                      "timeout": rdzv_timeout_s},
                          max_restarts=0, monitor_interval=0.1, start_method="spawn", logs_specs=logs,
                          log_line_prefix_template="[rank${rank}]: ")
    extra = dict(env or {})
    if "OMP_NUM_THREADS" not in {**os.environ, **extra}:
        # as the former local launcher did: oversubscribed OpenMP threads spin against each other and gloo
        extra["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)  # the agent gives its workers a copy of its own environment
    try:
        elastic_launch(config, sys.executable)(*args)
        return 0
    except ChildFailedError as e:
        logger.error("%s", _failure_report(e, logs))
        _, first = e.get_first_failure()
        return _exit_code(first)
    except Exception as e:  # noqa: BLE001 - a rendezvous that never completes, a store that cannot bind
        where = f" (node {node_rank} of {nnodes}, rendezvous {endpoint})"
        logger.error("the launch failed before its workers finished%s: %s: %s", where, type(e).__name__, e)
        return 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

