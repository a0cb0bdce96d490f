"""The bench/ scripts' quick modes, in real processes, writing into copies of the model READMEs.

Format only: the tables, the markers and the plot exist and hold every row; no number is asserted
(speed and quality are what the full runs measure)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(name, *args, timeout=600):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def block(text, marker):
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1, marker
    return text.split(begin)[1].split(end)[0]


def test_quality_quick_writes_table_plot_and_verdicts(tmp_path):
    readme = tmp_path / "dlrm" / "README.md"
    readme.parent.mkdir()
    shutil.copy(ROOT / "models" / "dlrm" / "README.md", readme)
    before = readme.read_text()
    run_script("quality.py", "--quick", "--readme", str(readme), "--out-dir", str(tmp_path / "work"))
    text = readme.read_text()
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
    assert "Command: `.venv/bin/python bench/quality.py --quick" in section
    init = block(text, "quality-init")
    init_rows = [line.split("|")[1].strip() for line in init.splitlines() if line.startswith("| ") and "(" in line
                 and "variant" not in line]
    assert init_rows == ["full (1)", "hashed (1/4)", "unified (1/4)"]
    assert "1/sqrt(rows) (TorchRec)" in init and "U(±0.1)" in init
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


def test_din_quick_compares_attention_with_sum_pooling(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# DIN\n")
    run_script("din.py", "--quick", "--readme", str(readme), "--out-dir", str(tmp_path / "work"))
    section = block(readme.read_text(), "din")
    for ds in ("sequences", "movielens"):
        assert sum(1 for line in section.splitlines() if line.startswith(f"| {ds} ")) == 2
        assert f"- {ds}: attention " in section


def test_nproc_quick_compares_one_and_two_processes(tmp_path):
    readme = tmp_path / "sharding.md"
    readme.write_text("# Sharding\n\n<!-- nproc:begin -->\nold\n<!-- nproc:end -->\n")
    run_script("nproc_throughput.py", "--quick", "--readme", str(readme), "--out-dir", str(tmp_path / "work"))
    section = block(readme.read_text(), "nproc")
    assert "old" not in section
    assert [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()] == ["1", "2"]
    assert "rank 0:" in section and "rank 1:" in section
