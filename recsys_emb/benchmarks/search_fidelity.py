"""How well a short trial ranks embedding configurations: the fidelity of the per-trial search.

The quality benchmark's ``searched`` row (:func:`recsys_emb.benchmarks.quality.runs.searched_run`) picks the
best of short trials (150 steps, validated at 75 and 150) and then trains that configuration for the full
recipe (one epoch). This study samples ``n_trials`` configurations of the same space under the same budget
(Optuna's random sampler through :func:`recsys_emb.search.search`, no pruning) and trains each for the full
epoch, validating every ``eval_every`` steps. With a constant learning rate (the base config's) a trial of
``k`` steps is the first ``k`` steps of the full run, so the valid AUC at step ``k`` is what a trial of that
length would report; the study checks this on one configuration by training it again for ``check_steps``
steps alone. Per trial length it reports the Spearman rank correlation of the valid AUC at that length with
the full run's valid AUC, which configuration a search of that length would pick and how far that pick's
full-run AUC falls below the best one, and the budget each configuration uses.

Writes docs/search.md between ``<!-- search-fidelity:begin -->`` and ``<!-- search-fidelity:end -->``.

    .venv/bin/python bench/search_fidelity.py            # 6 full-epoch trainings
    .venv/bin/python bench/search_fidelity.py --quick    # tiny data, checks the plumbing only
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from recsys_emb.benchmarks.common import REPO, command_line, format_mb, size_groups, write_section

__all__ = ["SPACE_BUDGETS", "FidelitySettings", "spearman", "space_budget_use", "run", "report", "space_report", "main"]

SPACE_BUDGETS = ("1/4", "1/16", "1/64")
"""The budgets of the quality benchmark's searched rows, at which the space's budget use is measured."""

logger = logging.getLogger(__name__)


@dataclass
class FidelitySettings:
    """What the study runs (the script's options).

    Attributes:
        out_dir: work directory (data when quick, the study, the trial runs, results.json).
        quick: tiny generated data and a few steps (checks the plumbing only).
        budget: the budget as a fraction of the full tables' bytes (the quality benchmark's 1/16 by default).
        n_trials: configurations sampled and trained for the full epoch.
        eval_every: steps between validations of each full run (the trial lengths compared).
        check_steps: the quality benchmark's trial length, trained once alone to check the prefix premise.
        seed: the random sampler's seed.
        space_draws: points of the space drawn (nothing trained) to measure how much of each budget they use.
        space_only: draw the space's points only; train nothing.
        fill: also measure the draws scaled to each budget (the search's ``fill_budget``).
    """

    out_dir: str
    quick: bool = False
    budget: str = "1/16"
    n_trials: int = 6
    eval_every: int = 50
    check_steps: int = 150
    seed: int = 0
    space_draws: int = 400
    space_only: bool = False
    fill: bool = False


def _ranks(xs: Sequence[float]) -> List[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (ties: mean ranks); nan when either is
    constant or shorter than 2.

    Example:
        >>> spearman([0.1, 0.2, 0.3], [1, 3, 2]), spearman([1, 2, 3], [3, 2, 1])
        (0.5, -1.0)
    """
    if len(xs) != len(ys):
        raise ValueError(f"spearman: {len(xs)} values against {len(ys)}")
    if len(xs) < 2:
        return float("nan")
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return float("nan")
    return float(cov / (vx * vy) ** 0.5)


def _config_text(params: Dict[str, Any]) -> str:
    """A trial's sampled parameters per group: ``group dN`` or ``group dN hashed 1/C`` (fields under the base
    config's ``min_rows`` ids stay full tables whatever their group's variant).

    Example:
        >>> _config_text({"dim:a": 8, "variant:a": "full", "compression:a": 4.0, "dim:b": 4, "variant:b": "hashed",
        ...               "compression:b": 16.0})
        'a d8, b d4 hashed 1/16'
    """
    parts = []
    for key in sorted(k for k in params if k.startswith("dim:")):
        g = key[4:]
        hashed = params.get(f"variant:{g}") == "hashed"
        parts.append(f"{g} d{params[key]}" + (f" hashed 1/{params[f'compression:{g}']:g}" if hashed else ""))
    return ", ".join(parts)


def space_budget_use(scfg: Any, base: Dict[str, Any], schema: Any, full_bytes: int, budgets: Sequence[str],
                     n: int, seed: int = 0, fill: bool = False) -> Dict[str, Any]:
    """Draw ``n`` points of the search space ``scfg.space`` at random (Optuna's random sampler, nothing trained)
    and count their embedding bytes: per budget (a fraction of ``full_bytes``), the share of points within it
    and how much of it those points use; with ``fill``, the same for the points scaled to each budget by
    :func:`recsys_emb.search.space.fill_budget` (what the search trains). Returns
    ``{"bytes": [...], "budgets": {budget: {...}}}``."""
    import optuna

    from recsys_emb.benchmarks.quality.runs import bytes_of, parse_budget
    from recsys_emb.config import config_to_dict
    from recsys_emb.search import trial_run_config
    from recsys_emb.search.space import field_groups, fill_budget, trial_choices

    fields = [*schema.sparse, *schema.jagged]
    groups = field_groups(scfg.space, fields)
    cards = {k: int(schema.vocab_sizes[k]) for k in fields}
    caps = {b: int(full_bytes * float(parse_budget(b))) for b in budgets}

    def measure(choices: Dict[str, Any]) -> int:
        return bytes_of(config_to_dict(trial_run_config(scfg, choices, run_dict=copy.deepcopy(base))), schema)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    sizes = []
    filled: Dict[str, List[int]] = {b: [] for b in budgets}
    for _ in range(n):
        trial = study.ask()
        sizes.append(measure(trial_choices(trial, scfg.space, groups, cards, copy.deepcopy(base))))
        if fill:
            for b, cap in caps.items():
                filled[b].append(fill_budget(trial, scfg.space, groups, cards, copy.deepcopy(base), measure, cap)[1])
        study.tell(trial, 0.0)

    def use(xs: Sequence[int], cap: int) -> Dict[str, Any]:
        inside = sorted(x / cap for x in xs if x <= cap)
        return {"within": len(inside), "max_use": inside[-1] if inside else None,
                "median_use": inside[len(inside) // 2] if inside else None,
                "min_use": inside[0] if inside else None}

    out = {b: use(sizes, cap) for b, cap in caps.items()}
    if fill:
        for b, cap in caps.items():
            out[b]["filled"] = use(filled[b], cap)
    return {"bytes": sizes, "budgets": out, "n": n, "seed": seed, "fill": fill}


def run(s: FidelitySettings) -> Dict[str, Any]:
    """Sample, train and validate the configurations; returns every trial's curve and the check run."""
    from recsys_emb.benchmarks.quality.runs import (SEARCH_COMPRESSION, QualitySettings, bytes_of, parse_budget,
                                                    section_base, with_embeddings)
    from recsys_emb.config import config_from_dict, config_to_dict
    from recsys_emb.data.parquet import read_metadata, schema_from_metadata
    from recsys_emb.search import load_search_config, search, trial_run_config
    from recsys_emb.training import prepare_data, train

    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = section_base(QualitySettings(out_dir=str(out), quick=s.quick))
    base["train"]["eval_every"] = s.eval_every
    schema = schema_from_metadata(read_metadata(prepare_data(config_from_dict(base))))
    vocab = {k: int(v) for k, v in schema.vocab_sizes.items()}
    full_bytes = bytes_of(with_embeddings(base, variant="full"), schema)
    budget_bytes = int(full_bytes * parse_budget(s.budget))
    dim = int(base["embeddings"]["dim"])
    (out / "train.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    db = out / "study.db"
    if db.exists():
        db.unlink()
    # the quality benchmark's space (searched_run), every trial trained for the full recipe, no pruning
    spec = {
        "base_config": "train.yaml", "train_overrides": [f"train.eval_every={s.eval_every}"],
        "study_name": "fidelity", "storage": f"sqlite:///{db}", "out_root": str(out / "runs"),
        "n_trials": s.n_trials, "mode": "single", "budget_bytes": budget_bytes,
        "space": {"dims": sorted({d for d in (4, 8, 12, 16, 24, 32) if d <= 2 * dim}),
                  "groups": size_groups(vocab), "ungrouped": "fixed", "variants": ["full", "hashed"],
                  "compression": list(SEARCH_COMPRESSION)},
        "sampler": "random", "pruner": {"kind": "none"}, "seed": s.seed, "progress": False,
        # random draws as drawn, each trained for the full recipe: no scaling, no uniform trials, no retraining
        "fill_budget": False, "uniform_trials": False, "retrain_top": 0,
        "max_over_budget_trials": 200 * s.n_trials,
    }
    (out / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scfg = load_search_config(out / "search.yaml")
    space = space_budget_use(scfg, base, schema, full_bytes, SPACE_BUDGETS, s.space_draws, s.seed, fill=s.fill)
    common = {"settings": asdict(s), "budget_bytes": budget_bytes, "full_bytes": full_bytes, "space": space,
              "base": base}
    if s.space_only:
        return common
    t0 = time.perf_counter()
    study = search(scfg)
    seconds = time.perf_counter() - t0
    trials, sampled = [], []
    for t in study.trials:
        if "bytes" in t.user_attrs:
            sampled.append(int(t.user_attrs["bytes"]))
        if t.state.name != "COMPLETE":
            continue
        trials.append({"number": t.number, "bytes": int(t.user_attrs["bytes"]), "valid_auc": float(t.value),
                       "test_auc": float(t.user_attrs["test_auc"]), "embeddings": t.user_attrs["embeddings"],
                       "params": dict(t.params),
                       "curve": {str(k): float(v) for k, v in sorted(t.intermediate_values.items())}})
    check = None
    if trials and s.check_steps:
        first = trials[0]
        run_cfg = trial_run_config(scfg, first["embeddings"], run_dict=copy.deepcopy(base),
                                   out_dir=str(out / "check"), name="fidelity-check")
        d = config_to_dict(run_cfg)
        d["train"].update(max_steps=s.check_steps, eval_every=max(1, s.check_steps // 2))
        summary = train(config_from_dict(d), overwrite=True)
        check = {"trial": first["number"], "steps": s.check_steps, "valid_auc": float(summary["valid"]["auc"]),
                 "prefix_auc": first["curve"].get(str(s.check_steps))}
    return {**common, "trials": trials, "sampled_bytes": sampled, "check": check, "seconds": seconds,
            "steps_per_epoch": trial_steps(out, trials[0]["number"]) if trials else 0}


def trial_steps(out: Path, number: int) -> int:
    """The steps trial ``number`` of the study in ``out`` trained (its run's ``summary.json``)."""
    return int(json.loads((out / "runs" / "fidelity" / f"trial_{number}" / "summary.json").read_text())["steps"])


def space_report(res: Dict[str, Any]) -> List[str]:
    """The space's budget use (:func:`space_budget_use`) as Markdown lines: per budget, the share of random
    points within it and how much of it they use."""
    sp = res["space"]
    lines = [f"{sp['n']} points drawn at random (seed {sp['seed']}, nothing trained) from the quality benchmark's "
             "search space (per vocabulary-size group: a dim in {4, ..., 32}, full or hashed, 1/1 to 1/256 of the "
             f"rows), their embedding bytes against each budget (a fraction of the full tables' "
             f"{format_mb(res['full_bytes'])}):", "",
             "| budget | points within it | most of the budget one uses | median use of those within |",
             "|---:|---:|---:|---:|"]
    for b, u in sp["budgets"].items():
        use = f"{u['max_use']:.0%} | {u['median_use']:.0%}" if u["within"] else "|"
        lines.append(f"| {b} | {u['within']} ({u['within'] / sp['n']:.0%}) | {use} |")
    if sp.get("fill"):
        lines += ["", f"The same {sp['n']} points scaled to each budget as the search trains them (`fill_budget: true`, "
                  "the default: dims stepped together then per group, the compressions of the hashed groups scaled by "
                  "one factor):", "",
                  "| budget | points within it | least use | median use |", "|---:|---:|---:|---:|"]
        for b, u in sp["budgets"].items():
            f = u["filled"]
            use = f"{f['min_use']:.1%} | {f['median_use']:.1%}" if f["within"] else "|"
            lines.append(f"| {b} | {f['within']} ({f['within'] / sp['n']:.0%}) | {use} |")
    return lines


def report(res: Dict[str, Any], command: str) -> str:
    """The study as Markdown: per trial length, the rank correlation with the full run, the pick and its
    shortfall; the configurations with their budget use; the prefix check; ``command`` under it."""
    if "trials" not in res:  # --space-only
        return "\n".join([*space_report(res), "", f"Hardware: {platform.machine()}, CPU only.", "",
                          f"Command: `{command}`"])
    trials = res["trials"]
    budget = res["budget_bytes"]
    s = res["settings"]
    full = [t["valid_auc"] for t in trials]
    best_full = max(full) if full else float("nan")
    epoch = res["steps_per_epoch"]
    # each trial's valid AUC by step; the full run's own validation (after its last step) ends every curve
    curves = [{int(k): v for k, v in {**t["curve"], str(epoch): t["valid_auc"]}.items()} for t in trials]
    steps = sorted(k for k in set().union(*curves) if all(k in c for c in curves)) if curves else []
    b = res["base"]
    lines = [f"{len(trials)} configurations drawn at random (seed {s['seed']}) from the quality benchmark's search space "
             f"(one dim and full / hashed per vocabulary-size group) within {s['budget']} of the full tables' "
             f"{format_mb(res['full_bytes'])} ({format_mb(budget)}), each trained for the full recipe (DLRM dot, "
             f"batch {b['data']['batch_size']}, {epoch} steps, one epoch, seed {b['seed']}) with the valid AUC every "
             f"{s['eval_every']} steps. A trial of `k` steps is the first `k` steps of that run (constant learning "
             "rate), so each column below is what a search with trials of that length would see.", "",
             "| trial length (steps) | share of the epoch | Spearman ρ with the full run | picked trial | its full-run "
             "valid AUC | shortfall to the best |", "|---:|---:|---:|---:|---:|---:|"]
    for k in steps:
        at = [c[k] for c in curves]
        pick = max(range(len(trials)), key=lambda i: at[i])
        lines.append(f"| {k} | {k / epoch:.0%} | {spearman(at, full):+.2f} | #{trials[pick]['number']} | "
                     f"{full[pick]:.4f} | {full[pick] - best_full:+.4f} |")
    lines += ["", "| trial | embeddings (per vocabulary-size group) | bytes | budget used | valid AUC at "
              f"{s['check_steps']} steps | full-run valid AUC | full-run test AUC |", "|---:|---|---:|---:|---:|---:|---:|"]
    for t in sorted(trials, key=lambda t: -t["valid_auc"]):
        lines.append(f"| #{t['number']} | {_config_text(t['params'])} | {format_mb(t['bytes'])} | "
                     f"{t['bytes'] / budget:.0%} | {t['curve'].get(str(s['check_steps']), float('nan')):.4f} | "
                     f"{t['valid_auc']:.4f} | {t['test_auc']:.4f} |")
    sampled = res["sampled_bytes"]
    inside = sorted(x / budget for x in sampled if x <= budget)
    notes = []
    if sampled:
        notes.append(f"- Budget use: of {len(sampled)} random points of the space, {len(inside)} "
                     f"({len(inside) / len(sampled):.0%}) are within the budget; those use "
                     f"{inside[0]:.0%} to {inside[-1]:.0%} of it (median {inside[len(inside) // 2]:.0%}).")
    if trials:
        cor = {k: spearman([c[k] for c in curves], full) for k in steps}
        notes.append(f"- The full run's best configuration is #{trials[full.index(best_full)]['number']} "
                     f"({best_full:.4f}); ρ at {s['check_steps']} steps (the quality benchmark's trial length): "
                     f"{cor.get(s['check_steps'], float('nan')):+.2f}.")
    c = res.get("check")
    if c and c["prefix_auc"] is not None:
        notes.append(f"- Prefix check: configuration #{c['trial']} trained alone for {c['steps']} steps scores valid AUC "
                     f"{c['valid_auc']:.4f}; its full run at step {c['steps']}: {c['prefix_auc']:.4f} "
                     f"(difference {c['valid_auc'] - c['prefix_auc']:+.4f}).")
    lines += ["", *notes, "", *space_report(res), "", f"Hardware: {platform.machine()}, CPU only; {res['seconds'] / 60:.1f} min for the "
              f"search ({len(trials)} full-epoch trainings and the draws over budget, which train nothing).", "",
              f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse the script's arguments, :func:`run` and write the report into ``--doc``; returns the report."""
    default = FidelitySettings(out_dir="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny generated data, 20 steps, 3 trials")
    p.add_argument("--budget", default=default.budget, help="fraction of the full tables' bytes")
    p.add_argument("--n-trials", type=int, default=None, help=f"configurations (default {default.n_trials}; quick: 3)")
    p.add_argument("--eval-every", type=int, default=None, help=f"default {default.eval_every} (quick: 5)")
    p.add_argument("--check-steps", type=int, default=None, help=f"default {default.check_steps} (quick: 10)")
    p.add_argument("--seed", type=int, default=default.seed)
    p.add_argument("--space-draws", type=int, default=None,
                   help=f"points of the space drawn for the budget use (default {default.space_draws}; quick: 50)")
    p.add_argument("--space-only", action="store_true", help="only the space's budget use: draw points, train nothing")
    p.add_argument("--fill", action="store_true", help="also the draws scaled to each budget (the search's fill_budget)")
    p.add_argument("--out-dir", default=None, help="work directory (default bench/out/search_fidelity[_quick])")
    p.add_argument("--doc", default=str(REPO / "docs" / "search.md"))
    p.add_argument("--no-doc", action="store_true", help="print the report only")
    args = p.parse_args(argv)
    q = args.quick
    try:
        from recsys_emb.benchmarks.quality.runs import parse_budget

        parse_budget(args.budget)
    except ValueError as e:
        p.error(f"--budget: {e}".replace("--budgets: ", ""))
    s = FidelitySettings(out_dir=args.out_dir or str(REPO / "bench" / "out" / ("search_fidelity_quick" if q else
                                                                               "search_fidelity")),
                         quick=q, budget=args.budget, n_trials=args.n_trials or (3 if q else default.n_trials),
                         eval_every=args.eval_every or (5 if q else default.eval_every),
                         check_steps=args.check_steps or (10 if q else default.check_steps), seed=args.seed,
                         space_draws=args.space_draws or (50 if q else default.space_draws), space_only=args.space_only,
                         fill=args.fill)
    res = run(s)
    (Path(s.out_dir) / "results.json").write_text(json.dumps(res, indent=1, default=str))
    text = report(res, command_line("bench/search_fidelity.py", argv))
    if not args.no_doc:
        write_section(Path(args.doc), "search-fidelity", text, "## Fidelity of short trials")
    return text
