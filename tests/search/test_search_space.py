"""The search space: each variant a group may choose builds valid feature specs whose bytes are known before
anything is built."""

import optuna

from recsys_emb.search import SpaceConfig, load_search_config, trial_run_config
from recsys_emb.search.space import MIXED_SEARCH_BLOCKS, _group_embeddings
from search_helpers import CONFIGS, TableSchema, build_features, memory_from_specs


def test_variant_choices_build_valid_specs_with_bytes():
    cards = {"a": 10, "b": 5000, "c": 30000}
    schema = TableSchema(sparse=tuple(cards), vocab_sizes=cards)
    cfg = load_search_config(CONFIGS / "search_tiny.yaml")
    base = cfg.trial_run_dict()
    base["embeddings"]["min_rows"] = 64
    space = SpaceConfig(dims=[8, 16], variants=["full", "hashed", "qr", "mixed", "unified", "lowrank", "tt", "robe",
                                                         "mch"],
                        compression=[4.0], alpha=[0.3], chunks=[2])
    sizes = {}
    for variant in space.variants:
        trial = optuna.trial.FixedTrial({"dim:g": 16, "variant:g": variant, "compression:g": 4.0, "alpha:g": 0.3,
                                         "chunks:g": 2})
        dims, overrides = _group_embeddings(trial, space, "g", list(cards), cards, base)
        run = trial_run_config(cfg, {"dims": dims, "overrides": overrides}, base)
        specs, _ = build_features(run, schema)
        kinds = {s.name: s.embedding.kind for s in specs}
        assert kinds["a"] in ("full", "unified", "robe")  # small fields stay full, except in a shared group
        assert kinds["c"] == {"multi_hash": "hashed", "mch": "managed_collision"}.get(variant, variant)
        sizes[variant] = memory_from_specs(specs).bytes
        if variant == "mixed":  # the base is field-level (the preset default): the search's groups get blocks
            assert len(next(s for s in specs if s.name == "c").tables()) == MIXED_SEARCH_BLOCKS
    full = (10 + 5000 + 30000) * 16 * 4
    assert sizes["full"] == full
    assert sizes["hashed"] == (10 + 1250 + 7500) * 16 * 4
    assert sizes["mch"] == sizes["hashed"]  # TorchRec's managed collisions: as many rows (remap state apart)
    assert sizes["unified"] == (10 + 1250 + 7500) * 8 * 4  # one shared table, chunk dim 16 / 2
    assert sizes["mixed"] < full
    assert sizes["lowrank"] == (10 * 16 + (5000 + 30000) * 4 + 2 * 4 * 16) * 4  # rank 16 / 4, two projections
    assert sizes["robe"] == (10 * 16 + (5000 + 30000) * 16 // 4) * 4  # one array: small fields at full size
    assert 0.8 * sizes["hashed"] < sizes["tt"] <= sizes["hashed"]  # cores within 1/4 of the bytes, rank rounded down
    # compression is a bytes ratio for QR too: concat (the default op) keeps twice the rows at half width
    assert sizes["qr"] == sizes["hashed"] + 2 * (2 * 8 * 4)  # + two 2-row half-width remainder tables


def test_sampled_candidates_fill_the_budget():
    # random draws of the default space (per-field full / hashed / unified): as drawn, few are within the
    # budget and those use little of it; filled, every draw with a compressible field uses >= FILL_TARGET of
    # it and none exceeds it (a draw that cannot fit is returned as drawn, over the budget, for rejection)
    from recsys_emb.search.space import FILL_TARGET, field_groups, fill_budget, trial_choices

    cards = {"a": 10, "b": 5000, "c": 30000, "d": 800}
    schema = TableSchema(sparse=tuple(cards), vocab_sizes=cards)
    cfg = load_search_config(CONFIGS / "search_tiny.yaml")
    base = cfg.trial_run_dict()
    space = SpaceConfig(dims=[4, 8, 16, 32])
    assert space.variants == ["full", "hashed", "unified"]  # the default space searches variants
    groups = field_groups(space, list(cards))

    def measure(choices):
        specs, _ = build_features(trial_run_config(cfg, choices, base), schema)
        return memory_from_specs(specs).bytes

    budget = sum(cards.values()) * 16 * 4 // 4  # a quarter of full tables at dim 16
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn, filled = [], []
    for _ in range(30):
        trial = study.ask()
        drawn.append(measure(trial_choices(trial, space, groups, cards, base)) / budget)
        choices, n_bytes, info = fill_budget(trial, space, groups, cards, base, measure, budget)
        assert n_bytes == measure(choices) and info["budget_use"] == n_bytes / budget
        compressible = any(trial.params[f"variant:{g}"] != "full" and cards[g] >= base["embeddings"]["min_rows"]
                           for g in groups)
        filled.append((n_bytes / budget, compressible))
        study.tell(trial, 0.0)
    assert sum(u <= 1 for u in drawn) < 20
    assert all(FILL_TARGET <= u <= 1 for u, compressible in filled if compressible)
    assert all(u <= 1 for u, _ in filled)  # a full table at dim 4 of every field fits: nothing is rejected
    assert sum(c for _, c in filled) >= 20
