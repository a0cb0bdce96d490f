"""Whole searches on the tiny data: under the budget with a best config that trains, resumed by name, and
multi-objective with a Pareto front."""

from recsys_emb.search import load_search_config, search
from search_helpers import C0, C3, figure_panels, load_config, train, trained_trials, write_configs


def test_tiny_search_under_budget_and_best_config_trains(tiny_data, tmp_path):
    from optuna.trial import TrialState

    cfg = load_search_config(write_configs(tmp_path, tiny_data))
    study = search(cfg, study_name="tiny", n_trials=4)
    trials = study.get_trials()
    trained = trained_trials(study)
    assert len([t for t in trained if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 4
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, "no trial completed"
    assert all(t.user_attrs["bytes"] <= cfg.budget_bytes for t in complete)
    assert all(t.user_attrs["trained_bytes"] == t.user_attrs["bytes"] for t in complete)
    for t in trials:
        dims = t.user_attrs["embeddings"]["dims"]
        assert all(d % 4 == 0 for d in dims.values())
        if t.user_attrs["over_budget"]:  # never trained
            assert t.state == TrialState.PRUNED and not t.intermediate_values
            assert not (tmp_path / "runs" / "tiny" / f"trial_{t.number}").exists()

    out = tmp_path / "runs" / "tiny"
    for t in complete:  # a trial keeps its summary; without keep_checkpoints, no checkpoints and no model
        assert (out / f"trial_{t.number}" / "summary.json").exists()
        assert not (out / f"trial_{t.number}" / "model").exists()
        assert not (out / f"trial_{t.number}" / "checkpoints").exists()
    size, (history, by_bytes) = figure_panels(out / "history.png", 2)  # the trials and the Pareto front drawn
    assert size == (462, 1210) and {C0, C3} <= history and C3 in by_bytes
    assert len((out / "trials.csv").read_text().strip().splitlines()) == len(trials) + 1
    best_cfg = load_config(out / "best.yaml")
    best = max(complete, key=lambda t: t.value)
    assert best_cfg.embeddings.dims == best.user_attrs["embeddings"]["dims"]
    summary = train(best_cfg)
    assert summary["embedding_bytes"] == best.user_attrs["bytes"] <= cfg.budget_bytes
    assert 0.5 < summary["valid"]["auc"] <= 1.0

    # resuming by study name adds trials to the same study up to the new total
    study2 = search(cfg, study_name="tiny", n_trials=5)
    trained2 = trained_trials(study2)
    assert len(trained2) == 5 and study2._study_id == study._study_id


def test_tiny_multi_objective_search_gives_pareto_front(tiny_data, tmp_path):
    from optuna.trial import TrialState

    cfg = load_search_config(write_configs(tmp_path, tiny_data, mode="multi", budget_bytes=None, sampler="random",
                                           space={"dims": {"low": 4, "high": 32, "log": True},
                                                  "groups": {"large": ["C3", "C4", "C12"]}, "ungrouped": "one"}))
    study = search(cfg, study_name="multi", n_trials=3)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3
    assert all(len(t.values) == 2 and t.values[1] == t.user_attrs["bytes"] for t in done)
    assert study.best_trials
    out = tmp_path / "runs" / "multi"
    size, (front,) = figure_panels(out / "pareto.png", 1)  # 6 x 4.2 inches at 110 dpi, the front drawn
    assert size == (462, 660) and C3 in front and (out / "best.yaml").exists()
