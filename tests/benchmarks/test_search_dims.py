"""bench/search_dims.py: its README block is replaced between markers only, and a quick run in a real process
writes the table of searched dims against uniform dims (format only; no number is asserted)."""

import json

import pytest
from bench_helpers import block, run_script
from search_helpers import make_tiny_data

from recsys_emb.benchmarks.search_dims import BEGIN, END, write_readme_section


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("search-dims-data"))


def test_readme_section_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    write_readme_section(readme, "first")  # created when missing
    readme.write_text("# DLRM\n\nintro\n\n" + readme.read_text() + "\n## Other\n\nkept\n")
    write_readme_section(readme, "second")
    text = readme.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and "second" in text and "first" not in text
    assert text.startswith("# DLRM\n\nintro") and text.rstrip().endswith("kept")


def test_quick_run_writes_the_table(tiny_data, tmp_path):
    readme, work = tmp_path / "README.md", tmp_path / "work"
    out = run_script("search_dims.py", "--quick", "--out-dir", str(work), "--data-dir", str(tiny_data),
                     "--readme", str(readme))
    section = block(readme.read_text(), "search")
    assert out.strip() == section.strip()  # the script prints the table it writes
    assert "| setting | embedding bytes | valid AUC | test AUC | test ceiling AUC |" in section
    for d in (8, 16, 32, 64):
        assert f"| uniform dim {d} |" in section
    assert "| searched (trial " in section and "Command: `.venv/bin/python bench/search_dims.py --quick" in section
    res = json.loads((work / "results.json").read_text())
    assert res["args"]["n_trials"] == 4 and res["searched"]["bytes"] <= res["budget"]
