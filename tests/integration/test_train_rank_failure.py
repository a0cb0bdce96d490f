"""A rank that fails in a two-node run (two launchers on 127.0.0.1, one rank each) ends the whole job:
its launcher reports its traceback and exits non-zero, the other node's rank stops instead of waiting
in a collective, and every rank's log stays in the run directory.

The failure is the trainer's fault hook with a malformed value on node 1 only (``RECSYS_EMB_FAULT_HOLD``
is parsed when training starts and raises ``ValueError``), so rank 1 fails inside the training loop's
setup while rank 0 goes on into its first all-to-all.
"""

import json

from launch_helpers import two_nodes

from recsys_emb.training import FAULT_HOLD_ENV


def test_a_rank_failure_ends_both_nodes_with_its_traceback(tmp_path):
    out = tmp_path / "run"
    node0, node1 = two_nodes(tmp_path / "data", out, batch_size=128, rows=3000,
                             envs=({}, {FAULT_HOLD_ENV: "not-a-step"}))
    assert node1.returncode == 1, node1.stderr[-3000:]
    assert "rank 1 (local rank 0" in node1.stderr and "failed first with exit code 1" in node1.stderr
    assert "Traceback (most recent call last)" in node1.stderr
    assert f"ValueError: {FAULT_HOLD_ENV}='not-a-step': expected STEP:PATH" in node1.stderr
    # rank 0 loses its peer in a collective: it fails too (gloo's closed connection) instead of hanging
    assert node0.returncode != 0, node0.stderr[-3000:]
    assert "rank 0 (local rank 0" in node0.stderr
    logs = {p.name.rsplit("-", 1)[1]: p for p in (out / "logs").iterdir()}
    assert sorted(logs) == ["node0", "node1"]
    error = json.loads((logs["node1"] / "rank1" / "error.json").read_text())
    assert "in fit" in error["message"]["extraInfo"]["py_callstack"]
    assert "ValueError" in (logs["node1"] / "rank1" / "stderr.log").read_text()
    assert (logs["node0"] / "rank0" / "stderr.log").read_text().strip()
