"""Data-path throughput: samples/s of Criteo-schema batches (dense (B, 13), KJT of 26 keys, labels)
built from Parquet shards on one core, plus the generation speed and the preprocessing speed: one worker
parsing the text in every pass (the baseline), then 1 and 2 worker processes with the parse cache (MB/s
of input text, per worker, and the speed-ups), and with ``--engines process ray`` the same as Ray tasks on
a local cluster of 1 and 2 CPUs (the ratio to the process pool of as many workers, in the same run).

    .venv/bin/python bench/data_throughput.py --rows 1000000 --json bench/out/data_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

__all__ = ["TARGET_SAMPLES_PER_S", "run", "format_table", "main"]

TARGET_SAMPLES_PER_S = 500_000
"""What one core should deliver to keep a CPU training step fed."""


def run(workdir: Path, rows: int = 1_000_000, batch_size: int = 4096, scale: float = 0.01,
        epochs: int = 2, workers: Sequence[int] = (1, 2), unit_mb: float = 32.0,
        engines: Sequence[str] = ("process",)) -> Dict[str, Any]:
    """Generate ``rows`` Criteo-like rows under ``workdir`` (reused when present; the generation speed is
    reported only when it ran), preprocess them with each number of ``workers`` (the input cut into units
    of ``unit_mb`` MiB), then read the train split ``epochs`` times in order and shuffled; returns
    settings, speeds (``preprocess``: the first worker count without the parse cache, then one entry per
    worker count with it; MB/s of input text; then, with ``"ray"`` in ``engines``, one entry per worker
    count as Ray tasks on a local cluster of that many CPUs, started before the clock and reported as
    ``startup_seconds``) and the best pass per order."""
    from recsys_emb.data.batches import ParquetBatches
    from recsys_emb.data.criteo import preprocess
    from recsys_emb.data.synthetic import generate_criteo_like

    work = Path(workdir) / f"rows{rows}-scale{scale}"
    raw, processed = work / "raw", work / "processed"
    results: Dict[str, Any] = {"rows": rows, "batch_size": batch_size, "scale": scale,
                               "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                               "cores": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__}
    tsv = raw / "criteo_like.tsv"
    if not (raw / "generator.json").exists() or not tsv.exists():
        g = generate_criteo_like(raw, rows, scale=scale, seed=0, overwrite=True)
        results["generate_rows_per_s"] = round(g.rows / g.seconds)
    results["tsv_bytes"] = tsv.stat().st_size
    results["preprocess"] = []
    # the baseline: one worker parsing the text in every pass (no parse cache)
    for w, cache in [(workers[0], False), *((w, True) for w in workers)]:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        preprocess(tsv, processed, rows_per_shard=1 << 20, overwrite=True, workers=w,
                   unit_bytes=int(unit_mb * (1 << 20)), parse_cache=cache)
        dt, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        mb = tsv.stat().st_size / 1e6
        # CPU seconds (this process and its finished workers) give the speed per core even on a busy machine
        results["preprocess"].append({"engine": "process", "workers": w, "parse_cache": cache, "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2),
                                      "rows_per_s": round(rows / dt), "mb_per_s": round(mb / dt, 1),
                                      "mb_per_s_per_worker": round(mb / dt / w, 1),
                                      "mb_per_cpu_s": round(mb / cpu, 1)})
    if "ray" in engines:
        results["preprocess"] += [_ray_run(tsv, processed, rows, w, unit_mb) for w in workers]
    results["unit_mb"] = unit_mb

    table = []
    for shuffle in (False, True):
        warm = ParquetBatches(processed, "train", batch_size=batch_size, shuffle=shuffle, seed=0)
        next(iter(warm))  # warm-up: imports, page cache
        del warm
        best = 0.0
        for epoch in range(epochs):
            t0 = time.perf_counter()  # a fresh reader per epoch: Parquet decoding is timed too
            ds = ParquetBatches(processed, "train", batch_size=batch_size, shuffle=shuffle, seed=0)
            ds.set_epoch(epoch)
            n = batches = 0
            for b in ds:
                n += b.batch_size
                batches += 1
            dt = time.perf_counter() - t0
            best = max(best, n / dt)
        table.append({"shuffle": shuffle, "batches": batches, "samples": n, "samples_per_s": round(best),
                      "batches_per_s": round(best / batch_size, 1)})
    results["iterate"] = table
    results["target_samples_per_s"] = TARGET_SAMPLES_PER_S
    return results


def _ray_run(tsv: Path, processed: Path, rows: int, workers: int, unit_mb: float) -> Dict[str, Any]:
    """One preprocess as Ray tasks on a local cluster of ``workers`` CPUs (its start timed apart: a cluster
    outlives many runs); the first tasks of each worker import the library, inside the timed run."""
    import logging

    from recsys_emb.data.criteo import preprocess
    from recsys_emb.data.engine import require_ray

    ray = require_ray()
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR)
    startup = time.perf_counter() - t0
    try:
        cpu0, t0 = _cpu_seconds() + _descendants_cpu_seconds(), time.perf_counter()
        preprocess(tsv, processed, rows_per_shard=1 << 20, overwrite=True, workers=workers,
                   unit_bytes=int(unit_mb * (1 << 20)), parse_cache=True, engine="ray")
        # the cluster's processes (Ray's own and its workers) are alive: counted before it stops
        dt, cpu = time.perf_counter() - t0, _cpu_seconds() + _descendants_cpu_seconds() - cpu0
    finally:
        ray.shutdown()
    mb = tsv.stat().st_size / 1e6
    return {"engine": "ray", "workers": workers, "parse_cache": True, "seconds": round(dt, 2), "cpu_seconds": round(cpu, 2),
            "rows_per_s": round(rows / dt), "mb_per_s": round(mb / dt, 1), "mb_per_s_per_worker": round(mb / dt / workers, 1),
            "mb_per_cpu_s": round(mb / cpu, 1), "startup_seconds": round(startup, 1)}


def _descendants_cpu_seconds() -> float:
    """CPU seconds of every live process below this one (Linux ``/proc``; 0 elsewhere): a local Ray
    cluster's processes are its children and grandchildren, alive while it runs."""
    below: Dict[int, list] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except OSError:
            continue
        below.setdefault(int(fields[1]), []).append((int(d.name), fields))
    tick, total, todo = os.sysconf("SC_CLK_TCK"), 0.0, [os.getpid()]
    while todo:
        for pid, fields in below.get(todo.pop(), []):
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime (stat fields 14, 15)
            todo.append(pid)
    return total


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def format_table(results: Dict[str, Any]) -> str:
    """The results of :func:`run` as the text the script prints."""
    lines = [f"{'shuffle':>8} {'batches':>8} {'samples/s':>12} {'batches/s':>10}   "
             f"(batch {results['batch_size']}, 1 thread)"]
    for r in results["iterate"]:
        lines.append(f"{str(r['shuffle']):>8} {r['batches']:>8} {r['samples_per_s']:>12,} {r['batches_per_s']:>10}")
    if "generate_rows_per_s" in results:
        lines.append(f"generate_rows_per_s: {results['generate_rows_per_s']:,}")
    runs = results.get("preprocess", [])
    base = runs[0] if runs else None
    cached = next((r for r in runs if r.get("parse_cache")), None)
    pool = {r["workers"]: r for r in runs if r.get("parse_cache") and r.get("engine", "process") == "process"}
    for r in runs:
        assert base is not None
        if r.get("engine") == "ray":
            same = pool.get(r["workers"])
            vs = f"x{same['seconds'] / r['seconds']:.2f} vs the process pool of {r['workers']}" if same else "no pool run"
            lines.append(f"preprocess, {r['workers']} Ray worker(s), with parse cache: {r['seconds']:.1f}s, "
                         f"{r['rows_per_s']:,} rows/s, {r['mb_per_s']} MB/s ({r['mb_per_s_per_worker']} MB/s per worker; "
                         f"{vs}); {r['cpu_seconds']:.1f} CPU s, {r['mb_per_cpu_s']} MB per CPU second; "
                         f"local cluster started in {r['startup_seconds']:.1f}s before")
            continue
        vs_list = [f"x{base['seconds'] / r['seconds'] * base['workers']:.2f} vs 1 worker without"]
        if r.get("parse_cache") and cached is not None:
            vs_list.append(f"x{cached['seconds'] / r['seconds'] * cached['workers']:.2f} vs 1 worker with")
        mode = "with" if r.get("parse_cache") else "without"
        lines.append(f"preprocess, {r['workers']} worker(s), {mode} parse cache: {r['seconds']:.1f}s, "
                     f"{r['rows_per_s']:,} rows/s, {r['mb_per_s']} MB/s ({r['mb_per_s_per_worker']} MB/s per worker; "
                     f"{', '.join(vs_list)}); {r['cpu_seconds']:.1f} CPU s, {r['mb_per_cpu_s']} MB per CPU second")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run on one thread, write ``--json``; returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="Criteo-like rows to generate")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--workdir", default="bench/out/data_throughput", help="generated data (reused if present)")
    p.add_argument("--epochs", type=int, default=2, help="timed passes over the train split")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="preprocess with each of these")
    p.add_argument("--unit-mb", type=float, default=32.0, help="MiB per work unit of the preprocess")
    p.add_argument("--engines", nargs="+", choices=["process", "ray"], default=["process"],
                   help="also preprocess as Ray tasks (ray: a local cluster of each --workers count)")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--quick", action="store_true", help="200k rows, 1 epoch (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.epochs = 200_000, 1
    torch.set_num_threads(1)  # the figure is per core
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import pyarrow as pa

    pa.set_cpu_count(1)  # Arrow's thread pool too: one worker = one core
    results = run(Path(args.workdir), rows=args.rows, batch_size=args.batch_size, scale=args.scale, epochs=args.epochs,
                  workers=args.workers, unit_mb=args.unit_mb, engines=args.engines)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return format_table(results)
