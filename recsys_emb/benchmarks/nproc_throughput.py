"""Training throughput of 1 vs N local processes (TorchRec model parallel over gloo), same global batch,
with TorchRec's sparse-dist train pipeline and with the plain loop.

Runs ``recsys-emb train --nproc N`` on a config for a fixed number of steps, with per-rank batch
``global_batch / N``, for each N and each ``train.pipeline``; reads samples/s and validation AUC from each
run's summary, and the plan TorchRec chose for the largest N from ``recsys-emb plan``. Writes the table into docs/sharding.md
between ``<!-- nproc:begin -->`` and ``<!-- nproc:end -->``.

    .venv/bin/python bench/nproc_throughput.py                 # Criteo-like DLRM, 2M rows (a few minutes)
    .venv/bin/python bench/nproc_throughput.py --quick         # CI-sized, checks the plumbing only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from recsys_emb.benchmarks.common import REPO, command_line, publish

__all__ = ["DEFAULT", "QUICK_SETS", "run", "format_table", "main"]

DEFAULT: Dict[str, Any] = dict(config="configs/dlrm_criteo_like_full.yaml", steps=120, global_batch=4096, nprocs="1,2",
                               pipelines="sparse_dist,none")
QUICK_SETS = ["data.generate={kind: criteo-like, rows: 20000, scale: 0.001, seed: 0}", "model.bottom_mlp=[16, 8]",
              "model.top_mlp=[16]", "embeddings.dim=8"]


def _cli(args: List[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"recsys-emb {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def run(config: str = DEFAULT["config"], nprocs: Sequence[int] = (1, 2), steps: int = DEFAULT["steps"],
        global_batch: int = DEFAULT["global_batch"], sets: Sequence[str] = (), quick: bool = False,
        out_dir: Optional[str] = None, pipelines: Sequence[str] = ("sparse_dist", "none")) -> Dict[str, Any]:
    """Train ``config`` (with the overrides ``sets``; ``quick``: tiny generated data) for ``steps`` steps
    with each process count in ``nprocs`` at the same global batch, with each ``train.pipeline`` of
    ``pipelines``; returns one row per (count, pipeline) (samples/s, ratio to the first count with the same
    pipeline, ratio to the first pipeline at the same count, valid AUC) and TorchRec's plan for the
    largest count.

    The runs are ``recsys-emb`` processes started in the checkout (:data:`~recsys_emb.benchmarks.common.REPO`),
    so relative config paths are read from there.
    """
    work = Path(out_dir or tempfile.mkdtemp(prefix="nproc_bench_"))
    sets = list(sets)
    if quick:
        sets += [f"data.path={work / 'data'}", *QUICK_SETS]
    rows = []
    for n in nprocs:
        if global_batch % n:
            raise ValueError(f"--global-batch={global_batch} is not divisible by nproc={n}")
        for pipeline in pipelines:
            out = work / f"run{n}-{pipeline}"
            run_sets = sets + [f"data.batch_size={global_batch // n}", f"train.max_steps={steps}",
                               "train.checkpoint_every=0", "train.eval_every=0", "train.progress=false",
                               "train.log_every=0", f"train.pipeline={pipeline}", f"train.out_dir={out}"]
            _cli(["train", "--config", config, "--nproc", str(n), *sum((["--set", s] for s in run_sets), [])])
            s = json.loads((out / "summary.json").read_text())
            rows.append({"nproc": n, "pipeline": s["train_pipeline"], "samples_per_s": s["samples_per_s"],
                         "steps": s["steps"], "valid_auc": s["valid"]["auc"], "embedding_bytes": s["embedding_bytes"]})
    for r in rows:
        same_loop = next(x for x in rows if x["pipeline"] == r["pipeline"])
        same_n = next(x for x in rows if x["nproc"] == r["nproc"])
        r["ratio"] = r["samples_per_s"] / same_loop["samples_per_s"]
        r["vs_first_loop"] = r["samples_per_s"] / same_n["samples_per_s"]
    plan = _cli(["plan", "--config", config, "--world-size", str(max(nprocs)),
                 *sum((["--set", s] for s in sets), [])]).stdout
    return {"rows": rows, "plan": plan, "config": config, "steps": steps,
            "global_batch": global_batch, "cpus": os.cpu_count()}


def format_table(res: Dict[str, Any], command: str) -> str:
    """The results of :func:`run` as the README block (Markdown), ``command`` under it."""
    lines = [f"`{res['config']}`: {res['steps']} steps at global batch {res['global_batch']} (per-rank batch = "
             f"global / N), fused row-wise Adagrad, gloo on loopback, {res['cpus']} CPU cores "
             f"({platform.machine()}). Measured in one run:", "",
             "| processes | train loop | samples/s | vs 1 process | vs the first loop | valid AUC |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['nproc']} | {r['pipeline']} | {r['samples_per_s']:,.0f} | {r['ratio']:.2f} | "
                     f"{r['vs_first_loop']:.2f} | {r['valid_auc']:.4f} |")
    lines += ["", "Plan for the largest world size (`recsys-emb plan`):", "", "```text", res["plan"].rstrip(), "```",
              "", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write the README block; returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny generated data, few steps")
    p.add_argument("--config", default=DEFAULT["config"])
    p.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT['steps']} (quick: 10)")
    p.add_argument("--global-batch", type=int, default=None, help=f"default {DEFAULT['global_batch']} (quick: 256)")
    p.add_argument("--nprocs", default=DEFAULT["nprocs"], help="comma-separated process counts; the first is the baseline")
    p.add_argument("--pipelines", default=DEFAULT["pipelines"],
                   help="comma-separated train.pipeline values (sparse_dist, none); the first is the baseline")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--out-dir", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--readme", default=str(REPO / "docs" / "sharding.md"))
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
    steps = args.steps or (10 if args.quick else DEFAULT["steps"])
    global_batch = args.global_batch or (256 if args.quick else DEFAULT["global_batch"])
    res = run(args.config, [int(n) for n in args.nprocs.split(",")], steps, global_batch, args.set, args.quick,
              args.out_dir, args.pipelines.split(","))
    text = format_table(res, command_line("bench/nproc_throughput.py", argv))
    return publish(text, None if args.no_readme else Path(args.readme), "nproc", "## Throughput: 1 vs N processes")
