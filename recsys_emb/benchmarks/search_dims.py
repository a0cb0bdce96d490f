"""Searched per-field embedding dims vs the best uniform dim, on generated Criteo-like data.

Trains DLRM with one dim for every field, for each of {8, 16, 32, 64} (same data, steps, seed), then runs a
single-objective search of per-field dims (fields grouped by vocabulary size) under a budget of half the bytes
of the best uniform dim, with the same training per trial. Writes the table into models/dlrm/README.md between
``<!-- search:begin -->`` and ``<!-- search:end -->``.

    .venv/bin/python bench/search_dims.py            # default: ~20 min on 2 CPU cores
    .venv/bin/python bench/search_dims.py --quick    # CI-sized (seconds), checks the plumbing only
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from recsys_emb.benchmarks.common import REPO, command_line, format_mb, preset_parser, size_groups, write_section

__all__ = ["BEGIN", "END", "UNIFORM_DIMS", "SEARCH_DIMS", "DEFAULT", "QUICK", "base_train_config",
           "write_readme_section", "run", "format_table", "main"]

logger = logging.getLogger(__name__)

BEGIN, END = "<!-- search:begin -->", "<!-- search:end -->"
UNIFORM_DIMS = (8, 16, 32, 64)
SEARCH_DIMS = [4, 8, 12, 16, 24, 32, 48, 64]

DEFAULT: Dict[str, Any] = dict(rows=500_000, scale=0.01, steps=240, batch_size=2048, eval_every=80, n_trials=24)
"""The full run's settings (the keyword arguments of :func:`run`); ``--quick`` uses :data:`QUICK`."""
QUICK: Dict[str, Any] = dict(rows=20_000, scale=0.001, steps=20, batch_size=512, eval_every=10, n_trials=4)


def base_train_config(data_path: Path, rows: int, scale: float, steps: int, batch_size: int) -> Dict[str, Any]:
    """The run config (as a dict) every uniform run and every trial trains: DLRM, full tables of dim 16,
    ``steps`` steps of ``batch_size`` on ``rows`` generated Criteo-like rows at ``data_path``."""
    return {
        "name": "search-bench",
        "seed": 0,
        "data": {"path": str(data_path), "batch_size": batch_size, "eval_batch_size": 16384,
                 "generate": {"kind": "criteo-like", "rows": rows, "scale": scale, "seed": 0}},
        "model": {"kind": "dlrm", "bottom_mlp": [64, 16], "top_mlp": [64, 32], "interaction": "dot"},
        "embeddings": {"variant": "full", "dim": 16},
        "optim": {"embedding": "rowwise_adagrad", "embedding_lr": 0.05, "dense": "adam", "dense_lr": 0.001},
        "train": {"epochs": 100, "max_steps": steps, "eval_every": 0, "checkpoint_every": 0, "log_every": 0,
                  "progress": False},
    }


def write_readme_section(readme: Path, body: str, title: str = "## Per-field dimension search") -> None:
    """Replace the search block of ``readme`` (between :data:`BEGIN` and :data:`END`)."""
    write_section(readme, "search", body, title)


def run(out_dir: Path, data_dir: Optional[Path] = None, rows: int = DEFAULT["rows"], scale: float = DEFAULT["scale"],
        steps: int = DEFAULT["steps"], batch_size: int = DEFAULT["batch_size"],
        eval_every: int = DEFAULT["eval_every"], n_trials: int = DEFAULT["n_trials"]) -> Dict[str, Any]:
    """Train every uniform dim, then search per-group dims under half the best uniform dim's bytes (a fresh
    study in ``out_dir``; the data is generated in ``data_dir``, default inside ``out_dir``). Returns the
    uniform rows, the budget, the best searched trial (None when none completed) and the trial counts."""
    from recsys_emb.config import config_from_dict
    from recsys_emb.data.parquet import read_metadata
    from recsys_emb.search import best_trial, load_search_config, search
    from recsys_emb.training import prepare_data, train

    settings = dict(rows=rows, scale=scale, steps=steps, batch_size=batch_size, eval_every=eval_every,
                    n_trials=n_trials, out_dir=str(out_dir), data_dir=None if data_dir is None else str(data_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_path = Path(data_dir) if data_dir else out / f"criteo-like-{rows}-{scale}"
    base = base_train_config(data_path, rows, scale, steps, batch_size)
    prepare_data(config_from_dict(base))
    meta = read_metadata(data_path)
    vocab = {k: int(v) for k, v in meta["schema"]["vocab_sizes"].items()}
    (out / "train.yaml").write_text(yaml.safe_dump(base, sort_keys=False))

    t0 = time.perf_counter()
    uniform = []
    for d in UNIFORM_DIMS:
        cfg = dict(base, name=f"uniform-{d}")
        cfg = yaml.safe_load(yaml.safe_dump(cfg))
        cfg["embeddings"]["dim"] = d
        cfg["train"]["out_dir"] = str(out / f"uniform_{d}")
        s = train(config_from_dict(cfg), overwrite=True)  # a rerun replaces its own earlier runs
        uniform.append({"setting": f"uniform dim {d}", "dim": d, "bytes": s["embedding_bytes"],
                        "valid_auc": s["valid"]["auc"], "test_auc": s["test"]["auc"],
                        "ceiling": s["test"].get("ceiling_auc")})
        logger.info("uniform %d: %s bytes, valid AUC %.4f", d, f"{s['embedding_bytes']:,}", s["valid"]["auc"])
    t_uniform = time.perf_counter() - t0
    best_u = max(uniform, key=lambda r: r["valid_auc"])
    budget = best_u["bytes"] // 2

    search_yaml = {
        "base_config": "train.yaml",
        "train_overrides": [f"train.eval_every={eval_every}"],
        "study_name": "search-dims",
        "storage": f"sqlite:///{out / 'search-dims.db'}",
        "out_root": str(out / "runs"),
        "n_trials": n_trials,
        "mode": "single",
        "budget_bytes": int(budget),
        # dims only (the uniform rows are full tables); trials already train the full recipe: no retraining
        "space": {"dims": SEARCH_DIMS, "groups": size_groups(vocab), "ungrouped": "fixed", "variants": []},
        "retrain_top": 0,
        "sampler": "tpe",
        "pruner": {"kind": "median", "startup_trials": 6, "warmup_steps": eval_every},
        "seed": 0,
        "progress": False,
    }
    (out / "search.yaml").write_text(yaml.safe_dump(search_yaml, sort_keys=False))
    db = out / "search-dims.db"
    if db.exists():
        db.unlink()  # a fresh study each run
    t1 = time.perf_counter()
    scfg = load_search_config(out / "search.yaml")
    study = search(scfg)
    t_search = time.perf_counter() - t1

    best = best_trial(study, scfg)
    trials = study.get_trials()
    over = sum(1 for t in trials if t.user_attrs.get("over_budget"))
    pruned = sum(1 for t in trials if t.state.name == "PRUNED" and not t.user_attrs.get("over_budget"))
    searched = None
    if best is not None:
        dims = best.user_attrs["embeddings"]["dims"]
        searched = {"setting": f"searched (trial {best.number})", "dims": dims, "bytes": best.user_attrs["bytes"],
                    "valid_auc": best.values[0], "test_auc": best.user_attrs.get("test_auc"),
                    "ceiling": best.user_attrs.get("test_ceiling_auc")}
        logger.info("searched: %s bytes, valid AUC %.4f", f"{searched['bytes']:,}", searched["valid_auc"])
    return {"uniform": uniform, "best_uniform": best_u, "budget": int(budget), "searched": searched,
            "groups": size_groups(vocab), "vocab": vocab, "trials": len(trials), "over_budget": over,
            "pruned": pruned, "seconds_uniform": t_uniform, "seconds_search": t_search, "args": settings,
            "train_rows": meta.get("splits", {}).get("train", {}).get("rows") if isinstance(meta.get("splits"), dict)
            else None}


def format_table(res: Dict[str, Any], command: str) -> str:
    """The results of :func:`run` as the README block (Markdown), ``command`` under it."""
    a = res["args"]
    best_u, s = res["best_uniform"], res["searched"]
    lines = [
        f"DLRM (bottom [64, 16], top [64, 32], dot), full tables, on generated Criteo-like data "
        f"({a['rows']:,} rows, cardinality scale {a['scale']}, time split 80/10/10). Every run: "
        f"{a['steps']} steps of batch {a['batch_size']}, seed 0, rowwise Adagrad 0.05 + Adam 1e-3. The search "
        f"(TPE, median pruning on valid AUC every {a['eval_every']} steps) chooses one dim from {SEARCH_DIMS} per "
        f"group of fields of one vocabulary-size decade, {a['n_trials']} trained trials, under a budget of half the "
        f"bytes of the best uniform dim ({format_mb(res['budget'])}); over-budget trials are never trained "
        f"({res['over_budget']} of them here, {res['pruned']} trials pruned on AUC).",
        "",
        "| setting | embedding bytes | valid AUC | test AUC | test ceiling AUC |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = list(res["uniform"]) + ([s] if s else [])
    for r in rows:
        ceiling = f"{r['ceiling']:.4f}" if r.get("ceiling") else "-"
        test = f"{r['test_auc']:.4f}" if r.get("test_auc") is not None else "-"
        lines.append(f"| {r['setting']} | {format_mb(r['bytes'])} | {r['valid_auc']:.4f} | {test} | {ceiling} |")
    lines.append("")
    if s:
        gap = s["valid_auc"] - best_u["valid_auc"]
        ratio = s["bytes"] / best_u["bytes"]
        met = gap >= -0.0005 and ratio <= 0.5
        by_group = {g: s["dims"][fs[0]] for g, fs in res["groups"].items() if fs[0] in s["dims"]}
        lines.append(f"Best uniform: dim {best_u['dim']}. Searched dims by vocabulary group: "
                     + ", ".join(f"{g} ({len(res['groups'][g])} fields): {d}" for g, d in sorted(by_group.items()))
                     + f". Searched vs best uniform: valid AUC {gap:+.4f}, {ratio:.1%} of the bytes -> target "
                     f"(within 0.0005 AUC at <= 50% bytes) **{'met' if met else 'not met'}**. The searched row is "
                     f"the best of {res['trials']} trials on the validation split, so its valid AUC is optimistically "
                     f"selected; test AUC is the unbiased comparison.")
    else:
        lines.append("No trial completed within the budget.")
    lines += ["", f"Hardware: {platform.processor() or platform.machine()}, CPU only; uniform runs "
              f"{res['seconds_uniform']:.0f} s, search {res['seconds_search']:.0f} s.", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``results.json`` and the README block; returns the table (the caller
    prints it)."""
    p = preset_parser(__doc__, DEFAULT, QUICK, "search_dims", "CI-sized run (tiny data, 4 trials)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULT
    settings = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in preset.items()}
    out_dir = Path(args.out_dir or REPO / "bench" / "out" / ("search_dims_quick" if args.quick else "search_dims"))
    res = run(out_dir, Path(args.data_dir) if args.data_dir else None, **settings)
    text = format_table(res, command_line("bench/search_dims.py", argv))
    (out_dir / "results.json").write_text(json.dumps(res, indent=1, default=str))
    if not args.no_readme:
        write_readme_section(Path(args.readme), text)
    return text
