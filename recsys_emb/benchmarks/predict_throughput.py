"""Scoring throughput: samples/s of ``predict`` from raw Criteo TSV and from processed Parquet (reading,
parsing, the vocabulary, the forward and writing the scores) and of the exported program
(``torch.export``, fp32 and int8 tables) on prebuilt batches, against the eager model's forward alone on
the same rows (batches built beforehand), measured in the same run.

    .venv/bin/python bench/predict.py --rows 200000 --json bench/out/predict.json

The model is a DLRM with the chosen variant built for the generated data's vocabulary and saved as a model
directory; its weights are the initial ones (scoring speed does not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

__all__ = ["run", "format_table", "main"]


def _model(processed: Path, variant: str, dim: int, out: Path) -> Any:
    from recsys_emb.config import config_from_dict, config_to_dict
    from recsys_emb.data.parquet import read_metadata, schema_from_metadata
    from recsys_emb.data.vocabulary import load_vocabulary
    from recsys_emb.model_dir import SavedModel, load_model, provenance, save_model_dir
    from recsys_emb.training.build import build_model, input_features

    meta = read_metadata(processed)
    cfg = config_from_dict({"data": {"path": str(processed)}, "model": {"kind": "dlrm"},
                            "embeddings": {"variant": variant, "dim": dim}})
    schema = schema_from_metadata(meta)
    torch.manual_seed(0)
    module = build_model(cfg, schema).eval()
    features = input_features(module)
    dataset = {k: meta[k] for k in ("dataset", "oov_ids", "vocab_sizes", "dense_transform")}
    save_model_dir(SavedModel(module, features, schema, config_to_dict(cfg), dataset, load_vocabulary(processed),
                              provenance("bench predict")), out, overwrite=True)
    return load_model(out)


def _best(fn: Callable[[], int], repeats: int) -> Dict[str, Any]:
    best = 0.0
    n = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t0))
    return {"samples": n, "samples_per_s": round(best)}


def run(workdir: Path, rows: int = 200_000, variant: str = "qr", dim: int = 16, batch_size: int = 16384,
        scale: float = 0.01, repeats: int = 2) -> Dict[str, Any]:
    """Generate and preprocess ``rows`` Criteo-like rows under ``workdir`` (reused when present), save a
    model directory, and time, over all rows: the eager forward on prebuilt batches of ``batch_size``
    (the baseline), the exported program (``torch.export``, fp32 and int8 tables, loaded from its file) on
    the same batches, ``predict`` from the TSV and ``predict`` from the Parquet files; best of ``repeats``."""
    from recsys_emb.data.batches import ParquetBatches
    from recsys_emb.data.criteo import preprocess
    from recsys_emb.data.parquet import SPLITS
    from recsys_emb.data.synthetic import generate_criteo_like
    from recsys_emb.inference import KJTScorer, load_program, write_exported
    from recsys_emb.scoring import predict, score_batch

    work = Path(workdir) / f"rows{rows}-scale{scale}"
    raw, processed = work / "raw", work / "processed"
    if not (processed / "metadata.json").exists():
        generate_criteo_like(raw, rows, scale=scale, seed=0, overwrite=True)
        preprocess(raw / "criteo_like.tsv", processed, overwrite=True)
    model = _model(processed, variant, dim, work / f"model-{variant}-{dim}")
    batches = [b for s in SPLITS for b in ParquetBatches(processed, s, batch_size=batch_size)]
    parquet = sorted(str(p) for s in SPLITS for p in (processed / s).glob("*.parquet"))
    scores = work / "scores.parquet"

    def eager() -> int:
        return sum(len(score_batch(model, b)) for b in batches)

    def exported(table_dtype: str) -> Callable[[], int]:
        out = work / f"export-{variant}-{dim}-{table_dtype}"
        out.mkdir(parents=True, exist_ok=True)
        write_exported(model.module, model.features, out, table_dtype=table_dtype)
        program = KJTScorer(load_program(out), json.loads((out / "export.json").read_text())["features"],
                            len(model.schema.dense))

        def score() -> int:
            with torch.no_grad():
                return sum(len(program(b.dense, b.sparse)) for b in batches)

        score()  # warm-up
        return score

    def from_file(inputs: Any) -> Callable[[], int]:
        return lambda: predict(model, inputs, scores, batch_rows=batch_size, overwrite=True).rows

    eager()  # warm-up: first-call allocations
    measured: List[Dict[str, Any]] = [{"path": "eager forward (baseline)", **_best(eager, repeats)}]
    for table_dtype in ("fp32", "int8"):
        measured.append({"path": f"exported, {table_dtype} tables", **_best(exported(table_dtype), repeats)})
    measured.append({"path": "predict, raw TSV", **_best(from_file(raw / "criteo_like.tsv"), repeats)})
    measured.append({"path": "predict, Parquet", **_best(from_file(parquet), repeats)})
    base = measured[0]["samples_per_s"]
    for m in measured:
        m["ratio"] = round(m["samples_per_s"] / base, 3) if base else None
    return {"rows": rows, "variant": variant, "dim": dim, "batch_size": batch_size, "scale": scale,
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0], "torch": torch.__version__, "paths": measured}


def format_table(results: Dict[str, Any]) -> str:
    """The results of :func:`run` as the text the script prints."""
    lines = [f"{'path':<26} {'samples':>9} {'samples/s':>11} {'vs eager':>9}   ({results['variant']} dim "
             f"{results['dim']}, batch {results['batch_size']}, {results['torch_threads']} thread(s))"]
    for r in results["paths"]:
        lines.append(f"{r['path']:<26} {r['samples']:>9,} {r['samples_per_s']:>11,} {r['ratio']:>9.3f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``--json``; returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000, help="Criteo-like rows to generate and score")
    p.add_argument("--variant", default="qr", choices=["full", "hashed", "multi_hash", "qr", "mixed", "unified"])
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16384, help="rows per forward (eager and predict)")
    p.add_argument("--scale", type=float, default=0.01, help="cardinalities = Criteo Kaggle's times this")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per path (the best counts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the figure is per core)")
    p.add_argument("--workdir", default="bench/out/predict", help="generated data (reused if present)")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--quick", action="store_true", help="20k rows at scale 0.001, one pass (smoke test)")
    args = p.parse_args(argv)
    from recsys_emb.benchmarks.common import quiet

    quiet()
    if args.quick:
        args.rows, args.scale, args.repeats = 20_000, 0.001, 1
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    results = run(Path(args.workdir), rows=args.rows, variant=args.variant, dim=args.dim, batch_size=args.batch_size,
                  scale=args.scale, repeats=args.repeats)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return format_table(results)
