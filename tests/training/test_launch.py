"""recsys_emb.training.launch: workers under torchrun's elastic agent (real processes on loopback), their
logs and error files, failure propagation, worker exit."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recsys_emb.errors import ConfigError
from recsys_emb.training.launch import launch
from waiting import HANG_GUARD_S


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
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 3
    assert done.stdout == "result line without newline"
    assert "log line" in done.stderr


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


def _rank_dirs(log_dir: Path) -> dict:
    (launch_dir,) = log_dir.iterdir()  # one launch, one node
    assert launch_dir.name.endswith("-node0"), launch_dir.name
    return {p.name: p for p in launch_dir.iterdir()}


def test_launch_gives_every_rank_torchrun_variables_and_keeps_its_output(tmp_path):
    script = _script(tmp_path, """
        import os, sys
        print(" ".join(os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "OMP_NUM_THREADS")))
        print("stderr of rank", os.environ["RANK"], file=sys.stderr)
    """)
    logs = tmp_path / "logs"
    assert launch([script], nproc=2, log_dir=logs, env={"OMP_NUM_THREADS": "3"}) == 0
    ranks = _rank_dirs(logs)
    assert sorted(ranks) == ["rank0", "rank1"]
    for r in (0, 1):
        rank, world, local, addr, threads = (ranks[f"rank{r}"] / "stdout.log").read_text().split()
        assert (rank, world, local, threads) == (str(r), "2", str(r), "3") and addr
        assert (ranks[f"rank{r}"] / "stderr.log").read_text().strip() == f"stderr of rank {r}"
    assert "OMP_NUM_THREADS" not in os.environ or os.environ["OMP_NUM_THREADS"] != "3"


def test_a_failed_rank_stops_the_others_and_its_traceback_is_reported(tmp_path, caplog):
    # Rank 0 never ends by itself: it waits for a file nobody writes, so launch() returns only if the agent
    # stops it. Its one way out is a hang guard that starts once rank 1 has failed (tests/waiting.py) and
    # leaves a marker, which fails the test: a slow machine cannot turn "rank 0 ended on its own" into a pass.
    pid_file, failed, outlived = tmp_path / "pid0", tmp_path / "rank1-failed", tmp_path / "rank0-ended-itself"
    script = _script(tmp_path, f"""
        import os, sys, time
        pid_file, failed, outlived = {str(pid_file)!r}, {str(failed)!r}, {str(outlived)!r}
        if os.environ["RANK"] == "1":
            while not os.path.exists(pid_file):  # fail only once rank 0 is up and has said who it is
                time.sleep(0.05)
            from recsys_emb.training.launch import record_worker_error
            def load_shard():
                raise ValueError("shard 3 is unreadable")
            try:
                load_shard()
            except ValueError as e:
                record_worker_error(e)
                open(failed, "w").close()
                sys.exit(7)
        with open(pid_file + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        while not os.path.exists(failed):
            time.sleep(0.05)
        time.sleep({HANG_GUARD_S!r})  # the agent stops this rank long before
        open(outlived, "w").close()
    """)
    logs = tmp_path / "logs"
    try:
        with caplog.at_level(logging.ERROR, logger="recsys_emb.training.launch"):
            assert launch([script], nproc=2, log_dir=logs) == 7
        assert not outlived.exists(), "rank 0 was not stopped by the agent: it ended by its hang guard"
        pid = int(pid_file.read_text())
        assert not _alive(pid), f"rank 0 (pid {pid}) still runs after launch returned"
    finally:
        if pid_file.exists():
            _stop(int(pid_file.read_text()))
    report = caplog.text
    assert "rank 1 (local rank 1" in report and "exit code 7" in report
    assert "Traceback" in report and "in load_shard" in report and "ValueError: shard 3 is unreadable" in report
    error = json.loads((_rank_dirs(logs)["rank1"] / "error.json").read_text())
    assert "in load_shard" in error["message"]["extraInfo"]["py_callstack"]


def test_a_crash_without_error_file_is_reported_with_the_end_of_its_stderr(tmp_path, caplog):
    script = _script(tmp_path, """
        import os, sys
        if os.environ["RANK"] == "0":
            print("last words before the crash", file=sys.stderr, flush=True)
            os.abort()
    """)
    with caplog.at_level(logging.ERROR, logger="recsys_emb.training.launch"):
        code = launch([script], nproc=1, log_dir=tmp_path / "logs")
    assert code == 128 + signal.SIGABRT
    assert "signal 6 (SIGABRT)" in caplog.text and "last words before the crash" in caplog.text


@pytest.mark.parametrize("kwargs, words", [
    ({"nnodes": 2}, "needs --rdzv-endpoint HOST:PORT"),
    ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "127.0.0.1:1"}, "--node-rank 2 must be in [0, 1]"),
    ({"nnodes": 2, "rdzv_endpoint": "somehost"}, "must be HOST:PORT"),
    ({"nproc": 0}, "both must be >= 1"),
])
def test_bad_launch_arguments_are_refused_before_anything_starts(tmp_path, kwargs, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        launch(["-c", "pass"], log_dir=tmp_path / "logs", **{"nproc": 1, **kwargs})
    assert not (tmp_path / "logs").exists()
