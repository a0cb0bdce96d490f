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
    proc = subprocess.run(train_args(data, out, nproc, batch_size, pipeline=pipeline), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def run_nodes(node_args: List[List[str]], envs: List[dict], timeout: float = 300) -> List[subprocess.CompletedProcess]:
    """Start one launcher per "node" (each in its own session), wait for all; whatever is left after
    ``timeout`` is killed with its workers."""
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1", **e}) for a, e in zip(node_args, envs)]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return done


def two_nodes(data: Path, out: Path, batch_size: int, envs=({}, {}), rows: int = 20000, timeout: float = 300
              ) -> List[subprocess.CompletedProcess]:
    """Two launchers on 127.0.0.1, one rank each, node 0 hosting the rendezvous; ``envs``: each node's
    extra environment."""
    endpoint = f"127.0.0.1:{free_port()}"
    return run_nodes([train_args(data, out, 1, batch_size, rows) + ["--nnodes", "2", "--node-rank", str(k),
                                                              "--rdzv-endpoint", endpoint] for k in (0, 1)],
                     list(envs), timeout)
