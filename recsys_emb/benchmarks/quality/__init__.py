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

Every trained model of the main table is also scored on the test split with its tables stored in int8
(row-wise) and fp16 through :mod:`recsys_emb.inference`, without retraining (``--table-dtypes``; '' for none):
the bytes as stored and the test AUC delta against fp32 tables, as columns of the main table.

Sections beside the main table (``--section``, each its own block in the README): ``init`` (the
initialisation scale), ``qr-ops`` (QR's three ops at equal bytes, over seeds) and ``mixed-forms``
(mixed dimension's 4-block and field-level forms at equal bytes, over seeds): the evidence behind the
preset defaults (QR ``concat``, field-level mixed dimension); and ``avazu``: every fixed variant at every
budget, the constant and logistic-regression rows, on Avazu-shaped synthetic data read through the example
schema (``configs/schemas/avazu.yaml``) with ``configs/dlrm.yaml`` at its defaults; ``dcn``: DLRM-DCNv2
beside the dot DLRM with the same embeddings (``--dcn-rows``; full, hashed, unified at 1 and 1/16 by
default), over the main section's seeds; ``small`` (DLRM at the defaults against the logistic regression
on samples of 5,000 to 100,000 rows: :mod:`~recsys_emb.benchmarks.quality.small`); ``families`` (every
compression family, ROBE, TorchRec's managed collisions, low-rank and tensor-train tables beside the
hashing trick and unified, at every budget from 1 to 1/1024 it reaches, with the constant and
logistic-regression rows and a plot of its own).

    .venv/bin/python bench/quality.py            # every section, 3 seeds a row: hours on 2 CPU cores
    .venv/bin/python bench/quality.py --quick    # CI-sized (tiny data), checks the plumbing only

The package: :mod:`~recsys_emb.benchmarks.quality.runs` (settings, each variant's configuration within a
budget, training one run), :mod:`~recsys_emb.benchmarks.quality.sections` (the trainings of each
section), :mod:`~recsys_emb.benchmarks.quality.storage` (scoring a trained model with compressed tables)
and :mod:`~recsys_emb.benchmarks.quality.report` (the tables, the claims, the plot).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from recsys_emb.benchmarks.common import REPO, command_line, write_section
from recsys_emb.benchmarks.quality.report import (avazu_report, dcn_report, families_plot, families_report, init_report,
                                                  mixed_forms_report, movielens_report, plot, qr_ops_report, report)
from recsys_emb.benchmarks.quality.runs import (DEFAULT_INIT_SCALES, FAMILY_ROWS, VARIANT_ORDER, QualitySettings,
                                                parse_budget, parse_dcn_rows)
from recsys_emb.benchmarks.quality.sections import (run_avazu, run_criteo, run_dcn, run_families, run_init_sweep,
                                                    run_mixed_forms, run_movielens, run_qr_ops)
from recsys_emb.benchmarks.quality.small import SMALL_ROWS, run_small, small_report
from recsys_emb.benchmarks.quality.storage import STORAGE_DTYPES, parse_table_dtypes

__all__ = ["QualitySettings", "SECTIONS", "VARIANT_ORDER", "run", "main"]

SectionRunner = Callable[[QualitySettings], Dict[str, Any]]
SectionReport = Callable[[Dict[str, Any], str], str]

SECTIONS: Tuple[Tuple[str, SectionRunner, SectionReport, str, str], ...] = (
    ("init", run_init_sweep, init_report, "quality-init", "## Initialisation scale, per variant"),
    ("qr-ops", run_qr_ops, qr_ops_report, "quality-qr-ops", "## Quotient-remainder: which op, at equal bytes"),
    ("mixed-forms", run_mixed_forms, mixed_forms_report, "quality-mixed-forms",
     "## Mixed dimension: frequency blocks or one table per field, at equal bytes"),
    ("avazu", run_avazu, avazu_report, "quality-avazu",
     "## Avazu-shaped data through a schema: every variant and the reference rows"),
    ("dcn", run_dcn, dcn_report, "quality-dcn", "## DLRM-DCNv2 beside DLRM, with the same embeddings"),
    ("small", run_small, small_report, "quality-small", "## Small data: DLRM against logistic regression"),
    ("families", run_families, families_report, "quality-families",
     "## Every compression family at every budget it reaches"),
)
"""The sections beside the main table: (name, trainings, report, README marker, title if the block is new)."""


def run(settings: QualitySettings, section: str = "all", readme: Optional[Path] = None,
        command: str = ".venv/bin/python bench/quality.py") -> Dict[str, str]:
    """Run ``section`` (``main``, ``movielens``, ``init``, ``qr-ops``, ``mixed-forms``, ``avazu``, ``dcn``, ``small``,
    ``families`` or ``all``); returns each section's
    Markdown by name, in order. As each section ends, its results go to ``<out_dir>/<name>_results.json``
    (``results.json`` for main) and, unless ``readme`` is None, its block into ``readme`` (the main
    section's plot beside it). ``command`` is written under every table."""
    out = Path(settings.out_dir)
    texts: Dict[str, str] = {}
    for name, run_section, report_section, marker, title in SECTIONS:
        if section not in (name, "all"):
            continue
        section_res = run_section(settings)
        if name == "families":  # its own plot, beside the README
            png = "quality_families_quick.png" if settings.quick else "quality_families.png"
            families_plot(section_res, (readme.parent if readme is not None else out) / png)
            texts[name] = families_report(section_res, command, png)
        else:
            texts[name] = report_section(section_res, command)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name.replace('-', '_')}_results.json").write_text(json.dumps(section_res, indent=1, default=str))
        if readme is not None:
            write_section(readme, marker, texts[name], title)
    if section == "movielens":  # the MovieLens table alone, printed (the README block is the main section's)
        alone = run_movielens(settings)
        out.mkdir(parents=True, exist_ok=True)
        (out / "movielens_results.json").write_text(json.dumps(alone, indent=1, default=str))
        texts["movielens"] = movielens_report(alone, command)
        return texts
    if section not in ("main", "all"):
        return texts
    res = run_criteo(settings)
    ml = run_movielens(settings) if settings.movielens else None
    plot_dir = readme.parent if readme is not None else out
    plot_path = plot_dir / ("quality_quick.png" if settings.quick else "quality.png")
    plot(res, plot_path)
    texts["main"] = report(res, ml, command, plot_path.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"criteo": res, "movielens": ml}, indent=1, default=str))
    if readme is not None:
        write_section(readme, "quality", texts["main"], "## Quality against memory, every variant")
    return texts


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse the script's arguments and :func:`run`; returns the tables (the caller prints them)."""
    default = QualitySettings(out_dir="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny generated data, few steps, 2 search trials")
    p.add_argument("--config", default=default.config, help="base DLRM config (its variant is ignored)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of the base config")
    p.add_argument("--budgets", default=default.budgets, help="comma-separated fractions of the full bytes")
    p.add_argument("--variants", default=",".join(VARIANT_ORDER), help="comma-separated subset of " + ",".join(VARIANT_ORDER))
    p.add_argument("--search-trials", type=int, default=None, help=f"default {default.search_trials} (quick: 2)")
    p.add_argument("--search-steps", type=int, default=None, help=f"default {default.search_steps} (quick: 10)")
    p.add_argument("--movielens-config", default=default.movielens_config)
    p.add_argument("--movielens-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--movielens-compression", type=float, default=default.movielens_compression)
    p.add_argument("--no-movielens", action="store_true")
    p.add_argument("--section", default="all", choices=["all", "main", "movielens", "init", "qr-ops", "mixed-forms", "avazu",
                                                        "dcn", "small", "families"],
                   help="main: the budget table (Criteo-like and MovieLens); movielens: the MovieLens table alone, printed; init: the initialisation-scale sweep; qr-ops: QR's combining "
                        "ops at equal bytes; mixed-forms: mixed dimension's block and field-level forms at equal "
                        "bytes; avazu: every variant and the reference rows on Avazu-shaped data through a schema; "
                        "dcn: DLRM-DCNv2 beside the dot DLRM; small: DLRM at the defaults against logistic regression "
                        "on small samples; families: every compression family at every budget it reaches; all: every "
                        "section")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds per row of the main and dcn sections (default {default.main_seeds}; quick: 1)")
    p.add_argument("--reuse-runs", action="store_true",
                   help="read back finished runs of the same config and data from the work directory instead of "
                        "training them again (main and dcn sections)")
    p.add_argument("--qr-seeds", type=int, default=None,
                   help="seeds per form of the qr-ops and mixed-forms sections (default 3; quick: 1)")
    p.add_argument("--mixed-budgets", default=None, help="budgets of the mixed-forms section (default 1/2,1/3; quick: "
                                                        "3/4). The field-level form reaches down to about 0.26 at dim 16")
    p.add_argument("--small-rows", default=None, help=f"rows of each sample of the small section (default {SMALL_ROWS}; "
                                                      "quick: 3000)")
    p.add_argument("--init-variants", default=default.init_variants, help="variants of the init sweep")
    p.add_argument("--init-scales", default=None, help=f"uniform bounds of the init sweep (default {DEFAULT_INIT_SCALES})")
    p.add_argument("--init-budget", default=default.init_budget, help="budget of the init sweep (full tables always at 1) "
                                                                      "and of the qr-ops section")
    p.add_argument("--table-dtypes", default=",".join(STORAGE_DTYPES),
                   help="score each trained model of the main section with its tables stored in these too (no "
                        "retraining): comma-separated subset of " + ",".join(STORAGE_DTYPES) + "; '' for none")
    p.add_argument("--avazu-rows", type=int, default=None,
                   help=f"generated rows of the avazu section (default {default.avazu_rows:,}; quick: 20,000)")
    p.add_argument("--avazu-config", default=default.avazu_config, help="DLRM config of the avazu section")
    p.add_argument("--avazu-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the avazu section's config")
    p.add_argument("--dcn-rows", default=None, help="rows of the dcn section, comma-separated VARIANT@BUDGET "
                                                    f"(default {default.dcn_rows}; quick: hashed@1/16)")
    p.add_argument("--family-budgets", default=None,
                   help=f"budgets of the families section (default {default.family_budgets}; quick: 1/4)")
    p.add_argument("--family-variants", default=",".join(FAMILY_ROWS),
                   help="rows of the families section, comma-separated subset of " + ",".join(FAMILY_ROWS))
    p.add_argument("--out-dir", default=None, help="work directory (default bench/out/quality[_quick])")
    p.add_argument("--readme", default=str(REPO / "models" / "dlrm" / "README.md"))
    p.add_argument("--no-readme", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANT_ORDER]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {list(VARIANT_ORDER)}")
    family_variants = [v for v in args.family_variants.split(",") if v]
    bad = [v for v in family_variants if v not in FAMILY_ROWS]
    if bad or not family_variants:
        p.error(f"--family-variants: {f'unknown {bad}' if bad else 'empty'}; choose from {list(FAMILY_ROWS)}")
    q = args.quick
    family_budgets = args.family_budgets or ("1/4" if q else default.family_budgets)
    try:
        for b in family_budgets.split(","):
            parse_budget(b)
    except ValueError as e:
        p.error(str(e).replace("--budgets", "--family-budgets"))
    try:
        table_dtypes = parse_table_dtypes(args.table_dtypes)
    except ValueError as e:
        p.error(str(e))
    dcn_rows = args.dcn_rows or ("hashed@1/16" if q else default.dcn_rows)
    try:
        parse_dcn_rows(dcn_rows)
    except ValueError as e:
        p.error(str(e))
    settings = QualitySettings(
        out_dir=args.out_dir or str(REPO / "bench" / "out" / ("quality_quick" if q else "quality")), quick=q,
        config=args.config, overrides=list(args.set), budgets=args.budgets, variants=variants,
        search_trials=args.search_trials or (2 if q else default.search_trials),
        search_steps=args.search_steps or (10 if q else default.search_steps),
        movielens_config=args.movielens_config,
        movielens_overrides=(["data.batch_size=256"] if q else []) + list(args.movielens_set),
        movielens_compression=args.movielens_compression, movielens=not args.no_movielens,
        seeds=args.qr_seeds or (1 if q else default.seeds),
        main_seeds=args.seeds or (1 if q else default.main_seeds), reuse=args.reuse_runs,
        mixed_budgets=args.mixed_budgets or ("3/4" if q else default.mixed_budgets),
        small_rows=args.small_rows or ("3000" if q else SMALL_ROWS),
        init_variants=args.init_variants, init_scales=args.init_scales, init_budget=args.init_budget,
        table_dtypes=table_dtypes, avazu_rows=args.avazu_rows or (20_000 if q else default.avazu_rows),
        avazu_config=args.avazu_config, avazu_overrides=list(args.avazu_set),
        avazu_variants=("full", "hashed") if q else default.avazu_variants, avazu_budgets="1,1/4" if q else None,
        dcn_rows=dcn_rows, family_budgets=family_budgets, family_variants=tuple(family_variants))
    texts = run(settings, args.section, None if args.no_readme else Path(args.readme),
                command_line("bench/quality.py", argv))
    return "\n".join(texts.values())
