"""Module-level functions for the process-pool tests of recsys_emb.data.engine (a pool's workers import
them by name)."""

import threading

HELD = threading.Lock()
"""Held by a thread of the test process while the pool runs: a worker forked from that process would
inherit it held and wait on it for ever; a worker of a fresh process finds it free."""


def under_the_lock(x: int) -> int:
    with HELD:
        return x * x
