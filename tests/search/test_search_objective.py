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


def test_a_trial_of_exactly_the_budget_trains_and_one_byte_over_does_not(tiny_data, tmp_path):
    # the budget is inclusive: bytes == budget_bytes is within it. The trial's bytes are found first from a
    # drawn trial; then the same parameters are run against a budget of exactly that, and of one byte less
    from optuna.trial import TrialState

    from recsys_emb.search.objective import trial_run_config

    loose = load_search_config(write_configs(tmp_path / "loose", tiny_data, budget_bytes=10**9))
    probe = _Objective(loose, "probe", tmp_path / "runs" / "probe")
    drawn = optuna.create_study().ask()
    n_bytes = probe.bytes_of(trial_run_config(loose, probe.choices(drawn), probe.run_dict))
    for budget, trains in [(n_bytes, True), (n_bytes - 1, False)]:
        cfg = load_search_config(write_configs(tmp_path / str(budget), tiny_data, budget_bytes=budget,
                                               pruner={"kind": "none"}))
        study = open_study(cfg, f"sqlite:///{tmp_path / f'edge-{budget}.db'}", "edge", seed=0)
        study.enqueue_trial(drawn.params)
        objective = _Objective(cfg, "edge", tmp_path / "runs" / str(budget))
        trial = study.ask()
        if trains:
            auc = objective(trial)
            assert 0.0 < auc < 1.0 and (tmp_path / "runs" / str(budget) / f"trial_{trial.number}").is_dir()
            study.tell(trial, auc)
        else:
            with pytest.raises(optuna.TrialPruned, match=f"{n_bytes} bytes over the budget of {budget}"):
                objective(trial)
            study.tell(trial, state=TrialState.PRUNED)
        t = study.trials[trial.number]
        assert t.params == drawn.params and t.user_attrs["bytes"] == n_bytes and t.user_attrs["over_budget"] is (not trains)


def test_successive_halving_prunes_a_sampled_trial_at_the_first_rung_but_not_a_uniform_one(tiny_data, tmp_path):
    # three trials reported AUC 0.99 at the first rung (step eval_every = 10): a real trial that does worse
    # there is pruned at step 10; an enqueued uniform trial that does worse runs to the end
    from optuna.trial import TrialState

    from recsys_emb.search.study import enqueue_uniform

    cfg = load_search_config(write_configs(tmp_path, tiny_data, fill_budget=True,
                                           pruner={"kind": "successive_halving"}))
    study = open_study(cfg, f"sqlite:///{tmp_path / 'sh.db'}", "sh", seed=0)
    assert type(study.pruner).__name__ == "SuccessiveHalvingPruner"
    for _ in range(3):
        t = study.ask()
        t.report(0.99, 10)
        assert not t.should_prune()
        study.tell(t, 0.99)
    objective = _Objective(cfg, "sh", tmp_path / "runs" / "sh")
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="at step 10"):
        objective(trial)
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[trial.number].user_attrs["pruned_at_step"] == 10
    assert list(study.trials[trial.number].intermediate_values) == [10]

    assert enqueue_uniform(study, objective) == ["full dim 8"]  # dims only (variants: []): the base variant
    assert enqueue_uniform(study, objective) == []  # already in the study
    uniform = study.ask()
    auc = objective(uniform)
    study.tell(uniform, auc)
    assert auc < 0.99 and sorted(study.trials[uniform.number].intermediate_values) == [10, 20]
