"""bench/nproc_throughput.py --quick in real processes: 1 and 2 processes and the plan in the README block
(format only; speed is never asserted). Two runs, not four: the loop column is the one train.pipeline
asked for and the summary reports."""

from bench_helpers import block, run_script


def test_nproc_quick_compares_one_and_two_processes(tmp_path):
    readme = tmp_path / "sharding.md"
    readme.write_text("# Sharding\n\n<!-- nproc:begin -->\nold\n<!-- nproc:end -->\n")
    out = run_script("nproc_throughput.py", "--quick", "--readme", str(readme), "--out-dir", str(tmp_path / "work"),
                     "--pipelines", "none")
    section = block(readme.read_text(), "nproc")
    assert out.strip() == section.strip()  # the script prints the table it writes
    assert "old" not in section
    rows = [[c.strip() for c in line.split("|")[1:3]] for line in section.splitlines() if line.startswith("| ")
            and line.split("|")[1].strip().isdigit()]
    assert rows == [["1", "none"], ["2", "none"]]
    assert "rank 0:" in section and "rank 1:" in section
