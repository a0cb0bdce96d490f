"""How the tests wait on another process: on an event (a marker file, a line on a pipe, a row in a storage,
the process's exit), never on a wall-clock guess, and failing at once, with the process's output, when
the process they wait on exits first.

The one wall-clock limit left, :data:`HANG_GUARD_S`, is a guard against a hang (a deadlocked process
would otherwise block the suite for ever), not a pass/fail threshold. It is an hour per wait: beside two
CPU-bound processes on a 2-core machine already at load average 10-15, the slowest whole test that uses it
(tests/reliability/test_search_trials.py, two workers training one after the other) took 12 minutes.
``RECSYS_EMB_TEST_HANG_GUARD_S`` changes it.
"""

import os
import subprocess
import time

__all__ = ["HANG_GUARD_S", "wait_until"]

HANG_GUARD_S = float(os.environ.get("RECSYS_EMB_TEST_HANG_GUARD_S", 3600))
"""Seconds after which a wait is taken for a hang (see the module's docstring)."""


def _output(proc: subprocess.Popen) -> str:
    out, err = proc.communicate()
    return "\n".join(s[-3000:] for s in (out, err) if s)


def wait_until(found, what: str, procs=(), poll_s: float = 0.05):
    """Call ``found()`` until it returns something other than ``None`` or ``False``; return that.

    Fails naming ``what`` as soon as one of ``procs`` (``subprocess.Popen``) has exited, with its output;
    and after :data:`HANG_GUARD_S` (a hang guard, not a threshold)."""
    guard = time.monotonic() + HANG_GUARD_S
    while True:
        hit = found()
        if hit is not None and hit is not False:
            return hit
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"process {p.pid} exited ({p.returncode}) before {what}:\n{_output(p)}")
        if time.monotonic() > guard:
            raise AssertionError(f"hang guard: still waiting for {what} after {HANG_GUARD_S:.0f} s")
        time.sleep(poll_s)
