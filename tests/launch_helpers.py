"""Training runs of the integration tests as real processes: `recsys-emb train` on one node (`--nproc`)
or as two "nodes" on 127.0.0.1 (two launchers), on the small Criteo-like config."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

from recsys_emb.training.launch import free_port
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]


def train_args(data: Path, out: Path, nproc: int, batch_size: int, rows: int = 20000,
               pipeline: str = "sparse_dist") -> List[str]:
    sets = [f"train.pipeline={pipeline}", "train.eval_every=25", "train.checkpoint_every=20", f"data.path={data}", f"data.generate={{kind: criteo-like, rows: {rows}, scale: 0.001, seed: 0}}",
            f"data.batch_size={batch_size}", "data.eval_batch_size=1500", "model.bottom_mlp=[16, 8]",
            "model.top_mlp=[16]", "embeddings.variant=hashed", "embeddings.dim=8", "embeddings.min_rows=64",
            "train.sharding_types=[table_wise]", "train.progress=false", "train.log_every=1",
            f"train.out_dir={out}"]
    args = [sys.executable, "-m", "recsys_emb.cli", "train", "--config", str(ROOT / "configs" / "demo.yaml"),
            "--nproc", str(nproc), *sum((["--set", s] for s in sets), [])]
    return args


def run_train(data: Path, out: Path, nproc: int, batch_size: int, pipeline: str = "sparse_dist") -> dict:
    """The run's summary. ``nproc`` 1 trains in this process (``recsys-emb train`` without ``--nproc`` is
    one process, no launcher: the command's ``main`` here is the same code); more start real processes."""
    args = train_args(data, out, nproc, batch_size, pipeline=pipeline)
    if nproc == 1:
        from recsys_emb.cli import main

        assert main(args[3:]) == 0  # after [python, -m, recsys_emb.cli]
    else:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=HANG_GUARD_S,
                              env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def run_nodes(node_args: List[List[str]], envs: List[dict], timeout: float = HANG_GUARD_S,
              give_up=lambda first: False) -> List[subprocess.CompletedProcess]:
    """Start one launcher per "node" (each in its own session), wait for all; whatever is left after
    ``timeout`` (a hang guard, tests/waiting.py) is killed with its workers. When ``give_up(first)`` holds
    for the first node's finished process, the others are killed at once and only the first is returned."""
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1", **e}) for a, e in zip(node_args, envs)]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
            if give_up(done[0]):
                break
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return done


def _port_taken(node0: subprocess.CompletedProcess) -> bool:
    """Node 0 could not listen on the rendezvous port: another process bound it after free_port() chose it."""
    return node0.returncode != 0 and "EADDRINUSE" in node0.stderr


def two_nodes(data: Path, out: Path, batch_size: int, envs=({}, {}), rows: int = 20000,
              timeout: float = HANG_GUARD_S, pipeline: str = "sparse_dist") -> List[subprocess.CompletedProcess]:
    """Two launchers on 127.0.0.1, one rank each, node 0 hosting the rendezvous; ``envs``: each node's
    extra environment; ``pipeline``: ``train.pipeline``.

    The port comes from :func:`free_port`, which frees it again before node 0 binds it; when another
    process took it meanwhile (node 0 fails with EADDRINUSE), both nodes are stopped and started again on
    a new port, so the race costs a retry, never a failed test."""
    for _ in range(10):
        endpoint = f"127.0.0.1:{free_port()}"
        done = run_nodes([train_args(data, out, 1, batch_size, rows, pipeline) + ["--nnodes", "2", "--node-rank", str(k),
                                                                  "--rdzv-endpoint", endpoint] for k in (0, 1)],
                         list(envs), timeout, give_up=_port_taken)
        if not _port_taken(done[0]):
            return done
    raise AssertionError(f"10 free ports in a row were taken before node 0 bound them:\n{done[0].stderr[-2000:]}")
