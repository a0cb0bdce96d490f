"""Optuna search of per-field embedding dimensions (and optionally variants) under a memory budget.

One worker or many: every worker runs :func:`search` (or ``recsys-emb search``) on the same storage URL and
study name. See ``docs/search.md``.

The package, public verbs first: :mod:`~recsys_emb.search.config` (the search config),
:mod:`~recsys_emb.search.space` (what a trial chooses), :mod:`~recsys_emb.search.objective` (bytes, then a
short training), :mod:`~recsys_emb.search.callbacks` (trial accounting), :mod:`~recsys_emb.search.study`
(storage, :func:`open_study`, the worker loop :func:`search`), :mod:`~recsys_emb.search.report` (best.yaml,
trials.csv) and :mod:`~recsys_emb.search.plot` (figures).

Example:
    >>> from recsys_emb.search import load_search_config
    >>> load_search_config("configs/search_dlrm_criteo_like.yaml").study_name
    'dims-dlrm-criteo-like'
"""

from typing import Any

from recsys_emb.search.config import (DimRange, PrunerConfig, SearchConfig, SpaceConfig, load_search_config,
                                      search_config_from_dict)
from recsys_emb.search.objective import trial_run_config
from recsys_emb.search.report import best_trial, search_report
from recsys_emb.search.retrain import retrain_top
from recsys_emb.search.study import normalize_storage_url, open_study, search

__all__ = ["DimRange", "PrunerConfig", "SpaceConfig", "SearchConfig", "load_search_config", "search_config_from_dict",
           "open_study", "search", "search_report", "trial_run_config", "normalize_storage_url", "best_trial",
           "retrain_top", "SEARCH_VARIANTS"]


def __getattr__(name: str) -> Any:
    if name == "SEARCH_VARIANTS":  # the registry's variant names, read when accessed
        from recsys_emb.families import variant_names

        return variant_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
