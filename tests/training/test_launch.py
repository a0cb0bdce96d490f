"""recsys_emb.training.launch: local multi-process launch and worker exit (real processes on loopback)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from recsys_emb.training.launch import launch_local


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_exit_worker_flushes_output_and_keeps_the_exit_code(tmp_path):
    script = _script(tmp_path, """
        import logging, sys
        from recsys_emb.training.launch import exit_worker
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s", force=True)
        sys.stdout.write("result line without newline")  # buffered: lost by a bare os._exit
        logging.getLogger("w").info("log line")
        exit_worker(3)
    """)
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "result line without newline"
    assert "log line" in done.stderr


def test_launch_local_gives_every_rank_torchrun_variables(tmp_path):
    out = tmp_path / "ranks"
    script = _script(tmp_path, f"""
        import os
        with open({str(out)!r} + os.environ["RANK"], "w") as fh:
            fh.write(" ".join(os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")))
    """)
    assert launch_local(2, [script], timeout_s=60) == 0
    assert (tmp_path / "ranks0").read_text() == "0 2 0 127.0.0.1"
    assert (tmp_path / "ranks1").read_text() == "1 2 1 127.0.0.1"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (a zombie counts as gone: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _stop(pid: int) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_launch_local_returns_the_failed_workers_code_and_stops_the_rest(tmp_path):
    pid_file = tmp_path / "pid0"
    script = _script(tmp_path, f"""
        import os, sys, time
        pid_file = {str(pid_file)!r}
        if os.environ["RANK"] == "1":
            while not os.path.exists(pid_file):  # fail only once rank 0 is up and has said who it is
                time.sleep(0.05)
            sys.exit(7)
        with open(pid_file + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        time.sleep(120)  # rank 0 would outlive the test unless launch_local stops it
    """)
    try:
        assert launch_local(2, [script], timeout_s=60) == 7
        pid = int(pid_file.read_text())
        assert not _alive(pid), f"rank 0 (pid {pid}) still runs after launch_local returned"
    finally:
        if pid_file.exists():
            _stop(int(pid_file.read_text()))


def test_launch_local_times_out_and_stops_the_worker(tmp_path):
    pid_file = tmp_path / "pid0"
    script = _script(tmp_path, f"""
        import os, time
        with open({str(pid_file)!r} + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
        time.sleep(120)
    """)
    try:
        assert launch_local(1, [script], timeout_s=3) == 124
        pid = int(pid_file.read_text())
        assert not _alive(pid), f"the worker (pid {pid}) still runs after launch_local timed out"
    finally:
        if pid_file.exists():
            _stop(int(pid_file.read_text()))
