"""``predict`` killed with SIGKILL while writing: the scores file is never half written, and the temporary
the killed process leaves (``.OUT.partial-HOST-PID-RANDOM``) is removed by the next writer of the same
file, as dataset writers remove theirs; the temporary of a writer that is still alive is kept. Real
processes: each writer is held after its first block is written (a pipe handshake, no timing)."""

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.scoring_helpers import ROOT, criteo_lines, tiny_model_dir
from waiting import HANG_GUARD_S

_HELD_WRITER = textwrap.dedent("""
    import sys
    from recsys_emb.model_dir import load_model
    from recsys_emb.scoring import predict

    def tick(rows):  # after the first block: the temporary holds it; wait for the parent's word
        if rows and not getattr(tick, "held", False):
            tick.held = True
            print("writing", flush=True)
            sys.stdin.readline()

    predict(load_model(sys.argv[1]), sys.argv[2], sys.argv[3], chunk_bytes=4096, progress=tick, overwrite=True)
    print("done", flush=True)
""")


def _held_writer(model: Path, tsv: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _HELD_WRITER, str(model), str(tsv), str(out)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the child holds its first written block (or has died)
    assert line.strip() == "writing", proc.communicate(timeout=HANG_GUARD_S)[1][-2000:]
    return proc


def _temporaries(out: Path) -> dict:
    """pid -> path of every temporary of ``out`` (``.OUT.partial-HOST-PID-RANDOM``, or ``-PID`` alone)."""
    found = {}
    for p in out.parent.glob(f".{out.name}.partial-*"):
        m = re.search(r"partial-(?:.+-)?(\d+)-[0-9a-f]{8}$|partial-(\d+)$", p.name)
        assert m is not None, p.name
        found[int(m.group(1) or m.group(2))] = p
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict-kill")
    lines = criteo_lines(base, 400)
    (base / "day.tsv").write_text("\n".join(lines) + "\n")
    return tiny_model_dir(base / "model", lines), base / "day.tsv"


def test_a_killed_predicts_temporary_is_removed_by_the_next_writer_and_a_live_ones_kept(setup, tmp_path):
    from recsys_emb.model_dir import load_model
    from recsys_emb.scoring import predict

    model, tsv = setup
    out = tmp_path / "scores.parquet"
    killed = _held_writer(model, tsv, out)
    assert set(_temporaries(out)) == {killed.pid} and _temporaries(out)[killed.pid].stat().st_size > 0
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=HANG_GUARD_S)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and set(_temporaries(out)) == {killed.pid}  # the kill leaves its temporary

    live = _held_writer(model, tsv, out)  # the next writer of the same file
    try:
        assert set(_temporaries(out)) == {live.pid}  # before: the killed writer's temporary stayed forever
        r = predict(load_model(model), tsv, out)  # one more writer, while the live one holds its temporary
        assert set(_temporaries(out)) == {live.pid}
        assert pq.read_table(out).num_rows == r.rows == 400
        stdout, stderr = live.communicate("go\n", timeout=HANG_GUARD_S)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert live.returncode == 0 and stdout.strip() == "done", stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]
    assert pq.read_table(out).num_rows == 400
