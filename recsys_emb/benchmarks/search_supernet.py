"""The one-shot (supernet) dimension search against uniform dims at one budget, on generated Criteo-like data.

Trains DLRM with one dim for every field, for each of :data:`UNIFORM_DIMS` (the data, steps and seed of
:mod:`recsys_emb.benchmarks.search_dims`), then runs ``--method supernet`` (per vocabulary-size group, dims
from :data:`~recsys_emb.benchmarks.search_dims.SEARCH_DIMS`) under a budget of the bytes of uniform dim
``--budget-dim`` (16): one supernet training, the candidates scored on it, the chosen dims retrained.
Reports test AUC, bytes and compute (steps, candidates scored, seconds) of every row; writes the table
into models/dlrm/README.md between ``<!-- search-supernet:begin -->`` and ``<!-- search-supernet:end -->``.

    .venv/bin/python bench/search_supernet.py            # ~5 trainings; 10 min on 2 idle CPU cores
    .venv/bin/python bench/search_supernet.py --quick    # CI-sized (seconds), checks the plumbing only
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from recsys_emb.benchmarks.common import REPO, command_line, format_mb, preset_parser, size_groups, write_section
from recsys_emb.benchmarks.search_dims import DEFAULT as DIMS_DEFAULT
from recsys_emb.benchmarks.search_dims import QUICK as DIMS_QUICK
from recsys_emb.benchmarks.search_dims import SEARCH_DIMS, base_train_config

__all__ = ["UNIFORM_DIMS", "DEFAULT", "QUICK", "run", "format_table", "main"]

logger = logging.getLogger(__name__)

UNIFORM_DIMS = (4, 8, 16)
_KEYS = ("rows", "scale", "steps", "batch_size")
DEFAULT: Dict[str, Any] = {**{k: DIMS_DEFAULT[k] for k in _KEYS}, "budget_dim": 16, "population": 16,
                           "generations": 6}
"""The full run's settings (the keyword arguments of :func:`run`); ``--quick`` uses :data:`QUICK`."""
QUICK: Dict[str, Any] = {**{k: DIMS_QUICK[k] for k in _KEYS}, "budget_dim": 16, "population": 4, "generations": 1}


def run(out_dir: Path, data_dir: Optional[Path] = None, rows: int = DEFAULT["rows"], scale: float = DEFAULT["scale"],
        steps: int = DEFAULT["steps"], batch_size: int = DEFAULT["batch_size"], budget_dim: int = DEFAULT["budget_dim"],
        population: int = DEFAULT["population"], generations: int = DEFAULT["generations"],
        reuse_uniform: bool = False) -> Dict[str, Any]:
    """The uniform runs, then the supernet search under the bytes of uniform ``budget_dim`` (a fresh search
    directory in ``out_dir``). Returns the uniform rows, the budget and the search's report.
    ``reuse_uniform``: a uniform run whose ``summary.json`` is in ``out_dir`` (same settings) is read, not
    trained again."""
    from recsys_emb.config import config_from_dict
    from recsys_emb.data.parquet import read_metadata
    from recsys_emb.search import load_search_config
    from recsys_emb.search.supernet import supernet_search
    from recsys_emb.training import prepare_data, train

    settings = dict(rows=rows, scale=scale, steps=steps, batch_size=batch_size, budget_dim=budget_dim,
                    population=population, generations=generations, out_dir=str(out_dir),
                    data_dir=None if data_dir is None else str(data_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_path = Path(data_dir) if data_dir else out / f"criteo-like-{rows}-{scale}"
    base = base_train_config(data_path, rows, scale, steps, batch_size)
    prepare_data(config_from_dict(base))
    vocab = {k: int(v) for k, v in read_metadata(data_path)["schema"]["vocab_sizes"].items()}
    (out / "train.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    uniform = []
    for d in sorted(set(UNIFORM_DIMS) | {budget_dim}):
        cfg = yaml.safe_load(yaml.safe_dump(dict(base, name=f"uniform-{d}")))
        cfg["embeddings"]["dim"] = d
        cfg["train"]["out_dir"] = str(out / f"uniform_{d}")
        t0 = time.perf_counter()
        done = out / f"uniform_{d}" / "summary.json"
        if reuse_uniform and done.exists():
            s, seconds = json.loads(done.read_text()), None
        else:
            s = train(config_from_dict(cfg), overwrite=True)
            seconds = time.perf_counter() - t0
        uniform.append({"setting": f"uniform dim {d}", "dim": d, "bytes": s["embedding_bytes"],
                        "valid_auc": s["valid"]["auc"], "test_auc": s["test"]["auc"], "steps": s["steps"],
                        "seconds": seconds})
    budget = next(r["bytes"] for r in uniform if r["dim"] == budget_dim)
    search_yaml = {
        "base_config": "train.yaml", "study_name": "supernet", "out_root": str(out / "runs"), "mode": "single",
        "budget_bytes": int(budget), "space": {"dims": SEARCH_DIMS, "groups": size_groups(vocab), "ungrouped": "fixed"},
        "seed": 0, "progress": False,
        "supernet": {"population": population, "generations": generations},
    }
    (out / "search.yaml").write_text(yaml.safe_dump(search_yaml, sort_keys=False))
    shutil.rmtree(out / "runs" / "supernet", ignore_errors=True)  # a fresh search each run
    t1 = time.perf_counter()
    report = supernet_search(load_search_config(out / "search.yaml"))
    report["seconds"] = time.perf_counter() - t1
    return {"uniform": uniform, "budget": int(budget), "report": report, "groups": size_groups(vocab),
            "args": settings}


def format_table(res: Dict[str, Any], command: str) -> str:
    """The results of :func:`run` as the README block (Markdown), ``command`` under it."""
    a, r = res["args"], res["report"]
    c = r["compute"]
    within = [u for u in res["uniform"] if u["bytes"] <= res["budget"]]
    best_u = max(within, key=lambda u: u["valid_auc"])
    lines = [
        f"DLRM (bottom [64, 16], top [64, 32], dot), full tables, generated Criteo-like data ({a['rows']:,} rows, "
        f"cardinality scale {a['scale']}); every training {a['steps']} steps of batch {a['batch_size']}, seed 0 (the "
        f"settings of the search above). Budget: the bytes of uniform dim {a['budget_dim']} "
        f"({format_mb(res['budget'])}). `recsys-emb search --method supernet` chooses one dim from {SEARCH_DIMS} per "
        f"vocabulary-size group: one supernet training (tables at dim {max(SEARCH_DIMS)}), "
        f"{c['candidates_scored']} candidates scored on it (evolutionary search: population {a['population']}, "
        f"{a['generations']} generations), the chosen dims retrained.",
        "",
        "| setting | embedding bytes | of the budget | valid AUC | test AUC | compute |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for u in res["uniform"]:
        lines.append(f"| {u['setting']} | {format_mb(u['bytes'])} | {u['bytes'] / res['budget']:.0%} | "
                     f"{u['valid_auc']:.4f} | {u['test_auc']:.4f} | {u['steps']} steps"
                     + (f", {u['seconds']:.0f} s |" if u["seconds"] is not None else " |"))
    rt = r["retrain"]
    lines.append(f"| supernet search | {format_mb(r['bytes'])} | {r['budget_used']:.0%} | {rt['valid_auc']:.4f} | "
                 f"{rt['test_auc']:.4f} | {c['supernet_steps']} supernet + {c['retrain_steps']} retrain steps, "
                 f"{c['candidates_scored']} candidates scored; {c['supernet_seconds']:.0f} + {c['search_seconds']:.0f} "
                 f"+ {c['retrain_seconds']:.0f} s |")
    by_group = ", ".join(f"{g} ({len(res['groups'][g])} fields): {d}" for g, d in sorted(r["group_dims"].items()))
    gap = rt["test_auc"] - best_u["test_auc"]
    lines += ["", f"Chosen dims: {by_group} (supernet valid AUC {r['supernet_valid_auc']:.4f}; at the largest dims "
              f"{r['supernet']['valid_auc_largest']:.4f}). Test AUC against the best uniform dim within the budget "
              f"(dim {best_u['dim']}, on valid AUC): {gap:+.4f}, at a compute of "
              f"{(c['supernet_steps'] + c['retrain_steps']) / a['steps']:.0f} trainings plus the scoring.",
              "", f"Hardware: {platform.processor() or platform.machine()}, CPU only.", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``results.json`` and the README block; returns the table."""
    p = preset_parser(__doc__, DEFAULT, QUICK, "search_supernet")
    p.add_argument("--reuse-uniform", action="store_true",
                   help="read the uniform runs an earlier run of the same settings left in --out-dir")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULT
    settings = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in preset.items()}
    out_dir = Path(args.out_dir or REPO / "bench" / "out" / ("search_supernet_quick" if args.quick else "search_supernet"))
    res = run(out_dir, Path(args.data_dir) if args.data_dir else None, reuse_uniform=args.reuse_uniform, **settings)
    text = format_table(res, command_line("bench/search_supernet.py", argv))
    (out_dir / "results.json").write_text(json.dumps(res, indent=1, default=str))
    if not args.no_readme:
        write_section(Path(args.readme), "search-supernet", text, "## One-shot (supernet) dimension search")
    return text
