"""The search-fidelity study's statistics and report, from given trials (no training): Spearman's rank
correlation against scipy's, and per trial length the correlation, the pick and its shortfall, and the budget use."""

import random

import pytest
from scipy.stats import spearmanr

from recsys_emb.benchmarks.search_fidelity import report, spearman


def test_spearman_equals_scipys_with_ties():
    rng = random.Random(0)
    for n in (2, 5, 12):
        xs = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(n)]  # ties on purpose
        ys = [rng.random() for _ in range(n)]
        if len(set(xs)) > 1:
            assert spearman(xs, ys) == pytest.approx(spearmanr(xs, ys).statistic)
    assert spearman([1.0, 1.0], [0.0, 1.0]) != spearman([1.0, 1.0], [0.0, 1.0])  # constant: nan
    with pytest.raises(ValueError, match="3 values against 2"):
        spearman([1, 2, 3], [1, 2])


def test_report_ranks_each_trial_length_against_the_full_run():
    def trial(number, nbytes, curve, full):
        return {"number": number, "bytes": nbytes, "valid_auc": full, "test_auc": full - 0.001,
                "params": {"dim:g": 8, "variant:g": "hashed", "compression:g": 16.0},
                "curve": {str(k): v for k, v in curve.items()}}

    # at step 50 the order is reversed (the small config learns fastest); at 100 it is the full run's order
    trials = [trial(3, 500, {50: 0.70, 100: 0.74}, 0.78), trial(7, 900, {50: 0.69, 100: 0.75}, 0.79),
              trial(9, 200, {50: 0.72, 100: 0.73}, 0.76)]
    res = {"trials": trials, "budget_bytes": 1000, "full_bytes": 16_000, "steps_per_epoch": 120,
           "sampled_bytes": [500, 900, 200, 5000, 1500, 3000], "check": {"trial": 3, "steps": 100, "valid_auc": 0.7401,
                                                                         "prefix_auc": 0.74},
           "settings": {"seed": 0, "budget": "1/16", "eval_every": 50, "check_steps": 100}, "seconds": 600.0,
           "base": {"data": {"batch_size": 4096}, "seed": 0},
           "space": {"n": 50, "seed": 0, "budgets": {"1/4": {"within": 12, "max_use": 0.98, "median_use": 0.52},
                                                     "1/64": {"within": 0, "max_use": None, "median_use": None}}}}
    text = report(res, "cmd")
    assert "| 50 | 42% | -1.00 | #9 | 0.7600 | -0.0300 |" in text
    assert "| 100 | 83% | +1.00 | #7 | 0.7900 | +0.0000 |" in text
    assert "| 120 | 100% | +1.00 | #7 | 0.7900 | +0.0000 |" in text  # the full run itself ends the table
    assert "| #7 | g d8 hashed 1/16 | 0.9 kB | 90% | 0.7500 | 0.7900 | 0.7890 |" in text
    assert "- Budget use: of 6 random points of the space, 3 (50%) are within the budget; those use 20% to 90% of " \
           "it (median 50%)." in text
    assert "ρ at 100 steps (the quality benchmark's trial length): +1.00." in text
    assert "trained alone for 100 steps scores valid AUC 0.7401; its full run at step 100: 0.7400 (difference " \
           "+0.0001)." in text
    assert "| 1/4 | 12 (24%) | 98% | 52% |" in text and "| 1/64 | 0 (0%) | | |" in text
    assert text.endswith("Command: `cmd`")
    space_only = report({k: res[k] for k in ("space", "full_bytes", "budget_bytes", "settings", "base")}, "cmd")
    assert "| 1/4 | 12 (24%) | 98% | 52% |" in space_only and "Spearman" not in space_only
