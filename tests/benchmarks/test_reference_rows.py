"""bench/reference_rows.py --quick in a real process, writing into copies of models/*/README.md: each README
gets its reference block where its marker stands, with both rows for every dataset its tables use, and
nothing else in the README changes. (The rows themselves are tested against scikit-learn in
tests/test_baselines.py.)"""

import json
import shutil

from bench_helpers import ROOT, block, run_script

from recsys_emb.benchmarks.reference_rows import TABLES


def test_quick_run_writes_both_rows_for_every_table(tmp_path):
    for readme in TABLES:
        (tmp_path / readme).parent.mkdir(parents=True)
        shutil.copy(ROOT / readme, tmp_path / readme)
    out = run_script("reference_rows.py", "--quick", "--root", str(tmp_path), "--out-dir", str(tmp_path / "work"))
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    for readme, configs in TABLES.items():
        before, after = (ROOT / readme).read_text(), (tmp_path / readme).read_text()
        section = block(after, "reference")
        assert section.strip() in out  # the script prints what it writes
        def outside(text):
            head, rest = text.split("<!-- reference:begin -->")
            return head, rest.split("<!-- reference:end -->")[1]

        assert outside(after) == outside(before)  # only the block changed, where its markers stand
        rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
                if line.startswith("| `")]
        assert [(r[0], r[1]) for r in rows] == [(f"`{c}`", name) for c in configs
                                               for name in ("constant predictor", "logistic regression")]
        for r in rows:
            assert 0 < float(r[3]) < 1 and (r[2] == "0.5") == (r[1] == "constant predictor")
        assert {r["config"] for r in results[readme]["rows"]} == set(configs)
    # one dataset directory, one computation: tables on the same data share their reference rows (DLRM's
    # MovieLens reads every earlier rating, DIN's the liked ones: two datasets)
    seen = {}
    for r in (r for readme in TABLES for r in results[readme]["rows"]):
        seen.setdefault((r["data"], r["name"]), set()).add((r["auc"], r["logloss"]))
    assert all(len(v) == 1 for v in seen.values())
    assert len({d for d, _ in seen if "movielens" in d}) == 2
