"""bench/din_dare.py --quick in a real process: the coupled, equal-bytes coupled and decoupled
DIN in the README block, with their table bytes (format and bytes only; no AUC is asserted)."""

import re

from bench_helpers import block, run_script


def test_din_dare_quick_compares_decoupled_with_coupled(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# DIN\n")
    out = run_script("din_dare.py", "--quick", "--datasets", "sequences-200", "--readme", str(readme), "--out-dir",
                     str(tmp_path / "work"))
    section = block(readme.read_text(), "din-dare-sequences-200")
    assert out.strip() == section.strip()  # the script prints the table it writes
    for ds in ("sequences-200",):
        rows = [line.split("|") for line in section.splitlines() if line.startswith(f"| {ds} ")]
        assert [r[2].strip() for r in rows] == ["coupled, dim 16", "coupled, dim 24 (equal bytes)",
                                                "decoupled, 16 + attention 8"]
        mb = [float(r[3]) for r in rows]
        assert mb[0] < mb[1] and abs(mb[1] - mb[2]) < 0.01 * mb[1]  # the twins' bytes count; equal bytes hold
        assert re.search(rf"- {ds}, equal bytes: decoupled - coupled = [-+]\d\.\d{{4}}", section)
