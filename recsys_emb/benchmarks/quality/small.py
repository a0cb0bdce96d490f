"""The ``small`` section of the quality benchmark: DLRM at the defaults against the reference rows of
:mod:`recsys_emb.baselines` (the constant predictor and a logistic regression) on small samples.

Samples: 5,000, 20,000 and 100,000 rows of the Criteo-like generator (the main table's scale, 0.02 of
Criteo Kaggle's cardinalities) and uniform samples of real MovieLens latest-small's ratings (its
100,836 ratings at most), each split 80/10/10 in time order and preprocessed at the defaults
(``min_count: auto``). On each: DLRM with the hashing trick and with one unified table (compression 4,
the main table's 1/4 budget; fields under ``min_rows`` ids stay whole), the base configs' model and
optimizers and this section's training budget (batch 256, up to 10 epochs; early stopping on the
validation log loss, the default, reports the best epoch's model), several seeds per row; the
reference rows fitted on the same split.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence

from recsys_emb.benchmarks.quality.runs import QualitySettings, base_dict, train_seeds, with_embeddings

__all__ = ["SMALL_ROWS", "SMALL_OVERRIDES", "SMALL_VARIANTS", "run_small", "small_report"]

logger = logging.getLogger(__name__)

SMALL_ROWS = "5000,20000,100000"
"""Rows of each sample (before the 80/10/10 split)."""

SMALL_OVERRIDES = ["data.batch_size=256", "train.epochs=10"]
"""The training budget of every small-data run (early stopping picks the epoch)."""

SMALL_VARIANTS = (("hashed", {"variant": "hashed", "compression": 4.0}),
                  ("unified", {"variant": "unified", "compression": 4.0}))
"""(name, ``embeddings`` keys) of each model row."""


def _criteo_like(out: Path, rows: int, scale: float) -> Path:
    """A processed sample of ``rows`` Criteo-like rows (generated and preprocessed at the defaults once)."""
    from recsys_emb.data.criteo import preprocess
    from recsys_emb.data.synthetic import generate_criteo_like

    path = out / f"criteo-like-{rows}"
    if not (path / "metadata.json").exists():
        raw = out / f"criteo-like-{rows}-raw"
        g = generate_criteo_like(raw, rows=rows, scale=scale, seed=0, overwrite=True)
        preprocess(g.tsv, path, overwrite=True)
    return path


def _movielens(out: Path, rows: int) -> Path:
    """A processed uniform sample of ``rows`` MovieLens ratings (all of them when there are fewer)."""
    from recsys_emb.data.movielens import prepare_movielens

    path = out / f"movielens-{rows}"
    if not (path / "metadata.json").exists():
        prepare_movielens(path, overwrite=True, sample_rows=rows)
    return path


def run_small(s: QualitySettings) -> Dict[str, Any]:
    """Every sample of ``s.small_rows`` of both datasets: the reference rows and DLRM's variants over
    ``s.main_seeds`` seeds."""
    from recsys_emb.baselines import baselines
    from recsys_emb.data.parquet import read_metadata

    out = Path(s.out_dir) / "small"
    out.mkdir(parents=True, exist_ok=True)
    overrides = [o for o in SMALL_OVERRIDES if not (s.quick and o.startswith("train.epochs="))] + \
        (["train.epochs=2"] if s.quick else [])
    criteo_base = base_dict(s.config, list(s.overrides) + overrides)
    scale = float((criteo_base["data"].get("generate") or {}).get("scale", 0.02))
    movielens_base = base_dict(s.movielens_config, overrides)
    rows: List[Dict[str, Any]] = []
    for dataset, base in (("criteo-like", criteo_base), ("movielens", movielens_base)):
        for n in [int(x) for x in s.small_rows.split(",") if x]:
            path = _criteo_like(out, n, scale) if dataset == "criteo-like" else _movielens(out, n)
            meta = read_metadata(path)
            ref = baselines(path)
            row: Dict[str, Any] = {"dataset": dataset, "rows": meta["rows"], "min_count": meta.get("min_count"),
                                   "constant": ref["constant"].to_dict(),
                                   "logistic_regression": ref["logistic_regression"].to_dict(), "models": {}}
            for name, emb in SMALL_VARIANTS:
                run = with_embeddings(base, **emb)
                run["data"].update(path=str(path), generate=None)
                r = train_seeds(copy.deepcopy(run), f"{dataset}_{n}_{name}", out / "runs", s.main_seeds, s.reuse)
                row["models"][name] = r
                logger.info("small %s %d %s: test AUC %.4f (LR %.4f)", dataset, n, name, r["test_auc"],
                            ref["logistic_regression"].auc)
            rows.append(row)
    return {"rows": rows, "overrides": overrides, "config": s.config, "movielens_config": s.movielens_config,
            "seeds": s.main_seeds, "scale": scale}


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.4f}-{max(values):.4f}"


def small_report(res: Dict[str, Any], command: str) -> str:
    """The small section (:func:`run_small`) as Markdown: per sample, the reference rows, each variant's
    mean test AUC (range over the seeds) and its margin over the logistic regression; ``command`` under it."""
    names = [n for n, _ in SMALL_VARIANTS]
    lines = [f"DLRM at the defaults on small samples against the reference rows of `recsys_emb.baselines` fitted on the "
             f"same split: generated Criteo-like data (scale {res['scale']:g}, `{res['config']}`'s model) and uniform "
             f"samples of real MovieLens latest-small ratings (`{res['movielens_config']}`), each split 80/10/10 in "
             f"time order and preprocessed at the defaults (`min_count: auto`). Every run: "
             f"{', '.join('`' + o + '`' for o in res['overrides'])}, early stopping on the validation log loss (the "
             f"default), the hashing trick or one unified table at compression 4 (fields under `min_rows` ids stay "
             f"whole); seeds {res['rows'][0]['models'][names[0]]['seeds'] if res['rows'] else []} (mean and range); "
             f"margin = the mean minus the logistic regression's test AUC.", "",
             "| data | rows (train) | min count | constant AUC / log loss | logistic regression AUC (C) | "
             + " | ".join(f"{n} AUC, mean [range] | {n} margin" for n in names) + " |",
             "|---|---:|---:|---:|---:|" + "---:|---:|" * len(names)]
    worst = None
    for r in res["rows"]:
        lr, const = r["logistic_regression"], r["constant"]
        cells = []
        for n in names:
            m = r["models"][n]
            margin = m["test_auc"] - lr["auc"]
            worst = margin if worst is None else min(worst, margin)
            cells += [f"{m['test_auc']:.4f} [{_range(m['seed_test_auc'])}]", f"{margin:+.4f}"]
        lines.append(f"| {r['dataset']} | {r['rows']['total']:,} ({r['rows']['train']:,}) | {r['min_count']} | "
                     f"0.5 / {const['logloss']:.4f} | {lr['auc']:.4f} ({lr['C']:g}) | " + " | ".join(cells) + " |")
    if worst is not None:
        verdict = "at least" if worst >= 0 else "below"
        lines += ["", f"- Smallest margin over the logistic regression: {worst:+.4f}: DLRM's mean test AUC is "
                  f"**{verdict}** the logistic regression's on {'every' if worst >= 0 else 'some'} row."]
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)
