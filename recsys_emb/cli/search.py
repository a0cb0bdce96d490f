"""``recsys-emb search``: one search worker (run the same command in several processes or machines to add
workers), or ``--report`` to write the outputs of a study from its storage.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_search_command"]


def _cmd_search(args: argparse.Namespace) -> int:
    import os

    from recsys_emb.errors import ConfigError
    from recsys_emb.search import load_search_config, open_study, search, search_report

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not args.report:
        # each process would be an Optuna worker of its own, training its own trial in a process group
        # shared with the others' different trials (docs/search.md, "Trials on several processes")
        raise ConfigError(f"recsys-emb search runs as one process per worker (WORLD_SIZE={world} here, a torchrun "
                          f"worker?); start it without torchrun/--nproc, once per worker")

    overrides = list(args.overrides)
    if args.budget_bytes is not None:
        overrides.append(f"budget_bytes={args.budget_bytes}")
    cfg = load_search_config(args.config, overrides)  # fails here, before any work, on a bad config
    if args.method == "supernet":
        return _cmd_supernet(args, cfg)
    if args.report:
        study = open_study(cfg, args.storage, args.study)
        result = search_report(study, cfg)
    else:
        study = search(cfg, storage=args.storage, study_name=args.study, n_trials=args.n_trials)
        result = search_report(study, cfg)
    _print_result(study, cfg, result)
    return 0


def _cmd_supernet(args: argparse.Namespace, cfg: Any) -> int:
    from recsys_emb.errors import ConfigError
    from recsys_emb.memory import format_bytes
    from recsys_emb.cli.output import emit
    from recsys_emb.search.supernet import supernet_search

    for flag, value in (("--storage", args.storage), ("--n-trials", args.n_trials), ("--report", args.report or None)):
        if value is not None:
            raise ConfigError(f"{flag} is for --method trials (an Optuna study); --method supernet trains one supernet "
                              f"and scores supernet.population x (supernet.generations + 1) candidates at most: drop "
                              f"{flag} (set those with --set supernet.population=N)")
    r = supernet_search(cfg, study_name=args.study)
    c = r["compute"]
    emit(f"supernet search {r['study']}: {c['supernet_steps']} supernet steps, {c['candidates_scored']} candidates "
         f"scored (no training), {c['retrain_steps']} retrain steps")
    emit(f"chosen dims: {format_bytes(r['bytes'])} / budget {format_bytes(r['budget_bytes'])} "
         f"({r['budget_used']:.0%}), supernet valid AUC {r['supernet_valid_auc']:.4f}")
    if "retrain" in r:
        emit(f"retrained: valid AUC {r['retrain']['valid_auc']:.4f}, test AUC {r['retrain']['test_auc']:.4f}, "
             f"model {r['retrain']['model_dir']}")
    emit(f"best config: {r['best_yaml']}   candidates: {r['candidates_csv']}   report: {r['report_json']}")
    return 0


def _print_result(study: Any, cfg: Any, result: dict) -> None:
    from optuna.trial import TrialState

    from recsys_emb.cli.output import emit
    from recsys_emb.memory import format_bytes

    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    over = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.user_attrs.get("over_budget"))
    emit(f"study {study.study_name} ({cfg.mode}): " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + (f" ({over} of the pruned over budget, not trained)" if over else ""))
    if "best_yaml" in result:
        budget = f" / budget {format_bytes(cfg.budget_bytes)}" if cfg.budget_bytes else ""
        emit(f"best trial {result['best_number']}: valid AUC {result['best_auc']:.4f}, "
              f"{format_bytes(result['best_bytes'])}{budget}")
        final = result.get("final")
        if final is not None:
            emit(f"final: trial {final['trial']}, the best of the top {len(final['runs'])} trials retrained with the "
                  f"full recipe: valid AUC {final['valid_auc']:.4f}, test AUC {final['test_auc']:.4f}")
        emit(f"best config: {result['best_yaml']}  (recsys-emb train --config {result['best_yaml']})")
    else:
        emit("no completed trial within the budget yet")
    emit(f"trials: {result['trials_csv']}" + (f"   plot: {result['plot']}" if result.get("plot") else ""))


def add_search_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``search`` on a ``recsys-emb`` subparsers object."""
    s = subparsers.add_parser("search", help="Optuna search of per-field embedding dims under a memory budget",
                              description="One search worker. Run the same command in several processes or on "
                                          "several machines (same --storage and --study) to add workers.")
    s.add_argument("--config", required=True, help="search config, e.g. configs/search_dlrm_criteo_like.yaml")
    s.add_argument("--study", default=None, help="study name (resumed if it exists); default: the config's")
    s.add_argument("--storage", default=None,
                   help="Optuna RDB URL, e.g. postgresql://user:pw@host/db; default sqlite:///runs/<study>.db")
    s.add_argument("--n-trials", type=int, default=None, help="trained trials in the study, all workers together")
    s.add_argument("--budget-bytes", type=int, default=None, help="override budget_bytes")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a search config value, e.g. --set sampler=random (repeatable)")
    s.add_argument("--method", choices=("trials", "supernet"), default="trials",
                   help="trials: an Optuna study, one short training per trial (default); supernet: one supernet "
                        "training, candidates scored on it without training, the best retrained (docs/search.md)")
    s.add_argument("--report", action="store_true",
                   help="run no trial: write best.yaml, trials.csv and the plot from the storage")
    s.set_defaults(func=_cmd_search, reexec=True)
    return s
