"""``preprocess --engine ray`` on a real local Ray cluster (two CPUs, started once for the module): the same
bytes as one worker process, for a Criteo input and a table under a schema; a Ray worker killed in the
middle of a unit's task is replaced and the task run again, with the same bytes and no file left over;
a unit's malformed line, a missing Ray and a wrong ``--address`` as one line ``error: ...``."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from recsys_emb.cli import main
from recsys_emb.data.avazu_like import generate_avazu_like
from recsys_emb.data.criteo import preprocess
from recsys_emb.data.engine import ray_map_units
from waiting import HANG_GUARD_S, wait_until

SCHEMA = Path(__file__).resolve().parents[2] / "recsys_emb" / "configs" / "schemas" / "avazu.yaml"
CRITEO_ARGS = ["--on-bad-line", "skip", "--min-count", "2", "--rows-per-shard", "700", "--unit-mb", "0.1",
               "--no-progress"]
HELD_UNIT = 1


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of two CPUs for the module, shut down and its files removed after."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level=logging.ERROR)
    # the fault-injecting wrapper below travels to the workers by value (this module is not importable there)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def criteo_days(small_raw, tmp_path_factory):
    """Two days, 3,000 rows: plain with two malformed lines (about 7 units of 0.1 MiB), and gzip."""
    d = tmp_path_factory.mktemp("days")
    lines = (small_raw / "criteo_like.tsv").read_text().splitlines()[:3000]
    lines[10] = "\t".join(lines[10].split("\t")[:30])
    lines[1200] = "not a criteo line"
    (d / "day_0").write_text("\n".join(lines[:2000]) + "\n")
    (d / "day_1.gz").write_bytes(gzip.compress(("\n".join(lines[2000:]) + "\n").encode()))
    return d


@pytest.fixture(scope="module")
def criteo_one_worker(criteo_days, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    assert main(["preprocess", "--input", str(criteo_days), "--out", str(out), "--workers", "1", *CRITEO_ARGS]) == 0
    return out


def _files(out: Path):
    """Every file's bytes by relative path; ``metadata.json`` without its ``seconds``."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    meta = json.loads(files.pop("metadata.json"))
    meta.pop("seconds")
    return files, meta


def _same_output(a: Path, b: Path):
    fa, ma = _files(a)
    fb, mb = _files(b)
    assert sorted(fa) == sorted(fb)  # no file missing, none left over
    assert [n for n in fa if fa[n] != fb[n]] == []
    assert ma == mb
    assert sum(n.endswith(".parquet") for n in fa) >= 6, sorted(fa)


def test_missing_ray_and_engine_mistakes_are_one_line(criteo_days, tmp_path, capsys, monkeypatch):
    """Without Ray installed, --engine ray names the extra to install; --address needs --engine ray."""
    out = str(tmp_path / "o")
    cases = [(["--engine", "ray"], "pip install 'recsys_emb[ray]'"),
             (["--address", "127.0.0.1:6379"], "--address 127.0.0.1:6379 is for --engine ray")]
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    for args, message in cases:
        capsys.readouterr()
        assert main(["preprocess", "--input", str(criteo_days), "--out", out, *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def _ray_engine_gives_the_bytes_of_one_worker(criteo_days, criteo_one_worker, tmp_path, capsys):
    """The CLI with --engine ray, on the cluster this process is connected to: Criteo (several units, a gzip
    day, malformed lines skipped) and a table under a schema, each the same bytes as one worker process."""
    assert main(["preprocess", "--input", str(criteo_days), "--out", str(tmp_path / "ray"), "--engine", "ray",
                 *CRITEO_ARGS]) == 0
    _same_output(criteo_one_worker, tmp_path / "ray")
    assert json.loads((tmp_path / "ray" / "metadata.json").read_text())["bad_lines"]["bad_lines"] == 2

    g = generate_avazu_like(tmp_path / "avazu", 3000, seed=3)
    table = ["preprocess", "--schema", str(SCHEMA), "--input", str(g.csv), "--unit-mb", "0.1", "--rows-per-shard",
             "500", "--no-progress"]
    assert main([*table, "--out", str(tmp_path / "t-one"), "--workers", "1"]) == 0
    assert main([*table, "--out", str(tmp_path / "t-ray"), "--engine", "ray"]) == 0
    _same_output(tmp_path / "t-one", tmp_path / "t-ray")
    err = capsys.readouterr().err.splitlines()  # the bad lines' warning, twice; nothing from Ray
    assert [ln for ln in err if not ln.startswith("WARNING recsys_emb.data.criteo.preprocess: skipped 2")] == [], err

    # a unit's own error is not retried: one line naming the line in its file, as with processes
    assert main(["preprocess", "--input", str(criteo_days), "--out", str(tmp_path / "bad"), "--engine", "ray",
                 "--unit-mb", "0.1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{criteo_days / 'day_0'}:11" in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()


def _hold_once(marker: str, fn, item):
    """Unit ``HELD_UNIT``'s write, in a Ray worker: the first try writes the unit's files, then (its result
    not yet returned) writes this process's pid to ``marker`` and waits to be killed; a later try finds
    ``marker`` and runs through, noting its own pid in ``marker.retry``."""
    out = fn(item)
    if getattr(getattr(fn, "func", None), "__name__", "") != "_write_one" or item[0].index != HELD_UNIT:
        return out
    mine = Path(f"{marker}.{os.getpid()}")
    mine.write_text(str(os.getpid()))
    try:
        os.link(mine, marker)  # atomic, and only once: the test reads a whole pid
    except FileExistsError:
        Path(f"{marker}.retry").write_text(str(os.getpid()))
        return out
    guard = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < guard:  # held until the test kills this process (a hang guard, not a wait)
        time.sleep(0.05)
    raise AssertionError("the held task was not killed")


def _a_killed_ray_worker_is_rerun_and_the_output_is_the_same(criteo_days, criteo_one_worker, tmp_path):
    """SIGKILL the Ray worker holding a unit's finished write (its files written, its parse cache deleted,
    its result not returned): Ray runs the task again in another worker, which parses the unit's text
    again and rewrites its files; the output is the one worker's, byte for byte, with nothing left over."""
    marker = tmp_path / "held"

    def held_map(fn, items):
        return ray_map_units(partial(_hold_once, str(marker), fn), items)

    kw = dict(on_bad_line="skip", min_count=2, rows_per_shard=700, unit_bytes=int(0.1 * (1 << 20)))
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(preprocess, criteo_days, tmp_path / "out", map_units=held_map, **kw)
        wait_until(lambda: marker.exists() or run.done(), "the held write of a unit")
        assert marker.exists(), run.result()
        killed = int(marker.read_text())
        os.kill(killed, signal.SIGKILL)
        run.result(timeout=HANG_GUARD_S)
    retried = int((tmp_path / "held.retry").read_text())
    assert retried != killed
    _same_output(criteo_one_worker, tmp_path / "out")


def test_ray_engine_gives_the_bytes_of_one_worker_also_after_a_killed_worker(ray_cluster, criteo_days,
                                                                             criteo_one_worker, tmp_path, capsys):
    # one test, so that one pytest-xdist process starts the cluster, not two
    for sub in ("same", "killed"):
        (tmp_path / sub).mkdir()
    _ray_engine_gives_the_bytes_of_one_worker(criteo_days, criteo_one_worker, tmp_path / "same", capsys)
    _a_killed_ray_worker_is_rerun_and_the_output_is_the_same(criteo_days, criteo_one_worker, tmp_path / "killed")


def test_a_wrong_address_is_one_line(criteo_days, tmp_path):
    """An address where no Ray cluster listens: one line at once, instead of Ray's minutes of retries."""
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).with_name("recsys-emb")
    proc = subprocess.run([str(cli), "preprocess", "--input", str(criteo_days), "--out", str(tmp_path / "o"),
                           "--engine", "ray", "--address", f"127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: --address 127.0.0.1:{port}: no Ray cluster answers there")
    assert proc.stderr.count("\n") == 1 and "ray start --head" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_pool_workers_do_not_inherit_a_lock_another_thread_holds():
    # a plain fork copies this process with HELD locked by the thread below, and the worker waits on it for
    # ever (the hang of a preprocess run inside a process with busy threads); the fork server's workers
    # start from a process of one thread
    import threading

    from engine_helpers import HELD, under_the_lock
    from recsys_emb.data.engine import map_ordered, pool_context

    assert pool_context(under_the_lock).get_start_method() in ("forkserver", "spawn")
    taken, done = threading.Event(), threading.Event()

    def hold():
        with HELD:
            taken.set()
            done.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        taken.wait()
        assert list(map_ordered(under_the_lock, [1, 2, 3], workers=2)) == [1, 4, 9]
    finally:
        done.set()
        holder.join()


def test_a_script_without_a_main_guard_runs_once_and_its_pool_finishes(tmp_path):
    # a fork-server or spawn worker imports the parent's main script before its first task; a script that
    # starts a pool at its top level would run again in every worker, fail there, and the pool would
    # replace the failed workers for ever
    script = tmp_path / "top_level.py"
    script.write_text(
        "import os\n"
        "from engine_helpers import under_the_lock\n"
        "from recsys_emb.data.engine import map_ordered\n"
        "with open(os.environ['TOP_LEVEL_MARKER'], 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "print(list(map_ordered(under_the_lock, [1, 2, 3], workers=2)))\n"
        "import __main__\n"
        "print(__main__.__file__ == __file__, __main__.__spec__)\n")
    marker = tmp_path / "ran"
    env = {**os.environ, "TOP_LEVEL_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["[1, 4, 9]", "True None"], proc.stdout
    assert len(marker.read_text().splitlines()) == 1  # the script ran in this process only
