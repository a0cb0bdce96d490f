"""DIN with attention against DIN with sum pooling (the paper's ablation), on generated behaviour sequences
and on real MovieLens, with the same data, training budget and seed for both.

Writes the table into models/din/README.md between ``<!-- din:begin -->`` and ``<!-- din:end -->``.

    .venv/bin/python bench/din.py            # 500k generated sequences + MovieLens (~10 min on 2 CPU cores)
    .venv/bin/python bench/din.py --quick    # CI-sized, checks the plumbing only
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from recsys_emb.benchmarks.common import REPO, command_line, publish

__all__ = ["DATASETS", "QUICK_SETS", "run", "format_table", "main"]

logger = logging.getLogger(__name__)

DATASETS = {
    "sequences": "configs/din_sequences.yaml",
    "movielens": "configs/din_movielens.yaml",
}
QUICK_SETS = {
    "sequences": ["data.generate={kind: sequences, rows: 20000, max_len: 10, seed: 0}", "data.batch_size=256",
                  "train.max_steps=20", "model.mlp=[32, 16]", "model.attention_mlp=[16, 8]", "embeddings.dim=8"],
    "movielens": ["train.max_steps=20", "train.epochs=1", "model.mlp=[32, 16]", "model.attention_mlp=[16, 8]"],
}


def run(out_dir: Path, datasets: Sequence[str] = tuple(DATASETS), sets: Sequence[str] = (),
        quick: bool = False) -> Dict[str, Any]:
    """Train each dataset's DIN config (with the overrides ``sets``; ``quick``: tiny data, 20 steps) with
    attention and with sum pooling, runs under ``out_dir``; returns one row per run (test AUC and log
    loss, valid AUC, the Bayes ceiling where the data has one, steps, speed)."""
    from recsys_emb.config import load_config
    from recsys_emb.training import train

    out = Path(out_dir)
    rows: List[Dict[str, Any]] = []
    for ds in datasets:
        ds_sets = list(sets)
        if quick:
            ds_sets += QUICK_SETS[ds]
            if ds == "sequences":
                ds_sets.append(f"data.path={out / 'sequences-quick'}")
        for attention in (True, False):
            label = "attention" if attention else "sum pooling"
            run_sets = ds_sets + [f"model.use_attention={str(attention).lower()}", "train.checkpoint_every=0",
                                  "train.progress=false", "train.log_every=0",
                                  f"train.out_dir={out / f'{ds}_{label.replace(chr(32), chr(95))}'}"]
            cfg = load_config(DATASETS[ds], run_sets)
            t0 = time.perf_counter()
            s = train(cfg, overwrite=True)  # a rerun replaces its own earlier runs
            rows.append({"dataset": ds, "config": DATASETS[ds], "pooling": label, "test_auc": s["test"]["auc"],
                         "test_logloss": s["test"]["logloss"], "valid_auc": s["valid"]["auc"],
                         "ceiling_auc": s["test"].get("ceiling_auc"), "steps": s["steps"],
                         "rows": s["test"]["rows"], "seconds": time.perf_counter() - t0,
                         "samples_per_s": s.get("samples_per_s")})
            logger.info("%s %s: test AUC %.4f", ds, label, s["test"]["auc"])
    return {"rows": rows}


def format_table(res: Dict[str, Any], command: str) -> str:
    """The results of :func:`run` as the README block (Markdown), ``command`` under it."""
    lines = ["Same config, data, steps and seed for both rows of a dataset; only `model.use_attention` differs "
             "(attention: DIN's local activation unit over [h, c, h - c, h * c], masked weighted sum; sum "
             "pooling: the plain masked sum of the history).", "",
             "| data (config) | pooling | test AUC | test log loss | ceiling AUC | steps | train samples/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        ceiling = f"{r['ceiling_auc']:.4f}" if r.get("ceiling_auc") else ""
        sps = f"{r['samples_per_s']:,.0f}" if r.get("samples_per_s") else ""
        lines.append(f"| {r['dataset']} (`{r['config']}`) | {r['pooling']} | {r['test_auc']:.4f} | "
                     f"{r['test_logloss']:.4f} | {ceiling} | {r['steps']} | {sps} |")
    lines.append("")
    for ds in dict.fromkeys(r["dataset"] for r in res["rows"]):
        att = next(r for r in res["rows"] if r["dataset"] == ds and r["pooling"] == "attention")
        sm = next(r for r in res["rows"] if r["dataset"] == ds and r["pooling"] == "sum pooling")
        d = att["test_auc"] - sm["test_auc"]
        lines.append(f"- {ds}: attention {'beats' if d > 0 else 'does not beat'} sum pooling by {d:+.4f} test AUC.")
    secs = sum(r["seconds"] for r in res["rows"])
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min in all.", "", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``results.json`` and the README block; returns the table (the caller
    prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny data, 20 steps per run")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ",".join(DATASETS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--out-dir", default=None, help="work directory (default bench/out/din[_quick])")
    p.add_argument("--readme", default=str(REPO / "models" / "din" / "README.md"))
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    bad = [d for d in datasets if d not in DATASETS]
    if bad:
        p.error(f"--datasets: unknown {bad}; choose from {list(DATASETS)}")
    out_dir = Path(args.out_dir or REPO / "bench" / "out" / ("din_quick" if args.quick else "din"))
    res = run(out_dir, datasets, args.set, args.quick)
    text = format_table(res, command_line("bench/din.py", argv))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(res, indent=1))
    return publish(text, None if args.no_readme else Path(args.readme), "din", "## Attention against sum pooling")
