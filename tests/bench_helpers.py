"""Shared by the benchmark tests (tests/benchmarks/): run a bench/ script or the CLI in a real process,
and read a README block."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", "PYTHONUNBUFFERED": "1"}
PLANNER_WARNINGS = ("TopologyFactory", "StorageReservation", "dense_tensor_estimate", "torchrec.distributed.planner",
                    "torchrec/distributed/planner")


def run(args, timeout=600, ok=True):
    """``python ARGS`` in the checkout; the finished process (asserted to succeed unless ``ok`` is False, and
    then to print no TorchRec planner warning: the demo and every benchmark plan quietly)."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=ENV)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
        noise = [line for line in proc.stderr.splitlines() if any(w in line for w in PLANNER_WARNINGS)]
        assert not noise, "\n".join(noise)
    return proc


def run_script(name, *args, timeout=600):
    """``python bench/NAME ARGS``; its standard output."""
    return run([str(ROOT / "bench" / name), *args], timeout=timeout).stdout


def run_cli(*args, timeout=600, ok=True):
    """``python -m recsys_emb.cli ARGS``; the finished process."""
    return run(["-m", "recsys_emb.cli", *args], timeout=timeout, ok=ok)


def block(text, marker):
    """The body of the ``<!-- marker:begin -->`` ... ``<!-- marker:end -->`` block, asserted to be there once."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1, marker
    return text.split(begin)[1].split(end)[0]
