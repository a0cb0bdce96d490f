"""The search report's best trial: the highest AUC within the budget, the budget inclusive."""

import optuna

from recsys_emb.search import load_search_config
from recsys_emb.search.report import best_trial
from search_helpers import CONFIGS


def test_the_best_trial_may_use_exactly_the_budget_and_not_one_byte_more():
    cfg = load_search_config(CONFIGS / "search_tiny.yaml", ["budget_bytes=1000"])
    study = optuna.create_study(direction="maximize")
    for auc, n_bytes in [(0.70, 999), (0.75, 1000), (0.80, 1001)]:
        study.add_trial(optuna.trial.create_trial(value=auc, user_attrs={"bytes": n_bytes}))
    best = best_trial(study, cfg)
    assert (best.value, best.user_attrs["bytes"]) == (0.75, 1000)
