"""Per-field dimension search: config validation, trial configs and bytes, a tiny search end to end."""

from pathlib import Path

import optuna
import pytest

from recsys_emb.config import ConfigError, load_config
from recsys_emb.search import (MIXED_SEARCH_BLOCKS, SpaceConfig, _group_embeddings, load_search_config, search,
                               trial_run_config)
from search_helpers import CONFIGS, make_tiny_data, trained_trials, write_configs



@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("search-data"))


# ----------------------------------------------------------------------------------------------- config
def test_repo_search_configs_load():
    cfg = load_search_config("configs/search_dlrm_criteo_like.yaml")
    assert cfg.mode == "single" and cfg.budget_bytes > 0
    tiny = load_search_config(CONFIGS / "search_tiny.yaml")
    assert tiny.base_path() == CONFIGS / "search_tiny_train.yaml"


@pytest.mark.parametrize("override, match", [
    ("bogus=1", r"unknown key\(s\) \['bogus'\]"),
    ("space.dims=[4, 6]", r"space.dims\[\]=6 .*multiples of 4"),
    ("space.dims={low: 4, high: 62}", r"space.dims.high=62"),
    ("space.dims={low: 4, high: 64, step: 2}", r"unknown key\(s\) \['space.dims.step'\]"),
    ("mode=both", r"mode='both' .*\['single', 'multi'\]"),
    ("sampler=nsga2", r"nsga2 is for mode: multi"),
    ("pruner.kind=asha", r"pruner.kind='asha' .*\['median', 'hyperband', 'none'\]"),
    ("space.variants=[full, sparse]", r"space.variants\[\]='sparse'"),
    ("space.ungrouped=some", r"space.ungrouped='some'"),
    ("budget_bytes=null", r"budget_bytes is required in mode: single"),
    ("grace_period=1", r"grace_period=1 .*heartbeat_interval"),
    ("base_config=nowhere.yaml", r"base_config='nowhere.yaml': no such file"),
    ("train_overrides=[train.max_steps=-1]", r"train_overrides: train.max_steps=-1"),
    ("space.groups={a: [C1], b: [C1]}", r"already in group 'a'"),
])
def test_bad_search_config_fails_early(override, match):
    with pytest.raises(ConfigError, match=match):
        load_search_config(CONFIGS / "search_tiny.yaml", [override])


def test_dim_range_and_multi_mode_load():
    cfg = load_search_config(CONFIGS / "search_tiny.yaml",
                             ["space.dims={low: 8, high: 64, log: true}", "mode=multi", "budget_bytes=null"])
    assert cfg.space.dims.low == 8 and cfg.space.dims.log and cfg.mode == "multi"


# ----------------------------------------------------------------------------------------------- trials
def test_variant_choices_build_valid_specs_with_bytes():
    from recsys_emb.data.parquet import TableSchema
    from recsys_emb.memory import memory_from_specs
    from recsys_emb.training import build_features

    cards = {"a": 10, "b": 5000, "c": 30000}
    schema = TableSchema(sparse=tuple(cards), vocab_sizes=cards)
    cfg = load_search_config(CONFIGS / "search_tiny.yaml")
    base = cfg.trial_run_dict()
    base["embeddings"]["min_rows"] = 64
    space = SpaceConfig(dims=[8, 16], variants=["full", "hashed", "qr", "mixed", "unified"], compression=[4.0],
                        alpha=[0.3], chunks=[2])
    sizes = {}
    for variant in space.variants:
        trial = optuna.trial.FixedTrial({"dim:g": 16, "variant:g": variant, "compression:g": 4.0, "alpha:g": 0.3,
                                         "chunks:g": 2})
        dims, overrides = _group_embeddings(trial, space, "g", list(cards), cards, base)
        run = trial_run_config(cfg, {"dims": dims, "overrides": overrides}, base)
        specs, _ = build_features(run, schema)
        kinds = {s.name: s.embedding.kind for s in specs}
        assert kinds["a"] in ("full", "unified")  # small fields stay full, except in a unified group
        sizes[variant] = memory_from_specs(specs).bytes
        if variant == "mixed":  # the base is field-level (the preset default): the search's groups get blocks
            assert len(next(s for s in specs if s.name == "c").tables()) == MIXED_SEARCH_BLOCKS
    full = (10 + 5000 + 30000) * 16 * 4
    assert sizes["full"] == full
    assert sizes["hashed"] == (10 + 1250 + 7500) * 16 * 4
    assert sizes["unified"] == (10 + 1250 + 7500) * 8 * 4  # one shared table, chunk dim 16 / 2
    assert sizes["mixed"] < full
    # compression is a bytes ratio for QR too: concat (the default op) keeps twice the rows at half width
    assert sizes["qr"] == sizes["hashed"] + 2 * (2 * 8 * 4)  # + two 2-row half-width remainder tables


# ----------------------------------------------------------------------------------------------- search
def test_tiny_search_under_budget_and_best_config_trains(tiny_data, tmp_path):
    from optuna.trial import TrialState

    from recsys_emb.training import train

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
    assert (out / "history.png").stat().st_size > 1000
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


def test_trial_started_after_the_study_is_full_is_not_trained(tiny_data, tmp_path):
    # two workers both saw n_trials - 1 trained trials and each started one: the storage numbers the
    # trials, and the later-numbered one must stop before training
    from optuna.trial import TrialState

    from recsys_emb.search import _Objective, open_study

    cfg = load_search_config(write_configs(tmp_path, tiny_data))
    study = open_study(cfg, f"sqlite:///{tmp_path / 'race.db'}", "race", seed=0)
    objective = _Objective(cfg, "race", tmp_path / "runs" / "race")
    objective.total = 1
    first, second = study.ask(), study.ask()  # first: the other worker's trial, still running
    with pytest.raises(optuna.TrialPruned, match="surplus"):
        objective(second)
    study.tell(second, state=TrialState.PRUNED)
    assert study.trials[second.number].user_attrs["surplus"] is True
    assert not (tmp_path / "runs" / "race" / f"trial_{second.number}").exists()  # never trained
    assert [t.number for t in trained_trials(study)] == [first.number]


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
    assert (out / "pareto.png").exists() and (out / "best.yaml").exists()


# ----------------------------------------------------------------------------------------------- benchmark
def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_dims", Path(__file__).parents[1] / "bench" / "search_dims.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_readme_section_replaces_only_between_markers(tmp_path):
    bench = _bench_module()
    readme = tmp_path / "README.md"
    bench.write_readme_section(readme, "first")  # created when missing
    readme.write_text("# DLRM\n\nintro\n\n" + readme.read_text() + "\n## Other\n\nkept\n")
    bench.write_readme_section(readme, "second")
    text = readme.read_text()
    assert text.count(bench.BEGIN) == 1 and "second" in text and "first" not in text
    assert text.startswith("# DLRM\n\nintro") and text.rstrip().endswith("kept")


def test_bench_quick_writes_the_table(tiny_data, tmp_path):
    bench = _bench_module()
    readme = tmp_path / "README.md"
    bench.main(["--quick", "--out-dir", str(tmp_path / "bench"), "--data-dir", str(tiny_data), "--readme", str(readme)])
    text = readme.read_text()
    section = text.split(bench.BEGIN)[1].split(bench.END)[0]
    assert "| setting | embedding bytes | valid AUC | test AUC | test ceiling AUC |" in section
    for d in (8, 16, 32, 64):
        assert f"| uniform dim {d} |" in section
    assert "| searched (trial " in section and "Command: `.venv/bin/python bench/search_dims.py --quick" in section
