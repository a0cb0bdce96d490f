"""The sections of the quality benchmark, each a set of trainings returning its rows: ``main`` (every
variant at every budget on Criteo-like data, and MovieLens), ``init`` (the initialisation scale),
``qr-ops`` (QR's ops at equal bytes), ``mixed-forms`` (mixed dimension's two forms at equal bytes) and
``avazu`` (the variants and the reference rows on Avazu-shaped synthetic data read through a schema),
``dcn`` (DLRM-DCNv2 beside the dot DLRM with the same embeddings) and ``families`` (every compression
family at every budget it reaches, beside the reference rows)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, List

from recsys_emb.benchmarks.quality.runs import (AVAZU_VARIANTS, DEFAULT_INIT_SCALES, FAMILY_ROWS, SEARCH_COMPRESSION, VARIANT_ORDER,
                                                QualitySettings, base_dict, bytes_of, parse_budget, parse_dcn_rows,
                                                searched_run,
                                                section_base, seeded_runs, train_run, train_seeds, variant_runs,
                                                with_embeddings)
from recsys_emb.benchmarks.quality.storage import score_storage

__all__ = ["QR_OPS", "MIXED_FORMS", "AVAZU_VARIANTS", "FAMILY_ROWS", "REACH_SLACK", "run_criteo", "run_movielens",
           "run_init_sweep", "run_qr_ops", "run_mixed_forms", "run_avazu", "avazu_dataset", "run_dcn", "run_families",
           "reference_rows_on_test"]

logger = logging.getLogger(__name__)

QR_OPS = ("mult", "add", "concat")
MIXED_FORMS = (("blocks", 4), ("field", 1))
"""Mixed-dimension forms of the mixed-forms section: (name, ``num_blocks``)."""
REACH_SLACK = 1.35
"""A family reaches a budget when its bytes are at most this many times the budget: fields under
``min_rows`` ids stay whole, so a compressed configuration sits a little above its budget (1.07x at 1/16,
1.3x at 1/64 on the Criteo-like data); the whole fields alone pass 2x the budget at 1/256."""
AVAZU_SCHEMA_CHANGES: Dict[str, Any] = {"columns": {}}
"""The avazu section's schema: the shipped example (configs/schemas/avazu.yaml) with ``device_id`` and
``device_ip`` counted (``min_count`` 2) instead of hashed into 500k / 1M buckets, so that the full row
holds one row per value seen twice and the variants do the compressing."""


def _schema(base: Dict[str, Any]) -> Any:
    """The prepared data's schema and metadata of a run dict (the data is generated when missing)."""
    from recsys_emb.config import config_from_dict
    from recsys_emb.data.parquet import read_metadata, schema_from_metadata
    from recsys_emb.training import prepare_data

    data_dir = prepare_data(config_from_dict(base))
    meta = read_metadata(data_dir)
    return data_dir, meta, schema_from_metadata(meta)


def run_criteo(s: QualitySettings) -> Dict[str, Any]:
    """Every variant of ``s.variants`` at every budget of ``s.budgets``, on the Criteo-like base config."""
    out = Path(s.out_dir)
    base = section_base(s)
    data_dir, meta, schema = _schema(base)
    vocab = {k: int(v) for k, v in schema.vocab_sizes.items()}
    full_bytes = bytes_of(with_embeddings(base, variant="full"), schema)
    budgets = [parse_budget(b) for b in s.budgets.split(",")]
    # the search space's smallest point: dim 4 everywhere, large fields hashed to 1/256 of their rows
    smallest = bytes_of(with_embeddings(base, variant="hashed", dim=4, compression=max(SEARCH_COMPRESSION)), schema)
    rows: List[Dict[str, Any]] = []
    for budget in budgets:
        runs = variant_runs(base, schema, budget, full_bytes)
        if "searched" in s.variants:
            runs["searched"] = searched_run(base, vocab, int(full_bytes * budget), smallest,
                                            out / f"search_{budget}".replace("/", "_"), s.search_trials,
                                            s.search_steps, s.reuse)
        for v in VARIANT_ORDER:
            if v not in s.variants:
                continue
            run = runs.get(v)
            if run is None:
                rows.append({"variant": v, "budget": str(budget), "reachable": False})
                logger.info("%s @ %s: out of reach", v, budget)
                continue
            r = train_seeds(run, f"{v}_{str(budget).replace('/', '_')}", out, s.main_seeds, s.reuse)
            r.update(variant=v, budget=str(budget), reachable=True, bytes_ratio=r["bytes"] / full_bytes)
            if s.table_dtypes:
                r["storage"] = score_storage(out / r["name"], s.table_dtypes, int(base["data"]["batch_size"]))
            rows.append(r)
            logger.info("%s @ %s: test AUC %.4f, %s bytes (%.3f), %.0f s", v, budget, r["test_auc"],
                        f"{r['bytes']:,}", r["bytes_ratio"], r["seconds"])
    ceiling = next((r["ceiling_auc"] for r in rows if r.get("ceiling_auc")), None)
    ceiling_ll = next((r["ceiling_logloss"] for r in rows if r.get("ceiling_logloss")), None)
    return {"rows": rows, "full_bytes": full_bytes, "ceiling_auc": ceiling, "ceiling_logloss": ceiling_ll,
            "data": {"path": str(data_dir), "rows": meta.get("rows"), "generate": base["data"].get("generate")},
            "base": base}


def run_movielens(s: QualitySettings) -> Dict[str, Any]:
    """Full tables, the hashing trick at 1/compression rows, unified at the hashing trick's parameters."""
    out = Path(s.out_dir)
    overrides = list(s.movielens_overrides) + (["train.max_steps=20", "train.epochs=1"] if s.quick else [])
    base = base_dict(s.movielens_config, overrides)
    _, _, schema = _schema(base)
    min_rows = min(1024, max(64, sorted(schema.vocab_sizes.values())[-2]))  # compress the large fields only
    base["embeddings"]["min_rows"] = min_rows
    c = float(s.movielens_compression)
    hashed = with_embeddings(base, variant="hashed", compression=c)
    target = bytes_of(hashed, schema)
    # unified: the compression whose single table has the hashing trick's parameter count (bisection)
    lo, hi = 1.0, 4 * c
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if bytes_of(with_embeddings(base, variant="unified", compression=mid), schema) > target \
            else (lo, mid)
    unified = with_embeddings(base, variant="unified", compression=round(hi, 4))
    rows = []
    for v, run in (("full", with_embeddings(base, variant="full")), ("hashed", hashed), ("unified", unified)):
        r = train_seeds(run, f"movielens_{v}", out, s.main_seeds, s.reuse)
        r.update(variant=v)
        rows.append(r)
        logger.info("movielens %s: test AUC %.4f, %s params", v, r["test_auc"], f"{r['params']:,}")
    return {"rows": rows, "compression": c, "min_rows": min_rows, "vocab": dict(schema.vocab_sizes),
            "config": s.movielens_config}


def run_init_sweep(s: QualitySettings) -> Dict[str, Any]:
    """The same runs with every table drawn from ``U(-s, s)`` for a grid of ``s`` (``embeddings.init_scale``),
    against TorchRec's default ``1/sqrt(rows)`` per table."""
    out = Path(s.out_dir)
    base = section_base(s)
    budget = parse_budget(s.init_budget)
    scales = [None] + [float(x) for x in (s.init_scales or ("0.1" if s.quick else DEFAULT_INIT_SCALES)).split(",")]
    rows = []
    for v in [x for x in s.init_variants.split(",") if x]:
        comp = 1.0 if v == "full" else float(1 / budget)
        for sc in scales:
            r = train_run(with_embeddings(base, variant=v, compression=comp, init_scale=sc),
                          f"init_{v}_{sc or 'default'}", out)
            r.update(variant=v, init_scale=sc, budget="1" if v == "full" else str(budget))
            rows.append(r)
            logger.info("init %s %s: test AUC %.4f", v, sc or "default", r["test_auc"])
    return {"rows": rows, "scales": scales, "base": base}


def run_qr_ops(s: QualitySettings) -> Dict[str, Any]:
    """Quotient-remainder with each combining op at the same bytes (``compression`` is a bytes ratio:
    ``mult`` and ``add`` keep ``budget`` of the rows at full width; ``concat`` has two half-width
    tables, so twice the rows)."""
    base = section_base(s)
    budget = parse_budget(s.init_budget)
    comp = float(1 / budget)
    seeds = list(range(s.seeds))
    forms = [(op, with_embeddings(base, variant="qr", compression=comp, qr_op=op), {"op": op, "compression": comp})
             for op in QR_OPS]
    return {"rows": seeded_runs(forms, seeds, Path(s.out_dir), "qr"), "budget": str(budget), "seeds": seeds}


def run_mixed_forms(s: QualitySettings) -> Dict[str, Any]:
    """Mixed dimension with 4 frequency blocks per field against the field-level form (one table per
    field), each with the alpha that fits the budget, at each of ``s.mixed_budgets``."""
    base = section_base(s)
    _, _, schema = _schema(base)
    full_bytes = bytes_of(with_embeddings(base, variant="full"), schema)
    seeds = list(range(s.seeds))
    rows, budgets = [], [parse_budget(b) for b in s.mixed_budgets.split(",")]
    for budget in budgets:
        runs = variant_runs(base, schema, budget, full_bytes)
        forms = []
        for name, blocks in MIXED_FORMS:
            run = runs["mixed" if blocks > 1 else "mixed_field"]
            if run is None:
                logger.info("mixed %s @ %s: out of reach", name, budget)
                continue
            forms.append((name, run, {"budget": str(budget), "num_blocks": blocks,
                                      "alpha": run["embeddings"]["options"]["alpha"]}))
        rows += seeded_runs(forms, seeds, Path(s.out_dir), f"mixed_{str(budget).replace('/', '_')}")
    return {"rows": rows, "budgets": [str(b) for b in budgets], "seeds": seeds, "full_bytes": full_bytes}


def avazu_dataset(s: QualitySettings) -> Path:
    """The avazu section's data: ``s.avazu_rows`` Avazu-shaped rows (``generate avazu-like``, scale 0.01,
    seed 0) preprocessed under the example schema (:data:`AVAZU_SCHEMA_CHANGES`); both are kept in
    ``s.out_dir`` and made again only when missing."""
    from recsys_emb.data.avazu_like import generate_avazu_like
    from recsys_emb.data.tabular import load_table_spec, preprocess_table

    out = Path(s.out_dir)
    raw, data = out / f"avazu-like-{s.avazu_rows}-raw", out / f"avazu-like-{s.avazu_rows}"
    if not (data / "metadata.json").is_file():
        if not (raw / "generator.json").is_file():
            generate_avazu_like(raw, s.avazu_rows, scale=0.01, seed=0, overwrite=True)
        spec = load_table_spec("configs/schemas/avazu.yaml")
        preprocess_table({**spec.to_dict(), **AVAZU_SCHEMA_CHANGES}, raw / "avazu_like.csv", data, overwrite=True)
    return data


def run_avazu(s: QualitySettings) -> Dict[str, Any]:
    """DLRM (``s.avazu_config``, every field from the data's metadata) with each of
    ``s.avazu_variants`` (default :data:`AVAZU_VARIANTS`) at every budget of ``s.avazu_budgets`` (default
    ``s.budgets``), ``s.main_seeds`` seeds each, and the
    constant and logistic-regression rows (:func:`recsys_emb.baselines.baseline_report`), on
    :func:`avazu_dataset`."""
    from recsys_emb.baselines import baseline_report

    out = Path(s.out_dir)
    data = avazu_dataset(s)
    overrides = [f"data.path={data}", *s.avazu_overrides] + (["train.max_steps=20", "data.batch_size=512"]
                                                             if s.quick else [])
    base = base_dict(s.avazu_config, overrides)
    _, meta, schema = _schema(base)
    full_bytes = bytes_of(with_embeddings(base, variant="full"), schema)
    rows: List[Dict[str, Any]] = []
    for budget in [parse_budget(b) for b in (s.avazu_budgets or s.budgets).split(",")]:
        runs = variant_runs(base, schema, budget, full_bytes)
        for v in s.avazu_variants:
            run = runs.get(v)
            if run is None:
                rows.append({"variant": v, "budget": str(budget), "reachable": False})
                continue
            r = train_seeds(run, f"avazu_{v}_{str(budget).replace('/', '_')}", out, s.main_seeds, s.reuse)
            r.update(variant=v, budget=str(budget), reachable=True, bytes_ratio=r["bytes"] / full_bytes)
            rows.append(r)
            logger.info("avazu %s @ %s: test AUC %.4f (%.3f of the full bytes)", v, budget, r["test_auc"],
                        r["bytes_ratio"])
    ref = baseline_report(data, splits=("test",))
    baselines = {name: res["test"].to_dict() for name, res in ref.items()}
    return {"rows": rows, "baselines": baselines, "full_bytes": full_bytes,
            "ceiling_auc": next((r["ceiling_auc"] for r in rows if r.get("ceiling_auc")), None),
            "data": {"path": str(data), "rows": meta.get("rows"), "vocab_sizes": meta.get("vocab_sizes")},
            "config": s.avazu_config, "overrides": list(s.avazu_overrides), "base": base}


def run_dcn(s: QualitySettings) -> Dict[str, Any]:
    """DLRM-DCNv2 (``model.interaction: dcn``, the base config's ``cross_layers`` and ``cross_rank``) beside
    the main section's dot DLRM: each ``variant@budget`` of ``s.dcn_rows``, both models with the same
    embeddings, data, training and seeds (``s.main_seeds``). The dot runs are the main section's runs (same
    names and configs), so ``s.reuse`` reads back those the main section already trained."""
    out = Path(s.out_dir)
    base = section_base(s)
    _, _, schema = _schema(base)
    full_bytes = bytes_of(with_embeddings(base, variant="full"), schema)
    wanted = parse_dcn_rows(s.dcn_rows)
    by_budget = {b: variant_runs(base, schema, b, full_bytes) for b in dict.fromkeys(b for _, b in wanted)}
    rows: List[Dict[str, Any]] = []
    for v, budget in wanted:
        run = by_budget[budget].get(v)
        if run is None:
            rows.append({"variant": v, "budget": str(budget), "reachable": False})
            logger.info("dcn %s @ %s: out of reach", v, budget)
            continue
        tag = f"{v}_{str(budget).replace('/', '_')}"
        run = copy.deepcopy(run)
        run["model"]["interaction"] = "dot"  # the base config's (the main section's), unless overridden
        dcn = copy.deepcopy(run)
        dcn["model"]["interaction"] = "dcn"
        row: Dict[str, Any] = {"variant": v, "budget": str(budget), "reachable": True}
        for interaction, r in (("dot", run), ("dcn", dcn)):
            row[interaction] = train_seeds(r, tag if interaction == "dot" else f"dcn_{tag}", out, s.main_seeds,
                                           s.reuse)
            logger.info("%s %s @ %s: test AUC %.4f", interaction, v, budget, row[interaction]["test_auc"])
        row["bytes_ratio"] = row["dcn"]["bytes"] / full_bytes
        rows.append(row)
    return {"rows": rows, "full_bytes": full_bytes, "base": base,
            "cross_layers": base["model"]["cross_layers"], "cross_rank": base["model"]["cross_rank"]}


def run_families(s: QualitySettings) -> Dict[str, Any]:
    """Every family of :data:`FAMILY_ROWS` at every budget of ``s.family_budgets`` it reaches (its bytes
    within :data:`REACH_SLACK` of the budget; ``full`` at 1 only), ``s.main_seeds`` seeds each, on the main
    section's base config, beside the constant and logistic-regression rows of the same data
    (:func:`recsys_emb.baselines.baseline_report`). A row's runs carry the main section's names and configs,
    so ``s.reuse`` reads back those the main section already trained."""
    out = Path(s.out_dir)
    base = section_base(s)
    data_dir, meta, schema = _schema(base)
    full_bytes = bytes_of(with_embeddings(base, variant="full"), schema)
    rows: List[Dict[str, Any]] = []
    for budget in [parse_budget(b) for b in s.family_budgets.split(",")]:
        for v in s.family_variants:
            if v == "full":
                if budget != 1:
                    continue
                run = with_embeddings(base, variant="full")
            else:
                run = with_embeddings(base, variant=v, compression=float(1 / budget))
            nbytes = bytes_of(run, schema)
            ratio = nbytes / (full_bytes * float(budget))
            if ratio > REACH_SLACK:
                rows.append({"variant": v, "budget": str(budget), "reachable": False, "bytes": nbytes,
                             "over_budget": ratio})
                logger.info("families %s @ %s: out of reach (%.2fx the budget)", v, budget, ratio)
                continue
            r = train_seeds(run, f"{v}_{str(budget).replace('/', '_')}", out, s.main_seeds, s.reuse)
            r.update(variant=v, budget=str(budget), reachable=True, bytes_ratio=r["bytes"] / full_bytes)
            rows.append(r)
            logger.info("families %s @ %s: test AUC %.4f, %.3f of the full bytes, %.0f s", v, budget, r["test_auc"],
                        r["bytes_ratio"], r["seconds"])
    return {"rows": rows, "baselines": reference_rows_on_test(data_dir, meta, out, s.reuse),
            "full_bytes": full_bytes, "budgets": s.family_budgets, "reach_slack": REACH_SLACK,
            "ceiling_auc": next((r["ceiling_auc"] for r in rows if r.get("ceiling_auc")), None),
            "data": {"path": str(data_dir), "rows": meta.get("rows"), "generate": base["data"].get("generate")},
            "base": base}


def reference_rows_on_test(data_dir: Path, meta: Dict[str, Any], out: Path, reuse: bool = False) -> Dict[str, Any]:
    """The constant and logistic-regression rows on the test split of ``data_dir``
    (:func:`recsys_emb.baselines.baseline_report`), as dicts. Kept in ``out / "baselines.json"`` under the
    data's metadata hash; ``reuse`` reads them back from there for the same data (the regression's ``C``
    search takes minutes on millions of rows)."""
    import json

    from recsys_emb.baselines import baseline_report
    from recsys_emb.training.rundir import data_identity

    identity = data_identity(meta)
    cache = out / "baselines.json"
    try:
        saved = json.loads(cache.read_text()) if reuse else {}
    except (OSError, ValueError):
        saved = {}
    if isinstance(saved, dict) and identity in saved:
        logger.info("reusing the reference rows of %s from %s", data_dir, cache)
        return dict(saved[identity])
    ref = baseline_report(data_dir, splits=("test",))
    rows = {name: res["test"].to_dict() for name, res in ref.items()}
    saved = saved if isinstance(saved, dict) else {}
    saved[identity] = rows
    out.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps(saved, indent=1, default=str))
    tmp.replace(cache)
    return rows
