"""bench/quality.py --quick in a real process, writing into a copy of models/dlrm/README.md: every section's
table, the markers, the plot and the claims exist and hold every row (format only; no number is asserted:
quality is what the full run measures)."""

import json
import shutil

from bench_helpers import ROOT, block, run_script


def test_quality_quick_writes_table_plot_and_verdicts(tmp_path):
    readme = tmp_path / "dlrm" / "README.md"
    readme.parent.mkdir()
    shutil.copy(ROOT / "models" / "dlrm" / "README.md", readme)
    before = readme.read_text()
    out = run_script("quality.py", "--quick", "--readme", str(readme), "--out-dir", str(tmp_path / "work"),
                     timeout=1800)  # about 40 short trainings: minutes on a busy machine
    text = readme.read_text()
    for marker in ("quality-init", "quality-qr-ops", "quality-mixed-forms", "quality-avazu", "quality-dcn",
                   "quality-small", "quality-families", "quality"):
        assert block(text, marker).strip() in out  # the script prints every table it writes
    section = block(text, "quality")
    criteo = section.split("Real MovieLens")[0]
    assert block(text, "search") == block(before, "search")  # the other scripts' blocks are left alone
    rows = [line for line in criteo.splitlines() if line.startswith("| ")]
    variants = {line.split("|")[1].strip() for line in rows[1:]}
    assert {"ceiling (true probabilities)", "full", "hashed", "multi_hash", "qr", "mixed", "mixed_field", "unified",
            "searched"} <= variants
    for v in ("hashed", "qr", "unified"):
        budgets = [line.split("|")[2].strip() for line in rows if line.split("|")[1].strip() == v]
        assert budgets == ["1", "1/4", "1/16", "1/64"], (v, budgets)
    assert "Full tables close" in section and "QR beats the hashing trick" in section
    assert "Real MovieLens" in section and "| unified |" in section.split("Real MovieLens")[1]
    assert (readme.parent / "quality_quick.png").stat().st_size > 1000
    res = json.loads((tmp_path / "work" / "results.json").read_text())
    ml = {r["variant"]: r for r in res["movielens"]["rows"]}
    assert abs(ml["unified"]["params"] / ml["hashed"]["params"] - 1) < 0.01  # unified at the hashing trick's size
    # every trained model of the main table also scored with int8 and fp16 tables through the inference module
    assert rows[0].endswith("| x full | int8 bytes | int8 Δ AUC | fp16 bytes | fp16 Δ AUC |")
    assert "- int8 tables move test AUC by" in section and "All rows in int8 against 1/4 of the bytes" in section
    for r in (r for r in res["criteo"]["rows"] if r["reachable"]):
        st = r["storage"]
        assert abs(st["fp32"]["test_auc"] - r["test_auc"]) < 1e-6, r["name"]  # the module scores like the model
        assert st["fp32"]["bytes"] == r["bytes"] and st["fp16"]["table_bytes"] * 2 == st["fp32"]["table_bytes"]
        assert st["int8"]["table_bytes"] < st["fp32"]["table_bytes"]
    assert "Command: `.venv/bin/python bench/quality.py --quick" in section
    init = block(text, "quality-init")
    init_rows = [line.split("|")[1].strip() for line in init.splitlines() if line.startswith("| ") and "(" in line
                 and "variant" not in line]
    assert init_rows == ["full (1)", "hashed (1/4)", "unified (1/4)"]
    assert "default bound" in init and "U(±0.1)" in init
    qr_ops = block(text, "quality-qr-ops")
    ops = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in qr_ops.splitlines()
           if line.startswith("| ") and "op" not in line.split("|")[1]}
    # one compression (a bytes ratio) for every op; concat's half-width tables keep twice the rows
    assert {op: c[:2] for op, c in ops.items()} == {"mult": ["4", "1/4"], "add": ["4", "1/4"], "concat": ["4", "1/2"]}
    nbytes = [float(c[2].split()[0]) * {"kB": 1e3, "MB": 1e6}[c[2].split()[1]] for c in ops.values()]
    assert max(nbytes) / min(nbytes) < 1.02, ops  # the same embedding bytes (remainder tables differ a little)
    assert "- Best at equal bytes: `" in qr_ops
    mixed = block(text, "quality-mixed-forms")
    forms = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:7]] for line in mixed.splitlines()
             if line.startswith("| 3/4 |")}
    assert forms["blocks"][0] == "4" and forms["field"][0] == "1", forms
    ratios = [float(c[3]) for c in forms.values()]
    assert all(0.6 < x <= 0.75 * 1.02 for x in ratios), forms  # each form's alpha fits the budget
    assert "- Field-level minus blocks, mean test AUC: 3/4: " in mixed and "the blocks' bytes)" in mixed
    avazu = block(text, "quality-avazu")  # the variants and the reference rows on Avazu-shaped data via a schema
    cells = {tuple(c.strip() for c in line.split("|")[1:3]) for line in avazu.splitlines() if line.startswith("| ")}
    assert {("full", "1"), ("hashed", "1"), ("full", "1/4"), ("hashed", "1/4"), ("constant (training positive rate)", ""),
            ("logistic regression (one-hot)", ""), ("ceiling (true probabilities)", "")} <= cells, cells
    assert "- DLRM with full tables minus the logistic regression, test AUC: " in avazu
    dcn = block(text, "quality-dcn")  # quick: the hashing trick at 1/16, dot and DCNv2
    assert [line.split("|")[1:3] for line in dcn.splitlines() if line.startswith("| ") and "---" not in line][1:] \
        == [[" hashed ", " 1/16 "]]
    dcn_res = json.loads((tmp_path / "work" / "dcn_results.json").read_text())["rows"][0]
    assert dcn_res["dot"]["test_auc"] == next(r["test_auc"] for r in res["criteo"]["rows"]
                                              if (r["variant"], r["budget"]) == ("hashed", "1/16"))
    assert dcn_res["dcn"]["dense_params"] > dcn_res["dot"]["dense_params"]  # the cross layers
    small = block(text, "quality-small")
    small_rows = [line for line in small.splitlines() if line.startswith("| ") and "min count" not in line]
    assert [line.split("|")[1].strip() for line in small_rows] == ["criteo-like", "movielens"]
    assert all(line.count("|") == 10 for line in small_rows) and "- Smallest margin over the logistic regression" in small
    fams = block(text, "quality-families")  # quick: every family at 1/4 beside the reference rows
    cells = {tuple(c.strip() for c in line.split("|")[1:3]) for line in fams.splitlines() if line.startswith("| ")}
    assert {("hashed", "1/4"), ("unified", "1/4"), ("robe", "1/4"), ("mch", "1/4"), ("lowrank", "1/4"), ("tt", "1/4"),
            ("constant (training positive rate)", ""), ("logistic regression (one-hot)", "")} <= cells, cells
    assert "Which family wins at each budget" in fams and "- 1/4: **" in fams
    assert (readme.parent / "quality_families_quick.png").stat().st_size > 1000
    # --reuse-runs reads the finished runs back (none is trained again) and gives the same table
    summaries = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").glob("*/summary.json")}
    again = run_script("quality.py", "--quick", "--section", "main", "--reuse-runs", "--no-readme", "--out-dir",
                       str(tmp_path / "work"), timeout=1800)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "work").glob("*/summary.json")} == summaries
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table == [line for line in again.splitlines() if line.startswith("| ")]
