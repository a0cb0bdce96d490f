"""DIN with attention against DIN with sum pooling (the paper's ablation), on generated behaviour sequences
and on real MovieLens, with the same data, training budget and seeds for both, beside a logistic regression
on the same splits (:func:`recsys_emb.baselines.logistic_regression`).

Writes one table per dataset into models/din/README.md, between ``<!-- din-<dataset>:begin -->`` and
``<!-- din-<dataset>:end -->``.

    .venv/bin/python bench/din.py            # 500k generated sequences (seed 0) + MovieLens (seeds 0, 1, 2)
    .venv/bin/python bench/din.py --quick    # CI-sized, checks the plumbing only
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from recsys_emb.benchmarks.common import REPO, command_line, publish

__all__ = ["DATASETS", "SEEDS", "QUICK_SETS", "run", "format_table", "main", "seed_columns", "add_arguments",
           "parsed_choices", "train_once", "publish_by_dataset"]

logger = logging.getLogger(__name__)

DATASETS = {
    "sequences": "configs/din_sequences.yaml",
    "movielens": "configs/din_movielens.yaml",
}
SEEDS = {"sequences": (0,), "movielens": (0, 1, 2)}
"""Default model seeds per dataset (the data is the same for all): MovieLens' differences are small, so
three; the generated data's 500k rows cost the most and one seed already separates the two."""
QUICK_SETS = {
    "sequences": ["data.generate={kind: sequences, rows: 20000, max_len: 10, seed: 0}", "data.batch_size=256",
                  "train.max_steps=20", "model.mlp=[32, 16]", "model.attention_mlp=[16, 8]", "embeddings.dim=8"],
    "movielens": ["train.max_steps=20", "train.epochs=1", "model.mlp=[32, 16]", "model.attention_mlp=[16, 8]"],
}


def run(out_dir: Path, datasets: Sequence[str] = tuple(DATASETS), sets: Sequence[str] = (),
        quick: bool = False, seeds: Optional[Sequence[int]] = None, reuse: bool = False) -> Dict[str, Any]:
    """Train each dataset's DIN config (with the overrides ``sets``; ``quick``: tiny data, 20 steps) with
    attention and with sum pooling, once per seed (``seeds``, in sequence; None: :data:`SEEDS`), runs under
    ``out_dir``, and fit the logistic regression on the same data; returns one row per run (test AUC and
    log loss, valid AUC, the Bayes ceiling where the data has one, steps, speed) and one reference row per
    dataset. ``reuse``: :func:`train_once`."""
    from recsys_emb.baselines import logistic_regression
    from recsys_emb.config import load_config

    out = Path(out_dir)
    rows: List[Dict[str, Any]] = []
    references: List[Dict[str, Any]] = []
    for ds in datasets:
        ds_sets = list(sets)
        if quick:
            ds_sets += QUICK_SETS[ds]
            if ds == "sequences":
                ds_sets.append(f"data.path={out / 'sequences-quick'}")
        data_path = ""
        for seed in (SEEDS[ds] if seeds is None else seeds)[:1 if quick else None]:
            for attention in (True, False):
                label = "attention" if attention else "sum pooling"
                run_sets = ds_sets + [f"model.use_attention={str(attention).lower()}", "train.checkpoint_every=0",
                                      "train.progress=false", "train.log_every=0", f"seed={seed}",
                                      f"train.out_dir={out / f'{ds}_{label.replace(chr(32), chr(95))}_{seed}'}"]
                cfg = load_config(DATASETS[ds], run_sets)
                data_path = cfg.data.path
                s, seconds = train_once(cfg, reuse)
                rows.append({"dataset": ds, "config": DATASETS[ds], "pooling": label, "seed": seed,
                             "test_auc": s["test"]["auc"], "test_logloss": s["test"]["logloss"],
                             "valid_auc": s["valid"]["auc"], "ceiling_auc": s["test"].get("ceiling_auc"),
                             "steps": s["steps"], "rows": s["test"]["rows"], "seconds": seconds,
                             "samples_per_s": s.get("samples_per_s")})
                logger.info("%s %s seed %d: test AUC %.4f", ds, label, seed, s["test"]["auc"])
        t0 = time.perf_counter()
        lr = logistic_regression(data_path, c_grid=(0.1, 1.0) if quick else (0.01, 0.1, 1.0, 10.0))
        references.append({"dataset": ds, "config": DATASETS[ds], "test_auc": lr.auc, "test_logloss": lr.logloss,
                           "C": lr.C, "seconds": time.perf_counter() - t0})
    return {"rows": rows, "references": references}


def seed_columns(rs: Sequence[Dict[str, Any]]) -> str:
    """The table cells of one model's runs over seeds: test AUC mean ± sd, each seed's, mean test log loss,
    the Bayes ceiling (where the data has one), steps, mean train samples/s."""
    aucs = [r["test_auc"] for r in rs]
    auc = f"{statistics.mean(aucs):.4f} ± {statistics.stdev(aucs):.4f}" if len(aucs) > 1 else f"{aucs[0]:.4f}"
    ceiling = f"{rs[0]['ceiling_auc']:.4f}" if rs[0].get("ceiling_auc") else ""
    sps = [r["samples_per_s"] for r in rs if r.get("samples_per_s")]
    speed = f"{statistics.mean(sps):,.0f}" if sps else ""
    return (f"{auc} | {', '.join(f'{a:.4f}' for a in aucs)} (seeds {', '.join(str(r['seed']) for r in rs)}) | "
            f"{statistics.mean(r['test_logloss'] for r in rs):.4f} | {ceiling} | {rs[0]['steps']} | {speed}")


def train_once(cfg: Any, reuse: bool) -> Tuple[Dict[str, Any], float]:
    """Train ``cfg`` (its run directory replaced) and return its summary and wall seconds; with ``reuse``, a
    run directory holding a finished run of the same config (``run.json``'s config, a ``summary.json``) is
    read instead of trained again (a benchmark resumed after an interruption; its seconds are the time from
    ``run.json`` to ``summary.json``)."""
    from recsys_emb.config import config_to_dict
    from recsys_emb.training import train

    out = Path(cfg.train.out_dir)
    started, finished = out / "run.json", out / "summary.json"
    if reuse and started.is_file() and finished.is_file():
        if json.loads(started.read_text()).get("config") == config_to_dict(cfg):
            logger.info("%s: reusing the finished run", out)
            return json.loads(finished.read_text()), finished.stat().st_mtime - started.stat().st_mtime
    t0 = time.perf_counter()
    summary = train(cfg, overwrite=True)  # a rerun replaces its own earlier runs
    return summary, time.perf_counter() - t0


def publish_by_dataset(res: Dict[str, Any], command: str, readme: Optional[Path], prefix: str, title: str,
                       table: Any) -> str:
    """One README block per dataset of ``res`` (marker ``<prefix>-<dataset>``, ``table(part, command)`` its
    text, ``part`` holding that dataset's ``rows`` and ``references``), so a run of some datasets leaves the
    others' blocks as they are; returns the blocks' texts."""
    texts = []
    for ds in dict.fromkeys(r["dataset"] for r in res["rows"]):
        part = {k: [r for r in v if r["dataset"] == ds] if k in ("rows", "references") else v for k, v in res.items()}
        texts.append(publish(table(part, command), readme, f"{prefix}-{ds}", f"{title}: {ds}"))
    return "\n\n".join(texts)


def add_arguments(p: argparse.ArgumentParser, datasets: Sequence[str], seeds_help: str) -> None:
    """The options the DIN benchmarks share: ``--quick``, ``--datasets``, ``--seeds``, ``--set``, ``--out-dir``,
    ``--readme``, ``--no-readme``."""
    p.add_argument("--quick", action="store_true", help="tiny data, a few steps per run, one seed")
    p.add_argument("--datasets", default=",".join(datasets), help="comma-separated subset of " + ",".join(datasets))
    p.add_argument("--seeds", default=None, help="comma-separated model seeds (default: " + seeds_help + ")")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--out-dir", default=None, help="work directory (default bench/out/<name>[_quick])")
    p.add_argument("--readme", default=str(REPO / "models" / "din" / "README.md"))
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--reuse", action="store_true", help="read runs the work directory already holds for the same "
                   "config instead of training them again (resume an interrupted benchmark)")


def parsed_choices(p: argparse.ArgumentParser, args: argparse.Namespace, datasets: Sequence[str]
                   ) -> Tuple[List[str], Optional[List[int]]]:
    """``--datasets`` and ``--seeds`` checked (``p.error`` names a bad value): the datasets, the seeds or None."""
    chosen = [d for d in args.datasets.split(",") if d]
    bad = [d for d in chosen if d not in datasets]
    if bad:
        p.error(f"--datasets: unknown {bad}; choose from {list(datasets)}")
    try:
        seeds = None if args.seeds is None else [int(x) for x in args.seeds.split(",") if x]
    except ValueError:
        p.error(f"--seeds={args.seeds!r}: give comma-separated integers, e.g. 0,1,2")
    return chosen, seeds


def format_table(res: Dict[str, Any], command: str) -> str:
    """The results of :func:`run` as the README block (Markdown), ``command`` under it."""
    lines = ["Same config, data, steps and seeds for both DIN rows of a dataset; only `model.use_attention` differs "
             "(attention: DIN's local activation unit over [h, c, h - c, h * c], masked weighted sum; sum "
             "pooling: the plain masked sum of the history). Test AUC: mean ± standard deviation over the seeds, "
             "then each seed's. Logistic regression: `recsys_emb.baselines.logistic_regression` on the same "
             "splits (one-hot and multi-hot features, `C` chosen on the validation log loss).", "",
             "| data (config) | model | test AUC | per seed | test log loss | ceiling AUC | steps | train samples/s |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    rows, refs = res["rows"], res.get("references", [])
    by: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["dataset"], r["pooling"]), []).append(r)
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for pooling in ("attention", "sum pooling"):
            rs = by[(ds, pooling)]
            lines.append(f"| {ds} (`{rs[0]['config']}`) | DIN, {pooling} | {seed_columns(rs)} |")
        for ref in (r for r in refs if r["dataset"] == ds):
            lines.append(f"| {ds} (`{ref['config']}`) | logistic regression (C={ref['C']:g}) | {ref['test_auc']:.4f} "
                         f"|  | {ref['test_logloss']:.4f} |  |  |  |")
    lines.append("")
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        att = {r["seed"]: r["test_auc"] for r in by[(ds, "attention")]}
        sm = {r["seed"]: r["test_auc"] for r in by[(ds, "sum pooling")]}
        diffs = [att[s] - sm[s] for s in att if s in sm]
        verdict = ("beats" if all(x > 0 for x in diffs) else "does not beat" if all(x <= 0 for x in diffs)
                   else "is not consistently better than")  # every seed must agree
        lines.append(f"- {ds}: attention {verdict} sum pooling: {statistics.mean(diffs):+.4f} test AUC on average "
                     f"(per seed {', '.join(f'{x:+.4f}' for x in diffs)}).")
    secs = sum(r["seconds"] for r in rows) + sum(r["seconds"] for r in refs)
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min in all.", "", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``results.json`` and the README block; returns the table (the caller
    prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, list(DATASETS), "; ".join(f"{d} {','.join(map(str, s))}" for d, s in SEEDS.items()))
    args = p.parse_args(argv)
    datasets, seeds = parsed_choices(p, args, list(DATASETS))
    out_dir = Path(args.out_dir or REPO / "bench" / "out" / ("din_quick" if args.quick else "din"))
    res = run(out_dir, datasets, args.set, args.quick, seeds, args.reuse)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(res, indent=1))
    return publish_by_dataset(res, command_line("bench/din.py", argv), None if args.no_readme else Path(args.readme),
                              "din", "## Attention against sum pooling", format_table)
