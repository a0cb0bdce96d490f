"""Local multi-process launch (what ``recsys-emb train --nproc N`` uses): N workers on 127.0.0.1 with
torchrun's environment variables, each running ``python -m recsys_emb.cli train`` (or any script)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["exit_worker", "free_port", "launch_local"]

logger = logging.getLogger(__name__)


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


def launch_local(nproc: int, args: Sequence[str], env: Optional[Dict[str, str]] = None,
                 timeout_s: Optional[float] = None) -> int:
    """Run ``python *args`` (e.g. ``["-m", "recsys_emb.cli", "train", "--config", ...]``) in ``nproc``
    processes forming one process group on loopback, with torchrun's environment variables.

    Returns 0 when every worker succeeds; if one fails, the others are terminated and its exit code
    is returned. Only rank 0's standard output is kept. ``OMP_NUM_THREADS`` defaults to the cores
    divided by ``nproc`` (as torchrun sets it), unless set in the environment.
    """
    if nproc < 1:
        raise ValueError(f"nproc={nproc} must be >= 1")
    port = free_port()
    procs: List[subprocess.Popen] = []
    # like torchrun: split the cores between the workers unless the caller chose (oversubscribed
    # OpenMP threads spin against each other and against gloo)
    threads = {} if "OMP_NUM_THREADS" in {**os.environ, **(env or {})} else {
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    for rank in range(nproc):
        wenv = {**os.environ, **threads, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                "RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(nproc)}
        procs.append(subprocess.Popen([sys.executable, *args], env=wenv,
                                      stdout=None if rank == 0 else subprocess.DEVNULL))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                logger.error("a worker exited with %s; stopping the others", failed[0])
                return int(failed[0])
            if all(c == 0 for c in codes):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                logger.error("workers did not finish within %.0f s", timeout_s)
                return 124
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
