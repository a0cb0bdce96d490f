"""The runs of the quality benchmark: its settings, the base config, each variant's largest
configuration within a budget, the searched configuration, and training one run."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from recsys_emb.benchmarks.common import size_groups

__all__ = ["VARIANT_ORDER", "AVAZU_VARIANTS", "FAMILY_ROWS", "SEARCH_COMPRESSION", "DEFAULT_INIT_SCALES", "QUICK_OVERRIDES", "QualitySettings",
           "parse_budget", "parse_dcn_rows", "base_dict", "section_base", "with_embeddings", "bytes_of", "variant_runs", "searched_run",
           "train_run", "seeded_runs", "train_seeds"]

logger = logging.getLogger(__name__)

DEFAULT_INIT_SCALES = "0.05,0.1,0.2,0.3,0.5"
SEARCH_COMPRESSION = (1.0, 4.0, 16.0, 64.0, 256.0)
VARIANT_ORDER = ("full", "hashed", "multi_hash", "qr", "mixed", "mixed_field", "unified", "searched")
FAMILY_ROWS = ("full", "hashed", "unified", "robe", "mch", "lowrank", "tt")
"""The families section's rows: full tables (budget 1), the hashing trick, unified, ROBE, TorchRec's managed
collisions (``mch``), low-rank and tensor-train tables; each sized by ``embeddings.compression``."""
AVAZU_VARIANTS = tuple(v for v in VARIANT_ORDER if v != "searched")
"""The avazu section's rows: every fixed variant of the main section (the searched row's Optuna search is left out)."""
QUICK_OVERRIDES = ["data.generate={kind: criteo-like, rows: 20000, scale: 0.001, seed: 0}", "data.batch_size=512",
                   "model.bottom_mlp=[16, 8]", "model.top_mlp=[16]", "embeddings.dim=8", "embeddings.min_rows=64",
                   "train.checkpoint_every=0", "train.max_steps=20"]


@dataclass
class QualitySettings:
    """What the quality benchmark runs (the script's options; the defaults are the full run's).

    Attributes:
        out_dir: work directory (runs, searches, results JSON).
        quick: tiny generated data and short trainings (checks the plumbing only).
        config, overrides: the Criteo-like base config and its ``KEY=VALUE`` overrides (its variant is ignored).
        budgets: comma-separated fractions of the full tables' bytes (main section).
        variants: the rows of the main section, a subset of :data:`VARIANT_ORDER`.
        search_trials, search_steps: the ``searched`` row's Optuna trials and steps per trial.
        movielens_config, movielens_overrides, movielens_compression, movielens: the MovieLens table
            (``movielens=False`` skips it).
        seeds: seeds per form of the qr-ops and mixed-forms sections.
        reuse: read back finished runs of the same fingerprint from ``out_dir`` instead of training them
            again (:func:`train_run`), so an interrupted or extended benchmark trains only what is missing.
        main_seeds: seeds per row of the main section (Criteo-like and MovieLens): each row reports the
            mean and range over ``seed``, ``seed + 1``, ... of the base config.
        mixed_budgets: budgets of the mixed-forms section.
        small_rows: rows of each sample of the small section (comma-separated).
        init_variants, init_scales, init_budget: the init sweep (``init_scales`` None: the default grid,
            or ``0.1`` when quick); ``init_budget`` is also the qr-ops section's budget.
        table_dtypes: the main section's trained models are also scored with their tables stored in these
            (``int8``, ``fp16``; empty: none), without retraining.
        avazu_rows, avazu_config, avazu_overrides: the avazu section's generated rows and its DLRM config;
            avazu_variants, avazu_budgets: its rows (budgets None: ``budgets``).
        family_budgets, family_variants: the families section's budgets and rows (each family at each budget
            it reaches).
        dcn_rows: the rows of the dcn section (DLRM-DCNv2 beside the dot DLRM), comma-separated
            ``variant@budget`` with a fixed variant of :data:`VARIANT_ORDER` (not ``searched``): :func:`parse_dcn_rows`.
    """

    out_dir: str
    quick: bool = False
    config: str = "configs/dlrm_criteo_like_full.yaml"
    overrides: List[str] = field(default_factory=list)
    budgets: str = "1,1/4,1/16,1/64"
    variants: Sequence[str] = VARIANT_ORDER
    search_trials: int = 10
    search_steps: int = 150
    movielens_config: str = "configs/dlrm_movielens.yaml"
    movielens_overrides: List[str] = field(default_factory=list)
    movielens_compression: float = 4.0
    movielens: bool = True
    seeds: int = 3
    main_seeds: int = 3
    reuse: bool = False
    mixed_budgets: str = "1/2,1/3"
    small_rows: str = "5000,20000,100000"
    init_variants: str = "full,hashed,unified"
    init_scales: Optional[str] = None
    init_budget: str = "1/4"
    table_dtypes: Sequence[str] = ("int8", "fp16")
    avazu_rows: int = 200_000
    avazu_config: str = "configs/dlrm.yaml"
    avazu_overrides: List[str] = field(default_factory=list)
    avazu_variants: Sequence[str] = AVAZU_VARIANTS
    avazu_budgets: Optional[str] = None
    dcn_rows: str = "full@1,hashed@1,unified@1,full@1/16,hashed@1/16,unified@1/16"
    family_budgets: str = "1,1/4,1/16,1/64,1/256,1/1024"
    family_variants: Sequence[str] = FAMILY_ROWS


def parse_budget(text: str) -> Fraction:
    """A budget as a fraction in (0, 1].

    Example:
        >>> parse_budget("1/16")
        Fraction(1, 16)
    """
    f = Fraction(text)
    if not 0 < f <= 1:
        raise ValueError(f"--budgets: {text!r} must lie in (0, 1]")
    return f


def parse_dcn_rows(text: str) -> List[Tuple[str, Fraction]]:
    """``"full@1,hashed@1/16"`` -> ``[("full", 1), ("hashed", 1/16)]``: the dcn section's (variant, budget) rows.

    Example:
        >>> parse_dcn_rows("full@1,unified@1/16")
        [('full', Fraction(1, 1)), ('unified', Fraction(1, 16))]
    """
    fixed = [v for v in VARIANT_ORDER if v != "searched"]
    rows = []
    for item in [x for x in text.split(",") if x]:
        variant, _, budget = item.partition("@")
        if variant not in fixed or not budget:
            raise ValueError(f"--dcn-rows: {item!r} must be VARIANT@BUDGET with a variant of {fixed} (e.g. hashed@1/16)")
        try:
            rows.append((variant, parse_budget(budget)))
        except ValueError as e:
            raise ValueError(f"--dcn-rows: {item!r}: {e}".replace("--budgets: ", "")) from None
    if not rows:
        raise ValueError("--dcn-rows: give at least one VARIANT@BUDGET (e.g. hashed@1/16)")
    return rows


def base_dict(config: str, overrides: Sequence[str]) -> Dict[str, Any]:
    """``config`` with ``overrides`` as a run dict, without periodic checkpoints, logging or progress. The
    config's ``eval_every`` stays: with early stopping it decides which model the run reports."""
    from recsys_emb.config import config_to_dict, load_config

    d = config_to_dict(load_config(config, list(overrides)))
    d["train"].update(checkpoint_every=0, progress=False, log_every=0)
    return d


def section_base(s: QualitySettings) -> Dict[str, Any]:
    """The Criteo-like base config of the runs (``config``, ``overrides``, and when quick the tiny data)."""
    out = Path(s.out_dir)
    overrides = list(s.overrides) + (QUICK_OVERRIDES + [f"data.path={out / 'criteo-like-quick'}"] if s.quick else [])
    return base_dict(s.config, overrides)


def bytes_of(run: Dict[str, Any], schema: Any) -> int:
    """Embedding bytes of a run dict's features on ``schema``."""
    from recsys_emb.config import config_from_dict
    from recsys_emb.memory import memory_from_specs
    from recsys_emb.training import build_features

    specs, _ = build_features(config_from_dict(run), schema)
    return int(memory_from_specs(specs).bytes)


def with_embeddings(base: Dict[str, Any], **emb: Any) -> Dict[str, Any]:
    """A copy of the run dict ``base`` with its ``embeddings`` section updated by ``emb`` (a family's option,
    e.g. ``qr_op``, goes into ``embeddings.options``)."""
    from recsys_emb.families import option_defaults

    run = copy.deepcopy(base)
    options = option_defaults()
    for key, value in emb.items():
        if key in options:
            run["embeddings"].setdefault("options", {})[key] = value
        else:
            run["embeddings"][key] = value
    return run


def variant_runs(base: Dict[str, Any], schema: Any, budget: Fraction, full_bytes: int) -> Dict[str, Optional[Dict[str, Any]]]:
    """The run dict of each fixed variant at ``budget`` (None: the variant cannot get within it)."""
    dim = int(base["embeddings"]["dim"])
    share = float(budget)
    out: Dict[str, Optional[Dict[str, Any]]] = {}
    full_dim = int(dim * share) // 4 * 4
    out["full"] = with_embeddings(base, variant="full", dim=full_dim) if full_dim >= 4 and full_dim * budget.denominator \
        == dim * budget.numerator else None
    for v in ("hashed", "multi_hash", "qr", "unified"):
        # qr: the paper's mult op (the preset default is concat; the qr-ops section compares them)
        out[v] = with_embeddings(base, variant=v, compression=float(1 / budget), **({"qr_op": "mult"} if v == "qr" else {}))
    # mixed dimension, 4 frequency blocks per field and field-level (one table per field, DLRM's
    # md_solver dims): the smallest alpha within the budget (bytes fall as alpha grows)
    cap = full_bytes * share * 1.02
    for name, blocks in (("mixed", 4), ("mixed_field", 1)):
        def mixed(alpha: float, blocks: int = blocks) -> Dict[str, Any]:
            return with_embeddings(base, variant="mixed", alpha=round(alpha, 4), num_blocks=blocks)

        if bytes_of(mixed(0.0), schema) <= cap:
            out[name] = mixed(0.0)
        elif bytes_of(mixed(2.0), schema) > cap:
            out[name] = None
        else:
            lo, hi = 0.0, 2.0
            for _ in range(14):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if bytes_of(mixed(mid), schema) <= cap else (mid, hi)
            out[name] = mixed(hi)
    return out


def searched_run(base: Dict[str, Any], vocab: Dict[str, int], budget_bytes: int, smallest_bytes: int, work: Path,
                 trials: int, steps: int, reuse: bool = False) -> Optional[Dict[str, Any]]:
    """Search dims + variant per vocabulary group under ``budget_bytes``; the best trial's run dict.
    ``reuse``: the result of an earlier search in ``work`` with the same specification, if there is one."""
    from recsys_emb.config import config_to_dict
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
    result = work / "searched.json"
    if reuse and result.exists():
        saved = json.loads(result.read_text())
        if saved.get("spec") == _plain(spec) and saved.get("base") == _plain(base):
            logger.info("reusing the search in %s", work)
            run_or_none: Optional[Dict[str, Any]] = saved["run"]
            return run_or_none
    shutil.rmtree(work / "runs", ignore_errors=True)  # trials of an earlier, interrupted search of this work dir
    (work / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scfg = load_search_config(work / "search.yaml")
    study = search(scfg)
    best = best_trial(study, scfg)
    final = study.user_attrs.get("final")  # the top trials retrained (retrain_top): the winner on valid AUC
    if final is not None:
        best = study.trials[int(final["trial"])]
    run = None
    if best is not None:
        run = config_to_dict(trial_run_config(scfg, best.user_attrs["embeddings"], run_dict=copy.deepcopy(base)))
        run["train"] = copy.deepcopy(base["train"])  # the full training budget, not the trial's
    result.write_text(json.dumps({"spec": spec, "base": base, "run": run}, default=str))
    return run


def train_run(run: Dict[str, Any], name: str, out: Path, reuse: bool = False) -> Dict[str, Any]:
    """Train the run dict as ``name`` under ``out``; its test and valid metrics, bytes, speed and embeddings.

    ``reuse``: a finished run already in ``out / name`` whose recorded fingerprint (config, dataset,
    library version: :func:`recsys_emb.training.rundir.run_fingerprint`) equals this one's is read back
    instead of trained again; any difference trains it anew."""
    from recsys_emb.config import config_from_dict
    from recsys_emb.data.parquet import read_metadata
    from recsys_emb.training import prepare_data, train
    from recsys_emb.training.rundir import run_fingerprint

    run = copy.deepcopy(run)
    run["name"] = name
    run["train"]["out_dir"] = str(out / name)
    cfg = config_from_dict(run)
    t0 = time.perf_counter()
    s = _finished(out / name, run_fingerprint(cfg, read_metadata(prepare_data(cfg)))) if reuse else None
    if s is not None:
        logger.info("%s: reusing the finished run in %s", name, out / name)
    else:
        s = train(cfg, overwrite=True)  # a rerun replaces its own earlier runs
        s["seconds"] = time.perf_counter() - t0
        (out / f"{name}.seconds.json").write_text(json.dumps(s["seconds"]))
    return {"name": name, "test_auc": s["test"]["auc"], "test_logloss": s["test"]["logloss"],
            "valid_auc": s["valid"]["auc"], "params": s["embedding_params"], "bytes": s["embedding_bytes"],
            "dense_params": s.get("dense_params"),
            "ceiling_auc": s["test"].get("ceiling_auc"), "ceiling_logloss": s["test"].get("ceiling_logloss"),
            "samples_per_s": s.get("samples_per_s"), "seconds": s.get("seconds", 0.0),
            "embeddings": run["embeddings"]}


def _finished(run_dir: Path, fingerprint: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The summary of a finished run in ``run_dir`` with this fingerprint (one of an earlier version read in
    today's keys: :func:`~recsys_emb.training.rundir.fingerprint_differences`), else None."""
    from recsys_emb.training.rundir import fingerprint_differences

    try:
        recorded = json.loads((run_dir / "run.json").read_text())["fingerprint"]
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["seconds"] = float(json.loads(run_dir.with_name(run_dir.name + ".seconds.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary if not fingerprint_differences(recorded, _plain(fingerprint)) else None


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists, other objects as strings)."""
    return json.loads(json.dumps(value, default=str))


def seeded_runs(forms: Sequence[Tuple[str, Dict[str, Any], Dict[str, Any]]], seeds: Sequence[int], out: Path,
                tag: str) -> List[Dict[str, Any]]:
    """Train every ``(name, run dict, fields to record)`` form once per seed."""
    rows = []
    for name, run, fields in forms:
        for seed in seeds:
            seeded = copy.deepcopy(run)
            seeded["seed"] = seed
            r = train_run(seeded, f"{tag}_{name}_seed{seed}", out)
            r.update(form=name, seed=seed, **fields)
            rows.append(r)
            logger.info("%s %s seed %s: test AUC %.4f", tag, name, seed, r["test_auc"])
    return rows


def train_seeds(run: Dict[str, Any], name: str, out: Path, n_seeds: int, reuse: bool = False) -> Dict[str, Any]:
    """Train the run dict with ``n_seeds`` seeds (its own ``seed`` and the next ones); one row of means.

    The row has :func:`train_run`'s keys with test AUC and log loss averaged over the seeds, plus
    ``seeds``, ``seed_test_auc`` / ``seed_test_logloss`` (per seed, in order: comparisons between rows
    pair runs of the same seed) and ``seconds`` summed over the runs.
    """
    first = int(run.get("seed", 0))
    seeds = list(range(first, first + max(1, n_seeds)))
    runs = []
    for seed in seeds:
        seeded = copy.deepcopy(run)
        seeded["seed"] = seed
        runs.append(train_run(seeded, f"{name}_seed{seed}", out, reuse))  # a later run with more seeds reuses it
    row = dict(runs[0])
    for key in ("test_auc", "test_logloss", "valid_auc"):
        row[key] = sum(r[key] for r in runs) / len(runs)
    row.update(seeds=seeds, seed_test_auc=[r["test_auc"] for r in runs],
               seed_test_logloss=[r["test_logloss"] for r in runs], seconds=sum(r["seconds"] for r in runs),
               samples_per_s=sum(r["samples_per_s"] or 0.0 for r in runs) / len(runs))
    return row
