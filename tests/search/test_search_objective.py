"""The objective: a trial numbered after the study filled up (two workers started the last trial at once)
stops before training."""

import optuna
import pytest

from recsys_emb.search import load_search_config, open_study
from recsys_emb.search.callbacks import MaxTrainedTrialsCallback
from recsys_emb.search.objective import _Objective
from search_helpers import trained_trials, write_configs


def test_trial_started_after_the_study_is_full_is_not_trained(tiny_data, tmp_path):
    # two workers both saw n_trials - 1 trained trials and each started one: the storage numbers the
    # trials, and the later-numbered one must stop before training
    from optuna.trial import TrialState

    cfg = load_search_config(write_configs(tmp_path, tiny_data))
    study = open_study(cfg, f"sqlite:///{tmp_path / 'race.db'}", "race", seed=0)
    objective = _Objective(cfg, "race", tmp_path / "runs" / "race", MaxTrainedTrialsCallback(n_trials=1))
    first, second = study.ask(), study.ask()  # first: the other worker's trial, still running
    with pytest.raises(optuna.TrialPruned, match="surplus"):
        objective(second)
    study.tell(second, state=TrialState.PRUNED)
    assert study.trials[second.number].user_attrs["surplus"] is True
    assert not (tmp_path / "runs" / "race" / f"trial_{second.number}").exists()  # never trained
    assert [t.number for t in trained_trials(study)] == [first.number]
