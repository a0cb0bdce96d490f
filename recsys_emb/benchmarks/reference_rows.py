"""The reference rows beside every results table of ``models/*/README.md``: the constant predictor and a
logistic regression (:mod:`recsys_emb.baselines`) on the test split of each table's dataset, the same
split the models are scored on (``bench/reference_rows.py``).

A model row that does not beat both has learned nothing a reader should trust. Each README gets one
block (marker ``reference``) with a row pair per dataset its tables use.
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

__all__ = ["TABLES", "QUICK_SETS", "run", "format_table", "main"]

logger = logging.getLogger(__name__)

TABLES: Dict[str, List[str]] = {
    "models/dlrm/README.md": ["configs/dlrm_criteo_like_base.yaml", "configs/dlrm_movielens.yaml"],
    "models/din/README.md": ["configs/din_sequences.yaml", "configs/din_movielens.yaml"],
}
"""Each README's result tables, by the config whose dataset they are scored on."""

QUICK_SETS: Dict[str, List[str]] = {
    "configs/dlrm_criteo_like_base.yaml": ["data.generate={kind: criteo-like, rows: 20000, scale: 0.001, seed: 0}"],
    "configs/din_sequences.yaml": ["data.generate={kind: sequences, rows: 20000, max_len: 10, seed: 0}"],
}
"""``--quick``: tiny generated data (under the work directory) instead of each config's dataset."""


def run(configs: Sequence[str], out_dir: Optional[Path] = None, quick: bool = False) -> Dict[str, Any]:
    """Both reference rows on the test split of each config's dataset (prepared when missing; one
    computation per dataset directory). ``quick``: tiny generated data under ``out_dir`` where a config
    generates its data, and one regularisation strength instead of the grid.

    Returns ``{"rows": [{"config", "data", "name", "auc", "logloss", "C", "valid_logloss", "seconds"}, ...],
    "seconds"}``.
    """
    from recsys_emb.baselines import DEFAULT_C_GRID, baselines
    from recsys_emb.config import load_config
    from recsys_emb.training import prepare_data

    t0 = time.perf_counter()
    done: Dict[str, List[Dict[str, Any]]] = {}
    rows: List[Dict[str, Any]] = []
    for config in configs:
        sets = list(QUICK_SETS.get(config, [])) if quick else []
        if quick and sets:
            if out_dir is None:
                raise ValueError("quick=True generates its data under out_dir; pass out_dir")
            sets.append(f"data.path={Path(out_dir) / Path(config).stem}")
        data_dir = Path(prepare_data(load_config(str(REPO / config), sets)))
        key = str(data_dir.resolve())
        if key not in done:
            res = baselines(data_dir, "test", c_grid=(1.0,) if quick else DEFAULT_C_GRID)
            done[key] = [dict(r.to_dict(), data=str(data_dir)) for r in res.values()]
            for r in done[key]:
                logger.info("%s %s: test AUC %.4f, log loss %.4f", config, r["name"], r["auc"], r["logloss"])
        rows += [dict(r, config=config) for r in done[key]]
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def format_table(res: Dict[str, Any], command: str) -> str:
    """The ``reference`` block of one README: the reference rows of its datasets."""
    lines = ["Reference rows on the test split the models above are scored on (`recsys_emb.baselines`): the "
             "constant predictor (the training rows' positive rate) and a logistic regression on one-hot "
             "features (multi-hot for lists, standardised dense columns), its L2 strength `C` chosen on the "
             "validation log loss. Every model row should beat both.", "",
             "| data (config) | reference | test AUC | test log loss | C (valid log loss) |",
             "|---|---|---:|---:|---|"]
    for r in res["rows"]:
        name = "constant predictor" if r["name"] == "constant" else "logistic regression"
        chosen = f"{r['C']:g} ({r['valid_logloss']:.4f})" if r.get("C") is not None else ""
        auc = "0.5" if r["name"] == "constant" else f"{r['auc']:.4f}"
        lines.append(f"| `{r['config']}` | {name} | {auc} | {r['logloss']:.4f} | {chosen} |")
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {res['seconds'] / 60:.1f} min in all.", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, compute every README's reference rows, write ``results.json`` and each README's
    block; returns the text written (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readmes", default=",".join(TABLES), help="comma-separated subset of " + ",".join(TABLES))
    p.add_argument("--quick", action="store_true", help="tiny generated data (a format check)")
    p.add_argument("--out-dir", default=None, help="work directory (default bench/out/reference_rows[_quick])")
    p.add_argument("--root", default=str(REPO), help="the directory holding models/ (default: this checkout)")
    p.add_argument("--no-readme", action="store_true", help="print the blocks only")
    args = p.parse_args(argv)
    readmes = [r for r in args.readmes.split(",") if r]
    bad = [r for r in readmes if r not in TABLES]
    if bad:
        p.error(f"--readmes: unknown {bad}; choose from {list(TABLES)}")
    out_dir = Path(args.out_dir or REPO / "bench" / "out" / ("reference_rows_quick" if args.quick else "reference_rows"))
    out_dir.mkdir(parents=True, exist_ok=True)
    texts, results = [], {}
    for readme in readmes:
        res = results[readme] = run(TABLES[readme], out_dir, args.quick)
        text = format_table(res, command_line("bench/reference_rows.py", argv))
        texts.append(publish(text, None if args.no_readme else Path(args.root) / readme, "reference",
                             "## Reference rows"))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return "\n\n".join(texts)
