"""The search's final model: the best few trials of a study trained again with the base config's full
recipe, the winner picked on validation AUC (:func:`retrain_top`).

A short trial ranks configurations only roughly (docs/search.md, "Fidelity of short trials"); retraining
the top ``k`` with the recipe the result will be trained with, and picking on their full-run valid AUC,
guards the result against a configuration that only converges fast.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from recsys_emb.search.config import SearchConfig
from recsys_emb.search.objective import trial_run_config
from recsys_emb.training import train

__all__ = ["top_trials", "retrain_top"]

logger = logging.getLogger(__name__)


def top_trials(study: Any, config: SearchConfig, k: int) -> List[Any]:
    """The ``k`` completed trials within the budget with the highest (short-run) valid AUC, best first;
    ties go to the smaller trial, then the earlier one."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if config.budget_bytes is None or t.user_attrs.get("bytes", math.inf) <= config.budget_bytes]
    done.sort(key=lambda t: (-t.values[0], t.user_attrs.get("bytes", 0), t.number))
    return done[:k]


def retrain_top(study: Any, config: SearchConfig, out_dir: Optional[Union[str, Path]] = None,
                k: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """Train the top ``k`` trials (:func:`top_trials`; default ``config.retrain_top``) with the base config's
    training (the full recipe, not the trials' ``train_overrides``) and pick the one with the best valid AUC.

    Each candidate trains in ``<out_dir>/final_trial_<n>/``; the winner keeps its model directory (the
    others' and, without ``keep_checkpoints``, every checkpoint are deleted). The result is recorded in the
    study (user attribute ``final``, so that ``search_report`` writes the winner's ``best.yaml``) and in
    ``<out_dir>/final.json``. A study whose ``final`` already names the same candidates is not retrained;
    workers of one machine take turns on a file lock, so the second finds the first's result.

    Args:
        study: the Optuna study.
        config: the search config (base config, budget, ``keep_checkpoints``).
        out_dir: default ``<out_root>/<study name>``.
        k: candidates; default ``config.retrain_top``.

    Returns:
        ``{"trial", "valid_auc", "test_auc", "bytes", "candidates", "runs"}`` (``runs``: each candidate's
        ``trial``, short-run ``trial_valid_auc``, retrained ``valid_auc`` / ``test_auc``, ``bytes``, ``run_dir``),
        or ``None`` when the study has no completed trial within the budget.

    Example:
        >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")  # doctest: +SKIP
        >>> final = retrain_top(search(cfg, n_trials=20), cfg, k=3)  # doctest: +SKIP
        >>> final["trial"] in final["candidates"]  # doctest: +SKIP
        True
    """
    k = config.retrain_top if k is None else k
    out = Path(out_dir or Path(config.out_root) / study.study_name)
    top = top_trials(study, config, k)
    if not top:
        return None
    numbers = [t.number for t in top]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "retrain.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = study.user_attrs.get("final")
        if done and done.get("candidates") == numbers:
            logger.info("study %s: the top %d trials %s are retrained already", study.study_name, k, numbers)
            return dict(done)
        base = config.base_run_dict()
        base["train"]["progress"] = False
        runs = []
        for t in top:
            run_dir = out / f"final_trial_{t.number}"
            cfg = trial_run_config(config, t.user_attrs["embeddings"], copy.deepcopy(base), out_dir=str(run_dir),
                                   name=f"{study.study_name}-final-{t.number}")
            logger.info("retraining trial %d (short-run valid AUC %.4f) with the full recipe", t.number, t.values[0])
            summary = train(cfg, overwrite=True)
            if not config.keep_checkpoints:
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            runs.append({"trial": t.number, "trial_valid_auc": float(t.values[0]),
                         "valid_auc": float(summary["valid"]["auc"]), "test_auc": float(summary["test"]["auc"]),
                         "bytes": int(summary["embedding_bytes"]), "run_dir": str(run_dir),
                         **({"uniform": t.user_attrs["uniform"]} if "uniform" in t.user_attrs else {})})
        win = max(runs, key=lambda r: (r["valid_auc"], -r["bytes"]))
        if not config.keep_checkpoints:
            for r in runs:
                if r is not win:
                    shutil.rmtree(Path(r["run_dir"]) / "model", ignore_errors=True)
        final = {"trial": win["trial"], "valid_auc": win["valid_auc"], "test_auc": win["test_auc"],
                 "bytes": win["bytes"], "candidates": numbers, "runs": runs}
        study.set_user_attr("final", final)
        (out / "final.json").write_text(json.dumps(final, indent=1))
        logger.info("final: trial %d, retrained valid AUC %.4f, test AUC %.4f", win["trial"], win["valid_auc"],
                    win["test_auc"])
    return final
