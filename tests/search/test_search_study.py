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


def test_search_starts_with_the_uniform_trials_and_retrains_the_top_ones(tiny_data, tmp_path):
    # the default space (full / hashed / unified per group), trials filled to the budget, successive halving,
    # the uniform configurations as the first trials, the top 2 retrained with the base config's recipe
    import json

    import yaml
    from optuna.trial import TrialState

    cfg = load_search_config(write_configs(
        tmp_path, tiny_data, space={"dims": [4, 8, 16, 32], "groups": {"large": ["C3", "C4", "C12", "C16", "C21", "C24"]},
                                    "ungrouped": "one"},
        fill_budget=True, uniform_trials=True, retrain_top=2, pruner={"kind": "successive_halving"},
        train_overrides=["train.max_steps=10", "train.eval_every=5"]))
    study = search(cfg, study_name="full", n_trials=4)
    trials = study.get_trials()
    uniform = [t for t in trials if "uniform" in t.user_attrs]
    # full at the largest dim that fits; hashed and unified at the dim whose compression fills the budget
    assert [t.user_attrs["uniform"].split(" 1/")[0] for t in uniform] == ["full dim 8", "hashed dim 16", "unified dim 16"]
    assert [t.number for t in uniform] == [0, 1, 2]  # enqueued: the study's first trials
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["bytes"] <= cfg.budget_bytes for t in uniform)
    assert all(t.user_attrs["budget_use"] >= 0.99 for t in uniform[1:])
    assert len(trained_trials(study)) == 4
    sampled = [t for t in trained_trials(study) if "uniform" not in t.user_attrs]
    assert all("compression_scale" in t.user_attrs and t.user_attrs["bytes"] <= cfg.budget_bytes for t in sampled)

    final = study.user_attrs["final"]
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    assert final["candidates"] == [t.number for t in done[:2]]
    for run in final["runs"]:  # each candidate trained again for the base config's 20 steps, not the trials' 10
        summary = json.loads((tmp_path / "runs" / "full" / f"final_trial_{run['trial']}" / "summary.json").read_text())
        assert summary["steps"] == 20 and run["valid_auc"] == summary["valid"]["auc"]
    win = max(final["runs"], key=lambda r: r["valid_auc"])
    assert final["trial"] == win["trial"] and final["test_auc"] == win["test_auc"]
    best_text = (tmp_path / "runs" / "full" / "best.yaml").read_text()
    assert best_text.startswith(f"# Trial {win['trial']} of study 'full': the best of its top 2 trials retrained")
    best = yaml.safe_load(best_text)
    chosen = study.trials[win["trial"]].user_attrs["embeddings"]
    assert best["embeddings"]["overrides"] == chosen["overrides"] or best["embeddings"]["variant"] == \
        chosen.get("preset", {}).get("variant")
