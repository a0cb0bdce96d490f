"""Process-level settings for training and benchmarks (allocator behaviour, threads)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Dict

__all__ = ["MALLOC_SETTINGS", "reexec_with_malloc_settings"]

logger = logging.getLogger(__name__)

MALLOC_SETTINGS: Dict[str, str] = {
    # glibc hands allocations above its mmap threshold back to the OS on free, so every training
    # step page-faults its (B x D) activations and gradients in again; measured here, that made a
    # (4096 x 1664) float multiply 15x slower. Keeping freed memory in the heap fixes it (the
    # effect jemalloc/tcmalloc give TorchRec deployments).
    "MALLOC_MMAP_THRESHOLD_": str(4 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(64 << 30),
    "MALLOC_TOP_PAD_": str(512 << 20),
}


def reexec_with_malloc_settings() -> None:
    """Restart this process once with :data:`MALLOC_SETTINGS` in its environment (glibc reads them
    only at start-up). A no-op when they are set already or ``RECSYS_EMB_NO_REEXEC=1``."""
    if os.environ.get("RECSYS_EMB_NO_REEXEC") == "1" or all(k in os.environ for k in MALLOC_SETTINGS):
        return
    env = {**os.environ, **{k: v for k, v in MALLOC_SETTINGS.items() if k not in os.environ}}
    env["RECSYS_EMB_NO_REEXEC"] = "1"
    argv = [sys.executable, *sys.orig_argv[1:]]
    logger.debug("re-executing with malloc settings: %s", argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
