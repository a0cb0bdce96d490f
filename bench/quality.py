"""Quality against memory: DLRM with every embedding variant at parameter budgets 1, 1/4, 1/16, 1/64.

One Criteo-like dataset (2M generated rows by default, with its true click probabilities), one training
budget for every run (the base config: one epoch, batch 4096, seed 0), and for each variant the
largest configuration within each budget (budget = a fraction of the full tables' bytes):

- ``full``: all rows; below budget 1 only by a smaller dim (16 -> 4 at 1/4; no smaller dim exists).
- ``hashed``, ``multi_hash`` (2 probes), ``qr`` (the ``mult`` op, the paper's; the preset default
  ``concat`` is compared with it in ``--section qr-ops``), ``unified`` (one multiplexed table): large
  fields keep ``budget`` of their rows (fields under ``min_rows`` ids stay whole).
- ``mixed``: 4 frequency blocks per field from the data's counts, with the smallest power ``alpha`` whose bytes fit
  (bisection); budgets below what dims >= 4 allow are reported as out of reach.
- ``mixed_field``: the field-level form (``num_blocks: 1``: one table per field, DLRM's ``md_solver``
  dims across fields, projected to the common dim), its ``alpha`` found the same way.
- ``searched``: an Optuna search (TPE, short trainings) of one dim, variant (full / hashed) and row
  share per vocabulary-size group under the budget, then its best config trained like every other row.

Also on real MovieLens (``../shared/data``): full tables, the hashing trick, and unified at the hashing
trick's parameter count. Writes the tables and a plot (test AUC against bytes, log scale) into
models/dlrm/README.md between ``<!-- quality:begin -->`` and ``<!-- quality:end -->``.

Sections beside the main table (``--section``, each its own block in the README): ``init`` (the
initialisation scale), ``qr-ops`` (QR's three ops at equal bytes, over seeds) and ``mixed-forms``
(mixed dimension's 4-block and field-level forms at equal bytes, over seeds): the evidence behind the
preset defaults (QR ``concat``, field-level mixed dimension).

    .venv/bin/python bench/quality.py            # ~25 min on 2 CPU cores
    .venv/bin/python bench/quality.py --quick    # CI-sized (tiny data), checks the plumbing only
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

from recsys_emb.benchmarks import command_line, quiet, write_section

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_dims import size_groups  # noqa: E402

DEFAULT_INIT_SCALES = "0.05,0.1,0.2,0.3,0.5"
SEARCH_COMPRESSION = (1.0, 4.0, 16.0, 64.0, 256.0)
VARIANT_ORDER = ("full", "hashed", "multi_hash", "qr", "mixed", "mixed_field", "unified", "searched")
DEFAULT = dict(config="configs/dlrm_criteo_like_full.yaml", budgets="1,1/4,1/16,1/64", search_trials=10,
               search_steps=150, movielens_config="configs/dlrm_movielens.yaml", movielens_compression=4.0)
QUICK_OVERRIDES = ["data.generate={kind: criteo-like, rows: 20000, scale: 0.001, seed: 0}", "data.batch_size=512",
                   "model.bottom_mlp=[16, 8]", "model.top_mlp=[16]", "embeddings.dim=8", "embeddings.min_rows=64",
                   "train.checkpoint_every=0", "train.max_steps=20"]


def _budget(text: str) -> Fraction:
    f = Fraction(text)
    if not 0 < f <= 1:
        raise ValueError(f"--budgets: {text!r} must lie in (0, 1]")
    return f


def _base_dict(config: str, overrides: Sequence[str]) -> Dict[str, Any]:
    from recsys_emb.config import config_to_dict, load_config

    d = config_to_dict(load_config(config, list(overrides)))
    d["train"].update(checkpoint_every=0, eval_every=0, progress=False, log_every=0)
    return d


def _section_base(args: argparse.Namespace) -> Dict[str, Any]:
    """The Criteo-like base config of the runs (``--config``, ``--set``, and with ``--quick`` the tiny data)."""
    out = Path(args.out_dir)
    overrides = list(args.set) + (QUICK_OVERRIDES + [f"data.path={out / 'criteo-like-quick'}"] if args.quick else [])
    return _base_dict(args.config, overrides)


def _bytes_of(run: Dict[str, Any], schema: Any) -> int:
    from recsys_emb.config import config_from_dict
    from recsys_emb.memory import memory_from_specs
    from recsys_emb.training import build_features

    specs, _ = build_features(config_from_dict(run), schema)
    return int(memory_from_specs(specs).bytes)


def _with(base: Dict[str, Any], **emb: Any) -> Dict[str, Any]:
    run = copy.deepcopy(base)
    run["embeddings"].update(emb)
    return run


def variant_runs(base: Dict[str, Any], schema: Any, budget: Fraction, full_bytes: int) -> Dict[str, Optional[Dict[str, Any]]]:
    """The run dict of each fixed variant at ``budget`` (None: the variant cannot get within it)."""
    dim = int(base["embeddings"]["dim"])
    share = float(budget)
    out: Dict[str, Optional[Dict[str, Any]]] = {}
    full_dim = int(dim * share) // 4 * 4
    out["full"] = _with(base, variant="full", dim=full_dim) if full_dim >= 4 and full_dim * budget.denominator \
        == dim * budget.numerator else None
    for v in ("hashed", "multi_hash", "qr", "unified"):
        # qr: the paper's mult op (the preset default is concat; the qr-ops section compares them)
        out[v] = _with(base, variant=v, compression=float(1 / budget), **({"qr_op": "mult"} if v == "qr" else {}))
    # mixed dimension, 4 frequency blocks per field and field-level (one table per field, DLRM's
    # md_solver dims): the smallest alpha within the budget (bytes fall as alpha grows)
    cap = full_bytes * share * 1.02
    for name, blocks in (("mixed", 4), ("mixed_field", 1)):
        def mixed(alpha: float, blocks: int = blocks) -> Dict[str, Any]:
            return _with(base, variant="mixed", alpha=round(alpha, 4), num_blocks=blocks)

        if _bytes_of(mixed(0.0), schema) <= cap:
            out[name] = mixed(0.0)
        elif _bytes_of(mixed(2.0), schema) > cap:
            out[name] = None
        else:
            lo, hi = 0.0, 2.0
            for _ in range(14):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if _bytes_of(mixed(mid), schema) <= cap else (mid, hi)
            out[name] = mixed(hi)
    return out


def searched_run(base: Dict[str, Any], vocab: Dict[str, int], budget_bytes: int, smallest_bytes: int, work: Path,
                 trials: int, steps: int) -> Optional[Dict[str, Any]]:
    """Search dims + variant per vocabulary group under ``budget_bytes``; the best trial's run dict."""
    from recsys_emb.search import best_trial, load_search_config, search, trial_run_config

    work.mkdir(parents=True, exist_ok=True)
    if smallest_bytes > budget_bytes:  # even dim 4 and 1/256 of the rows everywhere is over: nothing to search
        return None
    (work / "train.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    db = work / "study.db"
    if db.exists():
        db.unlink()
    dim = int(base["embeddings"]["dim"])
    spec = {
        "base_config": "train.yaml",
        "train_overrides": [f"train.max_steps={steps}", f"train.eval_every={max(1, steps // 2)}"],
        "study_name": "quality", "storage": f"sqlite:///{db}", "out_root": str(work / "runs"),
        "n_trials": trials, "mode": "single", "budget_bytes": int(budget_bytes),
        "space": {"dims": sorted({d for d in (4, 8, 12, 16, 24, 32) if d <= 2 * dim}),
                  "groups": size_groups(vocab), "ungrouped": "fixed", "variants": ["full", "hashed"],
                  "compression": list(SEARCH_COMPRESSION)},
        "sampler": "tpe", "pruner": {"kind": "median", "startup_trials": 4, "warmup_steps": max(1, steps // 2)},
        "seed": 0, "progress": False, "max_over_budget_trials": 50 * trials,
    }
    (work / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scfg = load_search_config(work / "search.yaml")
    study = search(scfg)
    best = best_trial(study, scfg)
    if best is None:
        return None
    from recsys_emb.config import config_to_dict

    run = config_to_dict(trial_run_config(scfg, best.user_attrs["embeddings"], run_dict=copy.deepcopy(base)))
    run["train"] = copy.deepcopy(base["train"])  # the full training budget, not the trial's
    return run


def _train(run: Dict[str, Any], name: str, out: Path) -> Dict[str, Any]:
    from recsys_emb.config import config_from_dict
    from recsys_emb.training import train

    run = copy.deepcopy(run)
    run["name"] = name
    run["train"]["out_dir"] = str(out / name)
    t0 = time.perf_counter()
    s = train(config_from_dict(run))
    return {"name": name, "test_auc": s["test"]["auc"], "test_logloss": s["test"]["logloss"],
            "valid_auc": s["valid"]["auc"], "params": s["embedding_params"], "bytes": s["embedding_bytes"],
            "ceiling_auc": s["test"].get("ceiling_auc"), "ceiling_logloss": s["test"].get("ceiling_logloss"),
            "samples_per_s": s.get("samples_per_s"), "seconds": time.perf_counter() - t0,
            "embeddings": run["embeddings"]}


def run_criteo(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    from recsys_emb.config import config_from_dict
    from recsys_emb.data.parquet import TableSchema, read_metadata
    from recsys_emb.training import prepare_data

    out = Path(args.out_dir)
    base = _section_base(args)
    data_dir = prepare_data(config_from_dict(base))
    meta = read_metadata(data_dir)
    schema = TableSchema.from_dict(meta["schema"])
    vocab = {k: int(v) for k, v in schema.vocab_sizes.items()}
    full_bytes = _bytes_of(_with(base, variant="full"), schema)
    budgets = [_budget(b) for b in args.budgets.split(",")]
    # the search space's smallest point: dim 4 everywhere, large fields hashed to 1/256 of their rows
    smallest = _bytes_of(_with(base, variant="hashed", dim=4, compression=max(SEARCH_COMPRESSION)), schema)
    rows: List[Dict[str, Any]] = []
    for budget in budgets:
        runs = variant_runs(base, schema, budget, full_bytes)
        if "searched" in args.variants:
            runs["searched"] = searched_run(base, vocab, int(full_bytes * budget), smallest,
                                            out / f"search_{budget}".replace("/", "_"), args.search_trials,
                                            args.search_steps)
        for v in VARIANT_ORDER:
            if v not in args.variants:
                continue
            run = runs.get(v)
            if run is None:
                rows.append({"variant": v, "budget": str(budget), "reachable": False})
                log(f"{v} @ {budget}: out of reach")
                continue
            r = _train(run, f"{v}_{str(budget).replace('/', '_')}", out)
            r.update(variant=v, budget=str(budget), reachable=True, bytes_ratio=r["bytes"] / full_bytes)
            rows.append(r)
            log(f"{v} @ {budget}: test AUC {r['test_auc']:.4f}, {r['bytes']:,} bytes ({r['bytes_ratio']:.3f}), "
                f"{r['seconds']:.0f} s")
    ceiling = next((r["ceiling_auc"] for r in rows if r.get("ceiling_auc")), None)
    ceiling_ll = next((r["ceiling_logloss"] for r in rows if r.get("ceiling_logloss")), None)
    return {"rows": rows, "full_bytes": full_bytes, "ceiling_auc": ceiling, "ceiling_logloss": ceiling_ll,
            "data": {"path": str(data_dir), "rows": meta.get("rows"), "generate": base["data"].get("generate")},
            "base": base}


def run_movielens(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    """Full tables, the hashing trick at 1/compression rows, unified at the hashing trick's parameters."""
    from recsys_emb.config import config_from_dict
    from recsys_emb.data.parquet import TableSchema, read_metadata
    from recsys_emb.training import prepare_data

    out = Path(args.out_dir)
    overrides = list(args.movielens_set) + (["train.max_steps=20", "train.epochs=1"] if args.quick else [])
    base = _base_dict(args.movielens_config, overrides)
    schema = TableSchema.from_dict(read_metadata(prepare_data(config_from_dict(base)))["schema"])
    min_rows = min(1024, max(64, sorted(schema.vocab_sizes.values())[-2]))  # compress the large fields only
    base["embeddings"]["min_rows"] = min_rows
    c = float(args.movielens_compression)
    hashed = _with(base, variant="hashed", compression=c)
    target = _bytes_of(hashed, schema)
    # unified: the compression whose single table has the hashing trick's parameter count (bisection)
    lo, hi = 1.0, 4 * c
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _bytes_of(_with(base, variant="unified", compression=mid), schema) > target else (lo, mid)
    unified = _with(base, variant="unified", compression=round(hi, 4))
    rows = []
    for v, run in (("full", _with(base, variant="full")), ("hashed", hashed), ("unified", unified)):
        r = _train(run, f"movielens_{v}", out)
        r.update(variant=v)
        rows.append(r)
        log(f"movielens {v}: test AUC {r['test_auc']:.4f}, {r['params']:,} params")
    return {"rows": rows, "compression": c, "min_rows": min_rows, "vocab": dict(schema.vocab_sizes)}


def run_init_sweep(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    """The same runs with every table drawn from ``U(-s, s)`` for a grid of ``s`` (``embeddings.init_scale``),
    against TorchRec's default ``1/sqrt(rows)`` per table."""
    out = Path(args.out_dir)
    base = _section_base(args)
    budget = _budget(args.init_budget)
    scales = [None] + [float(x) for x in (args.init_scales or ("0.1" if args.quick else DEFAULT_INIT_SCALES)).split(",")]
    rows = []
    for v in [x for x in args.init_variants.split(",") if x]:
        comp = 1.0 if v == "full" else float(1 / budget)
        for sc in scales:
            r = _train(_with(base, variant=v, compression=comp, init_scale=sc), f"init_{v}_{sc or 'default'}", out)
            r.update(variant=v, init_scale=sc, budget="1" if v == "full" else str(budget))
            rows.append(r)
            log(f"init {v} {sc or 'default'}: test AUC {r['test_auc']:.4f}")
    return {"rows": rows, "scales": scales, "base": base}


def init_report(res: Dict[str, Any], command: str) -> str:
    scales = res["scales"]
    head = ["variant (budget)", *["1/sqrt(rows) (TorchRec)" if s is None else f"U(±{s:g})" for s in scales]]
    lines = ["Test AUC of runs like those of the table above (same data, model, training) with every table drawn from `U(-s, s)` "
             "(`embeddings.init_scale: s`) instead of TorchRec's default `U(±1/sqrt(rows))` per table.", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * len(scales)]
    for v in dict.fromkeys(r["variant"] for r in res["rows"]):
        rs = {r["init_scale"]: r for r in res["rows"] if r["variant"] == v}
        best = max(rs.values(), key=lambda r: r["test_auc"])
        cells = [(f"**{rs[s]['test_auc']:.4f}**" if rs[s] is best else f"{rs[s]['test_auc']:.4f}") for s in scales]
        lines.append(f"| {v} ({next(iter(rs.values()))['budget']}) | " + " | ".join(cells) + " |")
    best = {v: max((r for r in res["rows"] if r["variant"] == v), key=lambda r: r["test_auc"])
            for v in dict.fromkeys(r["variant"] for r in res["rows"])}

    def name(r: Dict[str, Any]) -> str:
        return f"{r['variant']} ({r['budget']}, {'default' if r['init_scale'] is None else 'U(±%g)' % r['init_scale']})"

    if "unified" in best and "hashed" in best:
        u, h = best["unified"], best["hashed"]
        d = u["test_auc"] - h["test_auc"]
        lines += ["", f"- Each at its best scale: {name(u)} {u['test_auc']:.4f} vs {name(h)} {h['test_auc']:.4f} "
                  f"({d:+.4f}): unified {'is' if d >= 0 else 'is not'} on the Pareto front against the hashing "
                  "trick at equal parameters."]
        if "full" in best:
            f = best["full"]
            lines.append(f"- {name(u)} {u['test_auc']:.4f} vs full tables {name(f)} {f['test_auc']:.4f} "
                         f"({u['test_auc'] - f['test_auc']:+.4f}) at {u['bytes'] / f['bytes']:.2f}x the bytes.")
    lines += ["", "The default bound shrinks with the table: a unified table (every field in one) starts "
              "orders of magnitude smaller than the per-field tables it replaces, so compare variants at "
              "their own best scale as well as at the default.", "", f"Command: `{command}`"]
    return "\n".join(lines)


QR_OPS = ("mult", "add", "concat")
MIXED_FORMS = (("blocks", 4), ("field", 1))
"""Mixed-dimension forms of the mixed-forms section: (name, ``num_blocks``)."""


def _seeded_runs(forms: Sequence[Any], seeds: Sequence[int], out: Path, log: Callable[[str], None],
                 tag: str) -> List[Dict[str, Any]]:
    """Train every ``(name, run dict, fields to record)`` form once per seed."""
    rows = []
    for name, run, fields in forms:
        for seed in seeds:
            seeded = copy.deepcopy(run)
            seeded["seed"] = seed
            r = _train(seeded, f"{tag}_{name}_seed{seed}", out)
            r.update(form=name, seed=seed, **fields)
            rows.append(r)
            log(f"{tag} {name} seed {seed}: test AUC {r['test_auc']:.4f}")
    return rows


def _seed_summary(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and range of test AUC, mean train speed, of one form's seeded runs."""
    aucs = [r["test_auc"] for r in rows]
    return {"mean": sum(aucs) / len(aucs), "range": f"{min(aucs):.4f}-{max(aucs):.4f}",
            "speed": sum(r["samples_per_s"] for r in rows) / len(rows), "first": rows[0]}


def run_qr_ops(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    """Quotient-remainder with each combining op at the same bytes (``compression`` is a bytes ratio:
    ``mult`` and ``add`` keep ``budget`` of the rows at full width; ``concat`` has two half-width
    tables, so twice the rows)."""
    base = _section_base(args)
    budget = _budget(args.init_budget)
    comp = float(1 / budget)
    seeds = list(range(args.qr_seeds))
    forms = [(op, _with(base, variant="qr", compression=comp, qr_op=op), {"op": op, "compression": comp})
             for op in QR_OPS]
    return {"rows": _seeded_runs(forms, seeds, Path(args.out_dir), log, "qr"), "budget": str(budget), "seeds": seeds}


def qr_ops_report(res: Dict[str, Any], command: str) -> str:
    lines = [f"Quotient-remainder at {res['budget']} of the full tables' bytes with each combining op (the same "
             f"data, model and training as the tables above; seeds {res['seeds']}, test AUC mean and range). "
             "`concat` joins two half-width lookups, so at the same bytes it keeps twice the quotient rows.", "",
             "| op | compression | quotient rows kept | embedding bytes | test AUC | range | train samples/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    means = {}
    for op in QR_OPS:
        sm = _seed_summary([r for r in res["rows"] if r["op"] == op])
        means[op] = sm["mean"]
        first = sm["first"]
        rows_kept = Fraction(2 if op == "concat" else 1) / Fraction(first["compression"]).limit_denominator(1000)
        lines.append(f"| {op} | {first['compression']:g} | {rows_kept} | {_mb(first['bytes'])} | {sm['mean']:.4f} | "
                     f"{sm['range']} | {sm['speed']:,.0f} |")
    best = max(means, key=means.__getitem__)
    lines += ["", f"- Best at equal bytes: `{best}` ({means[best]:.4f}); "
              + ", ".join(f"`{op}` {means[op] - means[best]:+.4f}" for op in QR_OPS if op != best) + ".",
              "- Speed of the embeddings alone: [`docs/performance.md`](../../docs/performance.md) (`concat` needs no "
              "arithmetic after the lookups; `mult` and `add` do one elementwise pass per field forward and two backward).",
              "", f"Command: `{command}`"]
    return "\n".join(lines)


def run_mixed_forms(args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    """Mixed dimension with 4 frequency blocks per field against the field-level form (one table per
    field), each with the alpha that fits the budget, at each of ``--mixed-budgets``."""
    from recsys_emb.config import config_from_dict
    from recsys_emb.data.parquet import TableSchema, read_metadata
    from recsys_emb.training import prepare_data

    base = _section_base(args)
    schema = TableSchema.from_dict(read_metadata(prepare_data(config_from_dict(base)))["schema"])
    full_bytes = _bytes_of(_with(base, variant="full"), schema)
    seeds = list(range(args.qr_seeds))
    rows, budgets = [], [_budget(b) for b in args.mixed_budgets.split(",")]
    for budget in budgets:
        runs = variant_runs(base, schema, budget, full_bytes)
        forms = []
        for name, blocks in MIXED_FORMS:
            run = runs["mixed" if blocks > 1 else "mixed_field"]
            if run is None:
                log(f"mixed {name} @ {budget}: out of reach")
                continue
            forms.append((name, run, {"budget": str(budget), "num_blocks": blocks,
                                      "alpha": run["embeddings"]["alpha"]}))
        rows += _seeded_runs(forms, seeds, Path(args.out_dir), log, f"mixed_{str(budget).replace('/', '_')}")
    return {"rows": rows, "budgets": [str(b) for b in budgets], "seeds": seeds, "full_bytes": full_bytes}


def mixed_forms_report(res: Dict[str, Any], command: str) -> str:
    lines = [f"Mixed dimension at equal bytes: 4 frequency blocks per field against the field-level form (one table "
             f"per field, dims by DLRM's `md_solver` rule), each with the alpha that fits the budget (the same data, "
             f"model and training as the tables above; seeds {res['seeds']}, test AUC mean and range).", "",
             "| budget | form | num_blocks | alpha | embedding bytes | x full | test AUC | range | train samples/s |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for budget in res["budgets"]:
        means, nbytes = {}, {}
        for name, _ in MIXED_FORMS:
            rs = [r for r in res["rows"] if r["budget"] == budget and r["form"] == name]
            if not rs:
                lines.append(f"| {budget} | {name} | | | out of reach | | | | |")
                continue
            sm = _seed_summary(rs)
            means[name] = sm["mean"]
            f = sm["first"]
            nbytes[name] = f["bytes"]
            lines.append(f"| {budget} | {name} | {f['num_blocks']} | {f['alpha']:g} | {_mb(f['bytes'])} | "
                         f"{f['bytes'] / res['full_bytes']:.3f} | {sm['mean']:.4f} | {sm['range']} | {sm['speed']:,.0f} |")
        if len(means) == 2:
            notes.append(f"{budget}: {means['field'] - means['blocks']:+.4f} (field-level at "
                         f"{nbytes['field'] / nbytes['blocks']:.2f}x the blocks' bytes)")
    lines += ["", "- Field-level minus blocks, mean test AUC: " + (", ".join(notes) if notes else "no budget reachable "
              "by both") + ". The field-level dims move in steps of 4, so its bytes jump with alpha and can land "
              "well below the budget.",
              "- Speed of the embeddings alone: [`docs/performance.md`](../../docs/performance.md) (the blocks project "
              "every block of every bag; the field-level form one table per field).", "", f"Command: `{command}`"]
    return "\n".join(lines)


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def plot(res: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in VARIANT_ORDER:
        pts = sorted((r["bytes"], r["test_auc"]) for r in res["rows"] if r["variant"] == v and r.get("reachable"))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
    if res.get("ceiling_auc"):
        ax.axhline(res["ceiling_auc"], color="k", ls="--", lw=1, label="ceiling (true probabilities)")
    ax.set_xscale("log")
    ax.set_xlabel("embedding parameter bytes (log scale)")
    ax.set_ylabel("test AUC")
    ax.set_title("DLRM on Criteo-like data: quality against memory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdicts(res: Dict[str, Any]) -> List[str]:
    """The papers' claims against the measured rows (None where a comparison is missing)."""
    by = {(r["variant"], r["budget"]): r for r in res["rows"] if r.get("reachable")}
    budgets = sorted({r["budget"] for r in res["rows"]}, key=lambda b: -Fraction(b))
    out = []
    full = by.get(("full", "1"))
    ceiling = res.get("ceiling_auc")
    if full and ceiling:
        gap = (full["test_auc"] - 0.5) / (ceiling - 0.5)
        out.append(f"- Full tables close **{gap:.1%}** of the gap between AUC 0.5 and the ceiling "
                   f"({full['test_auc']:.4f} vs {ceiling:.4f}); target 90%: **{'met' if gap >= 0.9 else 'not met'}**.")
    md = [by[("mixed", b)] for b in budgets if ("mixed", b) in by and b != "1"]
    if full and md:
        best = max(md, key=lambda r: r["test_auc"])
        d = best["test_auc"] - full["test_auc"]
        out.append(f"- Mixed dimension matches full tables at a fraction of the parameters: at "
                   f"{best['bytes_ratio']:.2f}x the bytes its test AUC is {d:+.4f} vs full "
                   f"-> **{'holds' if d >= -0.002 else 'does not hold'}** (within 0.002).")
    both = [(b, by[("mixed_field", b)], by[("mixed", b)]) for b in budgets
            if ("mixed", b) in by and ("mixed_field", b) in by and b != "1"]
    if both:
        out.append("- Field-level mixed dimension (one table per field) against 4 frequency blocks per field, "
                   "test AUC at each budget: " + ", ".join(
                       f"{b}: {f['test_auc'] - m['test_auc']:+.4f} ({f['bytes'] / m['bytes']:.2f}x the bytes)"
                       for b, f, m in both) + ".")
    for v, claim, strict in (("unified", "Unified is on the Pareto front against the hashing trick (AUC >= at equal "
                                            "parameters)", False),
                             ("qr", "QR beats the hashing trick at equal parameters", True)):
        pairs = [(b, by[(v, b)], by[("hashed", b)]) for b in budgets if (v, b) in by and ("hashed", b) in by and b != "1"]
        if not pairs:
            continue
        # "equal parameters" only where the two hold within 15% of each other's bytes
        fair = [(b, x["test_auc"] - h["test_auc"]) for b, x, h in pairs if abs(x["bytes"] / h["bytes"] - 1) <= 0.15]
        unfair = [f"{b} ({x['bytes'] / h['bytes']:.1f}x the bytes, {x['test_auc'] - h['test_auc']:+.4f})"
                  for b, x, h in pairs if abs(x["bytes"] / h["bytes"] - 1) > 0.15]
        held = sum(1 for _, d in fair if (d > 0 if strict else d >= 0))
        verdict = "holds" if fair and held == len(fair) else f"holds at {held} of {len(fair)} budgets"
        out.append(f"- {claim}: " + ", ".join(f"{b}: {d:+.4f}" for b, d in fair) + f" -> **{verdict}**"
                   + (f"; not comparable at {', '.join(unfair)}" if unfair else "") + ".")
    return out


def report(res: Dict[str, Any], ml: Optional[Dict[str, Any]], command: str, plot_name: str) -> str:
    b = res["base"]
    gen = res["data"]["generate"] or {}
    rows_meta = res["data"]["rows"] or {}
    lines = [
        f"DLRM (bottom {b['model']['bottom_mlp']}, top {b['model']['top_mlp']}, {b['model']['interaction']}), "
        f"dim {b['embeddings']['dim']}, on generated Criteo-like data ({gen.get('rows', '?'):,} rows, cardinality scale "
        f"{gen.get('scale', '?')}; train/valid/test {rows_meta.get('train', '?'):,}/{rows_meta.get('valid', '?'):,}/"
        f"{rows_meta.get('test', '?'):,}). Every run: {b['train']['epochs']} epoch(s)"
        + (f", at most {b['train']['max_steps']} steps" if b['train'].get('max_steps') else "")
        + f", batch {b['data']['batch_size']}, seed {b['seed']}, {b['optim']['embedding']} {b['optim']['embedding_lr']} "
        f"+ {b['optim']['dense']} {b['optim']['dense_lr']}. Budget = fraction of the full tables' "
        f"{_mb(res['full_bytes'])}; `bytes` is what each run actually holds (small fields stay whole, so "
        "compressed variants sit a little above their budget).", "",
        "| variant | budget | test AUC | test log loss | params | bytes | x full |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if res.get("ceiling_auc"):
        lines.append(f"| ceiling (true probabilities) | | {res['ceiling_auc']:.4f} | {res['ceiling_logloss']:.4f} | | | |")
    for r in sorted(res["rows"], key=lambda r: (VARIANT_ORDER.index(r["variant"]), -Fraction(r["budget"]))):
        if not r.get("reachable"):
            lines.append(f"| {r['variant']} | {r['budget']} | out of reach | | | | |")
            continue
        lines.append(f"| {r['variant']} | {r['budget']} | {r['test_auc']:.4f} | {r['test_logloss']:.4f} | "
                     f"{r['params']:,} | {_mb(r['bytes'])} | {r['bytes_ratio']:.3f} |")
    lines += ["", f"![test AUC against bytes]({plot_name})", "", "Claims checked on these rows:", "", *_verdicts(res)]
    searched = [r for r in res["rows"] if r["variant"] == "searched" and r.get("reachable")]
    if searched:
        lines += ["", "Searched configs (per vocabulary-size group: dim, and variant/rows where not full):", ""]
        for r in searched:
            e = r["embeddings"]
            parts = {f: f"d{d}" for f, d in (e.get("dims") or {}).items()}
            for f, o in (e.get("overrides") or {}).items():
                parts[f] = f"{o.get('type')} d{o.get('dim')}" + (f" {o['buckets']} rows" if "buckets" in o else "")
            lines.append(f"- {r['budget']}: " + ", ".join(f"{f} {parts[f]}" for f in sorted(parts, key=lambda f: (len(f), f))))
    if ml:
        lines += ["", f"Real MovieLens latest-small (rating >= 4 = click), `{DEFAULT['movielens_config']}`: full tables, "
                  f"the hashing trick keeping 1/{ml['compression']:g} of the rows of fields with >= {ml['min_rows']} ids, "
                  "and one unified table with the hashing trick's parameter count.", "",
                  "| variant | test AUC | test log loss | params | bytes |", "|---|---:|---:|---:|---:|"]
        for r in ml["rows"]:
            lines.append(f"| {r['variant']} | {r['test_auc']:.4f} | {r['test_logloss']:.4f} | {r['params']:,} | {_mb(r['bytes'])} |")
    secs = sum(r.get("seconds", 0) for r in res["rows"])
    lines += ["", f"Hardware: {platform.machine()}, CPU only; {secs / 60:.1f} min of training.", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny generated data, few steps, 2 search trials")
    p.add_argument("--config", default=DEFAULT["config"], help="base DLRM config (its variant is ignored)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of the base config")
    p.add_argument("--budgets", default=DEFAULT["budgets"], help="comma-separated fractions of the full bytes")
    p.add_argument("--variants", default=",".join(VARIANT_ORDER), help="comma-separated subset of " + ",".join(VARIANT_ORDER))
    p.add_argument("--search-trials", type=int, default=None, help=f"default {DEFAULT['search_trials']} (quick: 2)")
    p.add_argument("--search-steps", type=int, default=None, help=f"default {DEFAULT['search_steps']} (quick: 10)")
    p.add_argument("--movielens-config", default=DEFAULT["movielens_config"])
    p.add_argument("--movielens-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--movielens-compression", type=float, default=DEFAULT["movielens_compression"])
    p.add_argument("--no-movielens", action="store_true")
    p.add_argument("--section", default="all", choices=["all", "main", "init", "qr-ops", "mixed-forms"],
                   help="main: the budget table; init: the initialisation-scale sweep; qr-ops: QR's combining "
                        "ops at equal bytes; mixed-forms: mixed dimension's block and field-level forms at equal "
                        "bytes; all: every section")
    p.add_argument("--qr-seeds", type=int, default=None,
                   help="seeds per form of the qr-ops and mixed-forms sections (default 3; quick: 1)")
    p.add_argument("--mixed-budgets", default=None, help="budgets of the mixed-forms section (default 1/2,1/3; quick: "
                                                        "3/4). The field-level form reaches down to about 0.26 at dim 16")
    p.add_argument("--init-variants", default="full,hashed,unified", help="variants of the init sweep")
    p.add_argument("--init-scales", default=None, help=f"uniform bounds of the init sweep (default {DEFAULT_INIT_SCALES})")
    p.add_argument("--init-budget", default="1/4", help="budget of the init sweep (full tables always at 1) and of the "
                                                       "qr-ops section")
    p.add_argument("--out-dir", default=None, help="work directory (default bench/out/quality[_quick])")
    p.add_argument("--readme", default=str(REPO / "models" / "dlrm" / "README.md"))
    p.add_argument("--no-readme", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in args.variants if v not in VARIANT_ORDER]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {list(VARIANT_ORDER)}")
    args.search_trials = args.search_trials or (2 if args.quick else DEFAULT["search_trials"])
    args.search_steps = args.search_steps or (10 if args.quick else DEFAULT["search_steps"])
    args.qr_seeds = args.qr_seeds or (1 if args.quick else 3)
    args.mixed_budgets = args.mixed_budgets or ("3/4" if args.quick else "1/2,1/3")
    args.out_dir = args.out_dir or str(REPO / "bench" / "out" / ("quality_quick" if args.quick else "quality"))
    if args.quick:
        args.movielens_set = ["data.batch_size=256", *args.movielens_set]
    quiet()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    command = command_line("bench/quality.py", argv)
    readme = Path(args.readme)
    sections = [("init", run_init_sweep, init_report, "quality-init", "## Initialisation scale, per variant"),
                ("qr-ops", run_qr_ops, qr_ops_report, "quality-qr-ops", "## Quotient-remainder: which op, at equal bytes"),
                ("mixed-forms", run_mixed_forms, mixed_forms_report, "quality-mixed-forms",
                 "## Mixed dimension: frequency blocks or one table per field, at equal bytes")]
    for name, run_section, report_section, marker, title in sections:
        if args.section not in (name, "all"):
            continue
        section_res = run_section(args, log)
        section_text = report_section(section_res, command)
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.out_dir) / f"{name.replace('-', '_')}_results.json").write_text(
            json.dumps(section_res, indent=1, default=str))
        print(section_text)
        if not args.no_readme:
            write_section(readme, marker, section_text, title)
        if args.section == name:
            return 0
    res = run_criteo(args, log)
    ml = None if args.no_movielens else run_movielens(args, log)
    plot_path = readme.parent / ("quality_quick.png" if args.quick else "quality.png")
    plot(res, plot_path)
    text = report(res, ml, command, plot_path.name)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.out_dir) / "results.json").write_text(json.dumps({"criteo": res, "movielens": ml}, indent=1, default=str))
    print(text)
    if not args.no_readme:
        write_section(readme, "quality", text, "## Quality against memory, every variant")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
