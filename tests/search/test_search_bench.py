"""bench/search_dims.py: its README section is replaced between markers only, and a quick run writes the
table (searched dims against uniform dims)."""

from pathlib import Path


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_dims", Path(__file__).parents[2] / "bench" / "search_dims.py")
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
