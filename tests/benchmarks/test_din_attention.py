"""bench/din.py --quick in a real process: both datasets, attention and sum pooling beside the logistic
regression, in the README block (format only; no number is asserted)."""

from bench_helpers import block, run_script


def test_din_quick_compares_attention_with_sum_pooling(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# DIN\n")
    out = run_script("din.py", "--quick", "--readme", str(readme), "--out-dir", str(tmp_path / "work"))
    text = readme.read_text()
    assert out.strip() == "\n\n".join(block(text, f"din-{ds}").strip() for ds in ("sequences", "movielens"))
    for ds in ("sequences", "movielens"):  # one block per dataset: the script prints the blocks it writes
        section = block(text, f"din-{ds}")
        models = [line.split("|")[2].strip() for line in section.splitlines() if line.startswith(f"| {ds} ")]
        assert models[:2] == ["DIN, attention", "DIN, sum pooling"] and models[2].startswith("logistic regression (C=")
        assert len(models) == 3 and f"- {ds}: attention " in section
