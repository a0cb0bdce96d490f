"""Trial accounting: what counts as a trained trial, when the callback stops a worker, and which of two
trials started at once is surplus."""

import optuna
import pytest
from optuna.trial import TrialState

from recsys_emb.errors import ConfigError
from recsys_emb.search.callbacks import MaxTrainedTrialsCallback, TrialCounts


def _study(tmp_path, name="s"):
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}", study_name=name, direction="maximize")


def test_counts_pruned_on_auc_as_trained_and_over_budget_or_surplus_as_not(tmp_path):
    study = _study(tmp_path)
    study.add_trial(optuna.trial.create_trial(value=0.7))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"pruned_at_step": 10}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"over_budget": True}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"surplus": True}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    study.ask()  # RUNNING
    stop = MaxTrainedTrialsCallback(n_trials=3)
    assert stop.count(study) == TrialCounts(trained=2, running=1, untrained=2)
    assert stop.full(study)
    assert not MaxTrainedTrialsCallback(n_trials=4).full(study)


def test_stops_optimize_at_n_trained_trials(tmp_path):
    study = _study(tmp_path)

    def objective(trial):
        x = trial.suggest_int("x", 0, 3)
        if x == 0:
            trial.set_user_attr("over_budget", True)
            raise optuna.TrialPruned()
        if x == 1:
            raise optuna.TrialPruned()  # pruned on AUC: trained
        return float(x)

    stop = MaxTrainedTrialsCallback(n_trials=5)
    study.optimize(objective, callbacks=[stop])  # no n_trials: only the callback ends it
    over = sum(1 for t in study.trials if t.user_attrs.get("over_budget"))
    assert stop.count(study) == TrialCounts(trained=5, running=0, untrained=over)
    assert len(study.trials) == 5 + over and stop.over_budget_seen == over


def test_gives_up_after_max_over_budget_trials(tmp_path):
    study = _study(tmp_path)

    def objective(trial):
        trial.suggest_int("x", 0, 3)
        trial.set_user_attr("over_budget", True)
        raise optuna.TrialPruned()

    stop = MaxTrainedTrialsCallback(n_trials=2, max_over_budget=3)
    study.optimize(objective, callbacks=[stop])
    assert len(study.trials) == 3 and stop.gave_up and stop.count(study).trained == 0


def test_later_numbered_of_two_trials_started_at_once_is_surplus(tmp_path):
    study = _study(tmp_path)
    study.add_trial(optuna.trial.create_trial(value=0.7))
    stop = MaxTrainedTrialsCallback(n_trials=2)
    first, second = study.ask(), study.ask()  # two workers that both saw one trained trial
    assert not stop.surplus(first) and stop.surplus(second)
    # the earlier one turns out over budget: the later one is no longer surplus
    first.set_user_attr("over_budget", True)
    study.tell(first, state=TrialState.PRUNED)
    assert not stop.surplus(second)


def test_n_trials_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"n_trials=0 is not allowed"):
        MaxTrainedTrialsCallback(n_trials=0)
