"""DIN with decoupled embeddings (DARE: an attention table and a representation table per sequence feature)
against the coupled DIN (one table for both), on generated sequences with long histories and on real
MovieLens, at equal representation dim and at equal table bytes, over several seeds.

Writes one table per dataset into models/din/README.md, between ``<!-- din-dare-<dataset>:begin -->`` and
``<!-- din-dare-<dataset>:end -->``.

    .venv/bin/python bench/din_dare.py            # 3 seeds, both datasets
    .venv/bin/python bench/din_dare.py --quick    # CI-sized, checks the plumbing only
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from recsys_emb.benchmarks.common import REPO, command_line
from recsys_emb.benchmarks.din_attention import (add_arguments, parsed_choices, publish_by_dataset, seed_columns,
                                                 train_once)

__all__ = ["DATASETS", "ARMS", "run", "format_table", "main"]

logger = logging.getLogger(__name__)

DATASETS: Dict[str, Tuple[str, List[str], Tuple[str, str]]] = {
    "sequences-200": ("configs/din_sequences.yaml",
                      ["data.path=data/sequences-200-24k", "data.batch_size=256",
                       "data.generate={kind: sequences, rows: 24000, max_len: 200, seed: 0}"],
                      ("cand_item", "cand_cat")),
    "movielens": ("configs/din_movielens.yaml", [], ("movie_id", "movie_genre")),
}
"""``{name: (config, overrides, the candidate fields)}``: 24k generated examples with histories of 1..200
behaviours (100 on average; batches of 256, one epoch), and MovieLens' real histories (the config's)."""

ARMS: Dict[str, str] = {
    "coupled, dim 16": "coupled",
    "coupled, dim 24 (equal bytes)": "coupled-wide",
    "decoupled, 16 + attention 8": "decoupled",
}
"""The rows of a dataset: the coupled DIN at the representation dim, the coupled DIN whose item tables hold
the bytes of both decoupled tables, and the decoupled DIN (default attention dim, half of 16)."""

QUICK_SETS = {
    "sequences-200": ["data.generate={kind: sequences, rows: 4000, max_len: 20, seed: 0}", "data.batch_size=256",
                      "train.max_steps=10", "model.mlp=[16]", "model.attention_mlp=[8]"],
    "movielens": ["train.max_steps=10", "train.epochs=1", "model.mlp=[16]", "model.attention_mlp=[8]"],
}


def _arm_sets(arm: str, fields: Sequence[str]) -> List[str]:
    if arm == "coupled":
        return ["embeddings.dim=16"]
    if arm == "coupled-wide":  # the candidate (and history) tables at 16 + 8 columns; profile fields stay 16
        return ["embeddings.dim=16", "embeddings.dims={" + ", ".join(f"{f}: 24" for f in fields) + "}"]
    return ["embeddings.dim=16", "model.decoupled_embeddings=true"]


def run(out_dir: Path, datasets: Sequence[str] = tuple(DATASETS), seeds: Sequence[int] = (0, 1, 2),
        sets: Sequence[str] = (), quick: bool = False, reuse: bool = False) -> Dict[str, Any]:
    """Train every arm of every dataset once per seed (seeds in sequence; the data is the same for all),
    runs under ``out_dir``; returns one row per run (test AUC and log loss, table bytes, speed).
    ``reuse``: :func:`~recsys_emb.benchmarks.din_attention.train_once`."""
    from recsys_emb.config import load_config

    out = Path(out_dir)
    rows: List[Dict[str, Any]] = []
    for ds in datasets:
        config, ds_sets, fields = DATASETS[ds]
        ds_sets = list(ds_sets) + list(sets)
        if quick:
            ds_sets += QUICK_SETS[ds] + ([f"data.path={out / 'sequences-quick'}"] if ds.startswith("sequences") else [])
        for seed in seeds:
            for label, arm in ARMS.items():
                run_sets = ds_sets + _arm_sets(arm, fields) + [
                    f"seed={seed}", "train.checkpoint_every=0", "train.progress=false", "train.log_every=0",
                    f"train.out_dir={out / f'{ds}_{arm}_{seed}'}"]
                cfg = load_config(config, run_sets)
                s, seconds = train_once(cfg, reuse)
                rows.append({"dataset": ds, "config": config, "arm": label, "seed": seed,
                             "test_auc": s["test"]["auc"], "test_logloss": s["test"]["logloss"],
                             "ceiling_auc": s["test"].get("ceiling_auc"), "embedding_bytes": s["embedding_bytes"],
                             "steps": s["steps"], "seconds": seconds,
                             "samples_per_s": s.get("samples_per_s")})
                logger.info("%s %s seed %d: test AUC %.4f", ds, label, seed, s["test"]["auc"])
    return {"rows": rows, "seeds": list(seeds)}


def format_table(res: Dict[str, Any], command: str) -> str:
    """The results of :func:`run` as the README block (Markdown), ``command`` under it."""
    rows = res["rows"]
    lines = ["Same data, steps and seeds for every row of a dataset; the DIN config's MLPs. Coupled: one table per "
             "item field, read by the activation unit and pooled. Decoupled (`model.decoupled_embeddings: true`): "
             "an attention table (dim 8, the default half) read only by the activation unit and a representation "
             "table (dim 16) pooled and fed to the MLP. Equal bytes: the coupled item and category tables at dim 24 "
             "hold what the decoupled 16 + 8 hold (the profile tables are dim 16 in every row). Test AUC: mean ± "
             "standard deviation over the seeds, then each seed's.", "",
             "| data (config) | embeddings | table MB | test AUC | per seed | test log loss | ceiling AUC | steps | "
             "train samples/s |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    by: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["dataset"], r["arm"]), []).append(r)
    for (ds, arm), rs in by.items():
        lines.append(f"| {ds} (`{rs[0]['config']}`) | {arm} | {rs[0]['embedding_bytes'] / 1e6:.2f} | {seed_columns(rs)} |")
    lines.append("")
    names = list(ARMS)
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        dec = {r["seed"]: r["test_auc"] for r in by.get((ds, names[2]), [])}
        for other, what in ((names[0], "equal representation dim"), (names[1], "equal bytes")):
            base = {r["seed"]: r["test_auc"] for r in by.get((ds, other), [])}
            diffs = [dec[s] - base[s] for s in sorted(dec) if s in base]
            if diffs:
                wins = sum(d > 0 for d in diffs)
                lines.append(f"- {ds}, {what}: decoupled - coupled = {statistics.mean(diffs):+.4f} test AUC on average "
                             f"(per seed {', '.join(f'{d:+.4f}' for d in diffs)}; decoupled ahead on {wins} of "
                             f"{len(diffs)} seeds).")
    secs = sum(r["seconds"] for r in rows)
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min in all.", "", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``results.json`` and the README block; returns the table (the caller
    prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, list(DATASETS), "0,1,2")
    args = p.parse_args(argv)
    datasets, chosen = parsed_choices(p, args, list(DATASETS))
    seeds = (chosen or [0, 1, 2])[:1 if args.quick else None]
    out_dir = Path(args.out_dir or REPO / "bench" / "out" / ("din_dare_quick" if args.quick else "din_dare"))
    res = run(out_dir, datasets, seeds, args.set, args.quick, args.reuse)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(res, indent=1))
    return publish_by_dataset(res, command_line("bench/din_dare.py", argv),
                              None if args.no_readme else Path(args.readme), "din-dare",
                              "## Decoupled embeddings (DARE) against coupled DIN", format_table)
