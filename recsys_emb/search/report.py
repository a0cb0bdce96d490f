"""A study's outputs, from the storage alone: ``best.yaml`` (the base train config with the best trial's
embeddings), ``trials.csv`` and the plot (:mod:`recsys_emb.search.plot`).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import yaml

from recsys_emb.config import config_to_dict
from recsys_emb.search.config import SearchConfig
from recsys_emb.search.objective import trial_run_config

__all__ = ["best_trial", "search_report"]


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    yield tmp
    os.replace(tmp, path)


def best_trial(study: Any, config: SearchConfig) -> Optional[Any]:
    """The highest-AUC completed trial within the budget (in multi mode: of the Pareto front); ties go to
    the smaller trial. ``None`` while no trial has completed within the budget.

    Example:
        >>> import optuna
        >>> from recsys_emb.search.config import load_search_config
        >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml", ["budget_bytes=1000"])
        >>> study = optuna.create_study(direction="maximize")
        >>> for auc, n_bytes in [(0.71, 900), (0.75, 5000), (0.71, 600)]:
        ...     study.add_trial(optuna.trial.create_trial(value=auc, user_attrs={"bytes": n_bytes}))
        >>> best = best_trial(study, cfg)
        >>> best.value, best.user_attrs["bytes"]
        (0.71, 600)
    """
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if config.budget_bytes is None or t.user_attrs.get("bytes", math.inf) <= config.budget_bytes]
    return max(done, key=lambda t: (t.values[0], -t.user_attrs.get("bytes", 0)), default=None)


def search_report(study: Any, config: SearchConfig, out_dir: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Write ``best.yaml`` (a train config: the base config with the best trial's embeddings; once the
    top trials are retrained, :func:`~recsys_emb.search.retrain.retrain_top`, the winner's, and
    ``result["final"]`` holds the retraining's result),
    ``trials.csv`` and ``history.png`` (single) or ``pareto.png`` (multi) into ``out_dir``
    (default ``<out_root>/<study>``). Returns the paths and the best trial's numbers.

    Example:
        >>> import tempfile
        >>> import optuna
        >>> from recsys_emb.search.config import load_search_config
        >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")
        >>> study = optuna.create_study(direction="maximize", study_name="doc")
        >>> for auc, dim in [(0.70, 8), (0.72, 16)]:
        ...     study.add_trial(optuna.trial.create_trial(value=auc, user_attrs={
        ...         "bytes": 1000 * dim, "embeddings": {"dims": {"C1": dim}, "overrides": {}}}))
        >>> tmp = tempfile.TemporaryDirectory()
        >>> result = search_report(study, cfg, tmp.name)
        >>> result["best_number"], result["best_dims"], Path(result["best_yaml"]).name
        (1, {'C1': 16}, 'best.yaml')
        >>> tmp.cleanup()
    """
    from recsys_emb.search.plot import plot_study

    out = Path(out_dir or Path(config.out_root) / study.study_name)
    out.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"out_dir": str(out)}
    df = study.trials_dataframe(attrs=("number", "state", "value", "values", "params", "user_attrs",
                                       "datetime_start", "duration", "system_attrs"))
    drop = [c for c in df.columns if c in ("user_attrs_embeddings",) or c.startswith("system_attrs_constraints")]
    df = df.drop(columns=drop)
    with _atomic(out / "trials.csv") as tmp:
        df.to_csv(tmp, index=False)
    result["trials_csv"] = str(out / "trials.csv")
    best = best_trial(study, config)
    final = study.user_attrs.get("final") if config.mode == "single" else None
    if final is not None:  # retrained top trials (retrain_top): the winner on the full recipe's valid AUC
        best = study.trials[int(final["trial"])]
    if best is not None:
        cfg = trial_run_config(config, best.user_attrs["embeddings"], config.base_run_dict(),
                               out_dir=str(out / "best"), name=f"{study.study_name}-best")
        data = config_to_dict(cfg)
        if final is not None:
            runs = ", ".join(f"{r['trial']}: {r['valid_auc']:.4f}" for r in final["runs"])
            what = (f"# Trial {best.number} of study {study.study_name!r}: the best of its top {len(final['runs'])} "
                    f"trials retrained with this config's recipe (valid AUC {runs}): valid AUC "
                    f"{final['valid_auc']:.4f}, test AUC {final['test_auc']:.4f}; short trial valid AUC "
                    f"{best.values[0]:.4f}")
        else:
            what = (f"# Best trial {best.number} of study {study.study_name!r}: valid AUC {best.values[0]:.4f} "
                    f"(short trial training)")
        header = (f"{what}, {best.user_attrs['bytes']:,} embedding bytes.\n"
                  f"# Run: recsys-emb train --config {out / 'best.yaml'}\n")
        with _atomic(out / "best.yaml") as tmp:
            tmp.write_text(header + yaml.safe_dump(data, sort_keys=False))
        result.update(best_yaml=str(out / "best.yaml"), best_number=best.number, best_auc=best.values[0],
                      best_bytes=best.user_attrs["bytes"], best_dims=best.user_attrs["embeddings"]["dims"])
        if final is not None:
            result["final"] = final
    result["plot"] = plot_study(study, config, out)
    return result
