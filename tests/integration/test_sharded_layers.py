"""Every variant sharded by TorchRec across 2 real processes (gloo on loopback) equals unsharded."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import HANG_GUARD_S

WORKER = Path(__file__).with_name("sharded_worker.py")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "res"
    # plain torchrun, as a user runs a script of their own; its own session, so a hang is cleaned up whole
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(WORKER), str(out)], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=HANG_GUARD_S)  # a hang guard (tests/waiting.py)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log[-3000:]
    return [[json.loads(line) for line in open(f"{out}.rank{r}")] for r in range(2)]


def test_all_cases_ran_on_both_ranks(results):
    for rank in results:
        assert {(r["variant"], r["sharding"]) for r in rank} == {
            (v, s) for v in ("full", "hashed", "multi_hash", "qr", "mixed", "unified")
            for s in ("table_wise", "column_wise")}


@pytest.mark.parametrize("rank", [0, 1])
def test_sharded_forward_and_backward_equal_unsharded(results, rank):
    for r in results[rank]:
        assert r["types"] == [r["sharding"]], r
        # column-wise cuts the (narrow) tables across both ranks; table-wise keeps each on one
        assert r["spans"] == (2 if r["sharding"] == "column_wise" else 1), r
        assert r["forward"] < 1e-5, r
        assert r["after_step"] < 1e-5, r
        assert r["dense_grad"] < 1e-5, r
