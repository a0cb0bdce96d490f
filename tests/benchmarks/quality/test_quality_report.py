"""The quality benchmark's tables and claims, rendered from given rows (no training): row order, out-of-reach
rows, and which claims hold, do not hold or are not comparable."""

import pytest

from recsys_emb.benchmarks.quality import main
from recsys_emb.benchmarks.quality.report import dcn_report, families_report, qr_ops_report, report
from recsys_emb.benchmarks.quality.runs import parse_budget
from recsys_emb.benchmarks.quality.small import small_report

FULL = 1_000_000


def row(variant, budget, auc, nbytes, **extra):
    return {"variant": variant, "budget": budget, "reachable": True, "test_auc": auc, "test_logloss": 0.45,
            "params": nbytes // 4, "bytes": nbytes, "bytes_ratio": nbytes / FULL, "seconds": 60.0, **extra}


def main_result(rows):
    base = {"model": {"bottom_mlp": [64, 16], "top_mlp": [64], "interaction": "dot"}, "embeddings": {"dim": 16},
            "train": {"epochs": 1, "max_steps": None}, "data": {"batch_size": 4096}, "seed": 0,
            "optim": {"embedding": "rowwise_adagrad", "embedding_lr": 0.05, "dense": "adam", "dense_lr": 0.001}}
    return {"rows": rows, "full_bytes": FULL, "ceiling_auc": 0.79, "ceiling_logloss": 0.40, "base": base,
            "data": {"rows": {"train": 800, "valid": 100, "test": 100}, "generate": {"rows": 1000, "scale": 0.01}}}


def test_main_table_orders_rows_and_checks_the_claims():
    rows = [row("unified", "1/4", 0.760, 260_000), row("qr", "1/4", 0.750, 255_000),
            row("hashed", "1/4", 0.755, 250_000), row("hashed", "1/16", 0.740, 70_000),
            row("qr", "1/16", 0.745, 200_000),  # 2.9x the hashed bytes: not comparable
            row("mixed", "1/4", 0.769, 240_000), row("full", "1", 0.770, FULL),
            {"variant": "full", "budget": "1/16", "reachable": False}]
    text = report(main_result(rows), None, ".venv/bin/python bench/quality.py", "quality.png")
    table = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(v.strip(), b.strip()) for v, b in table] == [
        ("ceiling (true probabilities)", ""), ("full", "1"), ("full", "1/16"), ("hashed", "1/4"), ("hashed", "1/16"),
        ("qr", "1/4"), ("qr", "1/16"), ("mixed", "1/4"), ("unified", "1/4")]
    assert "| full | 1/16 | out of reach |" in text
    assert "- Full tables close **93.1%** of the gap" in text and "target 90%: **met**" in text
    assert "its test AUC is -0.0010 vs full -> **holds**" in text
    assert "- Unified is on the Pareto front against the hashing trick (AUC >= at equal parameters): 1/4: +0.0050 " \
           "-> **holds**." in text
    assert "- QR beats the hashing trick at equal parameters: 1/4: -0.0050 -> **holds at 0 of 1 budgets**; " \
           "not comparable at 1/16 (2.9x the bytes, +0.0050)." in text
    assert "Real MovieLens" not in text and text.endswith("Command: `.venv/bin/python bench/quality.py`")


def storage(auc, nbytes, int8_delta, fp16_delta):
    return {"fp32": {"test_auc": auc, "bytes": nbytes},
            "int8": {"test_auc": auc + int8_delta, "bytes": nbytes * 3 // 8},
            "fp16": {"test_auc": auc + fp16_delta, "bytes": nbytes // 2}}


def test_main_table_has_storage_columns_and_compares_int8_full_tables_with_fp32_at_a_quarter():
    rows = [row("full", "1", 0.770, FULL, storage=storage(0.7701, FULL, -0.0012, -0.00001)),  # -0.00001 reads +0.0000
            row("hashed", "1/4", 0.755, 250_000, storage=storage(0.755, 250_000, 0.0003, -0.0001)),
            row("mixed", "1/4", 0.769, 240_000),  # scored without storage: empty cells
            {"variant": "qr", "budget": "1/64", "reachable": False}]
    text = report(main_result(rows), None, "cmd", "quality.png")
    assert "| variant | budget | test AUC | test log loss | params | bytes | x full | int8 bytes | int8 Δ AUC " \
           "| fp16 bytes | fp16 Δ AUC |" in text
    assert "| full | 1 | 0.7700 | 0.4500 | 250,000 | 1.00 MB | 1.000 | 0.38 MB | -0.0012 | 0.50 MB | +0.0000 |" in text
    assert "| mixed | 1/4 | 0.7690 | 0.4500 | 60,000 | 0.24 MB | 0.240 | | | | |" in text
    assert "| qr | 1/64 | out of reach | | | | | | | | |" in text
    assert "| ceiling (true probabilities) | | 0.7900 | 0.4000 | | | | | | | |" in text
    assert "- int8 tables move test AUC by -0.0012 to +0.0003 across 2 rows." in text
    assert "- fp16 tables move test AUC by -0.0001 to +0.0000 across 2 rows." in text
    # 0.7701 - 0.0012 = 0.7689 against mixed at 1/4 (0.769): behind by 0.0001
    assert "full tables in int8 hold 0.38 MB at test AUC 0.7689; the best fp32 row at 1/4, mixed, holds 0.24 MB " \
           "at 0.7690 -> int8 full tables are **behind** by 0.0001." in text
    plain = report(main_result([row("full", "1", 0.770, FULL)]), None, "cmd", "quality.png")
    assert "Δ AUC" not in plain and "Storage columns" not in plain


def test_table_dtypes_option_is_checked_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--table-dtypes", "int8,int4", "--out-dir", str(tmp_path)])
    assert "--table-dtypes: unknown ['int4']; choose from int8, fp16" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_qr_ops_table_names_the_best_op_at_equal_bytes():
    rows = [{"op": op, "compression": 4.0, "bytes": 50_000, "test_auc": auc, "samples_per_s": 1000.0}
            for op, auc in (("mult", 0.75), ("mult", 0.77), ("add", 0.74), ("concat", 0.755))]
    text = qr_ops_report({"rows": rows, "budget": "1/4", "seeds": [0, 1]}, "cmd")
    assert "| mult | 4 | 1/4 | 50.0 kB | 0.7600 | 0.7500-0.7700 | 1,000 |" in text
    assert "| concat | 4 | 1/2 | 50.0 kB | 0.7550 |" in text  # two half-width tables: twice the rows
    assert "- Best at equal bytes: `mult` (0.7600); `add` -0.0200, `concat` -0.0050." in text


@pytest.mark.parametrize("text", ["0", "3/2", "-1/4"])
def test_budget_outside_zero_one_is_refused(text):
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        parse_budget(text)


def test_unknown_variant_is_refused_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--variants", "full,nope", "--out-dir", str(tmp_path)])
    assert "--variants: unknown ['nope']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_seeded_rows_show_their_range_and_claims_are_judged_seed_by_seed():
    """Rows over 3 seeds show mean [min-max]; a claim that holds on the mean but not at one seed says so."""
    def seeded(variant, budget, aucs, nbytes):
        return row(variant, budget, sum(aucs) / 3, nbytes, seeds=[0, 1, 2], seed_test_auc=aucs,
                   seed_test_logloss=[0.45, 0.46, 0.44])

    rows = [seeded("full", "1", [0.770, 0.772, 0.768], FULL),
            seeded("hashed", "1/4", [0.750, 0.752, 0.760], 250_000),
            seeded("unified", "1/4", [0.756, 0.758, 0.757], 250_000)]
    text = report(main_result(rows), None, "cmd", "quality.png")
    assert "| variant | budget | test AUC, mean [range] | test log loss, mean [range] |" in text
    assert "| hashed | 1/4 | 0.7540 [0.7500-0.7600] | 0.4500 [0.4400-0.4600] |" in text
    assert "seeds 0-2 (mean and range over them)" in text
    assert "(0.7700 vs 0.7900, 92.4% to 93.8% over the seeds)" in text
    assert "1/4: +0.0030 [-0.0030 to +0.0060] -> **holds on the mean of 3 seeds; at every seed at 0 of 1**" in text


def test_dcn_table_pairs_each_variant_with_its_dot_run_seed_by_seed():
    """DCNv2 beside dot per variant and budget: means, the per-seed difference, and how often DCNv2 leads."""
    def seeded(aucs, lls, dense):
        return {"test_auc": sum(aucs) / 3, "test_logloss": sum(lls) / 3, "seeds": [0, 1, 2], "seed_test_auc": aucs,
                "seed_test_logloss": lls, "bytes": 250_000, "dense_params": dense, "samples_per_s": 1000.0,
                "seconds": 60.0}

    def pair(variant, budget, dot, dcn):
        return {"variant": variant, "budget": budget, "reachable": True, "bytes_ratio": 0.25,
                "dot": seeded(*dot, 100), "dcn": seeded(*dcn, 300)}

    rows = [pair("unified", "1/16", ([0.750, 0.752, 0.760], [0.46, 0.46, 0.45]), ([0.756, 0.751, 0.763], [0.45] * 3)),
            {"variant": "full", "budget": "1/16", "reachable": False},
            pair("full", "1", ([0.770, 0.772, 0.768], [0.45] * 3), ([0.771, 0.774, 0.770], [0.44, 0.45, 0.44]))]
    res = {"rows": rows, "budgets": ["1", "1/16"], "full_bytes": FULL, "cross_layers": 3, "cross_rank": 64,
           "base": main_result([])["base"]}
    text = dcn_report(res, "cmd")
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split("|")[1:3] for line in table[1:]] == [[" full ", " 1 "], [" full ", " 1/16 "],
                                                             [" unified ", " 1/16 "]]
    assert "| full | 1/16 | out of reach |" in text
    # full at 1: DCNv2 minus dot per seed +0.001, +0.002, +0.002; log loss -0.01, 0, -0.01
    assert "| full | 1 | 0.25 MB | 0.250 | 0.7700 [0.7680-0.7720] | 0.7717 [0.7700-0.7740] | +0.0017 [+0.0010 to " \
           "+0.0020] | 0.4500 [0.4500-0.4500] | 0.4433 [0.4400-0.4500] | -0.0067 [-0.0100 to +0.0000] | 100 / 300 " \
           "| 1,000 / 1,000 |" in text
    # unified at 1/16: +0.006, -0.001, +0.003: ahead on the mean, not at every seed
    assert "| unified | 1/16 |" in text and "| +0.0027 [-0.0010 to +0.0060] |" in text
    assert "- DCNv2 minus dot, test AUC over all 6 paired runs: mean +0.0022, -0.0010 to +0.0060. DCNv2 is ahead on " \
           "the mean at **2 of 2** rows, at every seed at 1 of 2; behind at every seed at 0 of 2." in text
    assert "3 DCN-v2 cross layers (rank 64)" in text and "seeds 0-2 (mean and range over them)" in text
    assert text.endswith("Command: `cmd`")


def test_dcn_section_options_are_checked_before_any_work(capsys, tmp_path):
    for rows, err in (("full@1,searched@1/4", "--dcn-rows: 'searched@1/4' must be VARIANT@BUDGET with a variant of "),
                      ("hashed", "--dcn-rows: 'hashed' must be VARIANT@BUDGET"),
                      ("full@1,hashed@2", "--dcn-rows: 'hashed@2': '2' must lie in (0, 1]")):
        with pytest.raises(SystemExit):
            main(["--dcn-rows", rows, "--section", "dcn", "--out-dir", str(tmp_path)])
        assert err in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_small_table_shows_each_variant_against_the_logistic_regression():
    """The small-data table: the reference rows, each variant's mean and range over the seeds, its margin over
    the logistic regression, and a verdict that names the smallest margin."""
    def sample(dataset, lr_auc, hashed, unified):
        models = {n: {"test_auc": sum(a) / len(a), "seed_test_auc": a, "seeds": [0, 1, 2]}
                  for n, a in (("hashed", hashed), ("unified", unified))}
        return {"dataset": dataset, "rows": {"total": 5000, "train": 4000, "valid": 500, "test": 500}, "min_count": 2,
                "constant": {"auc": 0.5, "logloss": 0.5794}, "logistic_regression": {"auc": lr_auc, "C": 0.1},
                "models": models}

    res = {"rows": [sample("criteo-like", 0.68, [0.69, 0.70, 0.71], [0.66, 0.67, 0.68]),
                    sample("movielens", 0.64, [0.65, 0.66, 0.67], [0.66, 0.66, 0.66])],
           "overrides": ["data.batch_size=256"], "config": "c.yaml", "movielens_config": "m.yaml", "seeds": 3,
           "scale": 0.02}
    text = small_report(res, "cmd")
    lines = [line for line in text.splitlines() if line.startswith("| criteo-like") or line.startswith("| movielens")]
    assert lines[0] == ("| criteo-like | 5,000 (4,000) | 2 | 0.5 / 0.5794 | 0.6800 (0.1) | 0.7000 [0.6900-0.7100] | "
                        "+0.0200 | 0.6700 [0.6600-0.6800] | -0.0100 |")
    assert "| 0.6600 [0.6600-0.6600] | +0.0200 |" in lines[1]
    assert "Smallest margin over the logistic regression: -0.0100" in text and "**below**" in text
    res["rows"] = res["rows"][1:]
    assert "**at least** the logistic regression's on every row" in small_report(res, "cmd")


def test_families_table_names_the_winner_at_each_budget_and_checks_the_vldb_finding():
    """Every family per budget with its bytes and seeds, the reference rows, the winner at each budget with its
    margin seed by seed, the hash-based against factorised verdict, the out-of-reach rows with their excess."""
    def fam(variant, budget, aucs, nbytes):
        return row(variant, budget, sum(aucs) / 3, nbytes, seed_test_auc=aucs, seeds=[0, 1, 2],
                   seed_test_logloss=[0.45] * 3, samples_per_s=1000.0)

    rows = [fam("full", "1", [0.780, 0.781, 0.782], FULL),
            fam("hashed", "1/4", [0.770, 0.772, 0.771], 252_000), fam("tt", "1/4", [0.772, 0.773, 0.774], 250_000),
            fam("hashed", "1/64", [0.750, 0.752, 0.751], 20_000), fam("robe", "1/64", [0.753, 0.751, 0.752], 20_000),
            fam("tt", "1/64", [0.740, 0.741, 0.742], 18_000),
            {"variant": "lowrank", "budget": "1/64", "reachable": False, "bytes": 250_000, "over_budget": 16.0}]
    res = {"rows": rows, "full_bytes": FULL, "reach_slack": 1.35, "ceiling_auc": 0.79, "budgets": "1,1/4,1/64",
           "baselines": {"constant": {"auc": 0.5, "logloss": 0.57}, "logistic_regression": {"auc": 0.74, "logloss": 0.47}},
           "base": main_result([])["base"] | {"embeddings": {"dim": 16, "min_rows": 1024}}}
    text = families_report(res, "cmd", "fam.png")
    table = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [[c.strip() for c in t] for t in table[:7]] == [["full", "1"], ["hashed", "1/4"], ["tt", "1/4"],
                                                           ["hashed", "1/64"], ["robe", "1/64"], ["lowrank", "1/64"],
                                                           ["tt", "1/64"]]
    assert "| lowrank | 1/64 | 0.25 MB | out of reach (16.0x the budget) |" in text
    assert "| logistic regression (one-hot) | | | | 0.7400 | 0.4700 | |" in text and "![test AUC" in text
    # 1/4: tt ahead of hashed by +0.002, +0.001, +0.003: at every seed
    assert "- 1/4: **tt** 0.7730, ahead of hashed by +0.0020 [+0.0010 to +0.0030] (at every seed).\n" in text
    # 1/64: robe ahead of hashed by +0.003, -0.001, +0.001: not at every seed; tt behind
    assert "- 1/64: **robe** 0.7520, ahead of hashed by +0.0010 [-0.0010 to +0.0030] (**not** at every seed" in text
    assert "then tt -0.0110." in text
    assert "1/4: best hash-based hashed minus best factorised tt -0.0020 [-0.0030 to -0.0010]" in text
    assert "At the highest compression both reach (1/64) the best hash-based family is **ahead**, as in" in text
    assert "managed collisions (`mch`, a frequency-managed remap, not in that benchmark) are in neither group" in text
    assert "- Out of reach: 1 of the 7 family-budget pairs (their bytes against the budget are in the table). " \
           "The fields under 1024 ids" in text
    rows[3].update(seed_test_auc=rows[4]["seed_test_auc"], test_auc=rows[4]["test_auc"])  # hashed level with robe
    assert "- 1/64: **hashed** 0.7520, level with robe (+0.0000 [+0.0000 to +0.0000] at every seed)" in \
        families_report(res, "cmd")
    assert text.endswith("Command: `cmd`")
