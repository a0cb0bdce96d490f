"""Figures of a study (matplotlib, imported when a figure is drawn): ``history.png`` (single mode: AUC per
trial with the best so far, and AUC against bytes) or ``pareto.png`` (multi mode: AUC against bytes with
the Pareto front). matplotlib is the ``[plot]`` extra; without it the report has no figure and says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from recsys_emb.search.config import SearchConfig

__all__ = ["plot_study"]

logger = logging.getLogger(__name__)


def _pareto(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the (auc up, bytes down) non-dominated points."""
    out = []
    for i, (a, b) in enumerate(points):
        if not any((a2 >= a and b2 <= b) and (a2 > a or b2 < b) for a2, b2 in points):
            out.append(i)
    return out


def plot_study(study: Any, config: SearchConfig, out: Path) -> Optional[str]:
    """Draw the study's figure into ``out``; returns its path, or ``None`` while no trial has completed or
    when matplotlib is not installed (logged with the command that installs it).

    Example:
        >>> import tempfile
        >>> import optuna
        >>> from recsys_emb.search.config import load_search_config
        >>> cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")
        >>> study = optuna.create_study(direction="maximize", study_name="doc")
        >>> for auc, n_bytes in [(0.70, 4000), (0.72, 9000)]:
        ...     study.add_trial(optuna.trial.create_trial(value=auc, user_attrs={"bytes": n_bytes}))
        >>> tmp = tempfile.TemporaryDirectory()
        >>> Path(plot_study(study, cfg, Path(tmp.name))).name
        'history.png'
        >>> tmp.cleanup()
    """
    try:
        import matplotlib
    except ImportError:
        logger.warning("no figure for study %r: matplotlib is not installed (pip install 'recsys_emb[plot]')",
                       study.study_name)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    aucs = [t.values[0] for t in done]
    nbytes = [t.user_attrs.get("bytes", float("nan")) for t in done]
    multi = config.mode == "multi"
    fig, axes = plt.subplots(1, 1 if multi else 2, figsize=(6 if multi else 11, 4.2))
    axes = [axes] if multi else list(axes)
    if not multi:
        ax = axes[0]
        nums = [t.number for t in done]
        ax.scatter(nums, aucs, s=14, label="completed trial")
        best_so_far = [max(aucs[: i + 1]) for i in range(len(aucs))]
        ax.step(nums, best_so_far, where="post", color="C3", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel("valid AUC")
        ax.set_title(f"{study.study_name}: history")
        ax.legend(loc="lower right")
    ax = axes[-1]
    front = _pareto(list(zip(aucs, nbytes)))
    ax.scatter(nbytes, aucs, s=14, color="C0", alpha=0.6, label="completed trial")
    fb = sorted((nbytes[i], aucs[i]) for i in front)
    ax.plot([b for b, _ in fb], [a for _, a in fb], "o-", color="C3", label="Pareto front")
    if config.budget_bytes is not None:
        ax.axvline(config.budget_bytes, color="gray", ls="--", label="budget")
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes")
    ax.set_ylabel("valid AUC")
    ax.set_title(f"{study.study_name}: AUC vs bytes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / ("pareto.png" if multi else "history.png")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)
    plt.close(fig)
    return str(path)
