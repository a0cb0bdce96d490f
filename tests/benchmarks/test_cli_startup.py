"""bench/cli_startup.py --quick: every command and both references timed in fresh processes, in order, with
their ratio to the bare interpreter (format only; the times are for bench/, never asserted)."""

import json

from bench_helpers import run_script


def test_quick_run_times_the_references_and_the_commands(tmp_path):
    out = run_script("cli_startup.py", "--quick", "--json", str(tmp_path / "res.json"),
                     "--readme", str(tmp_path / "performance.md"))
    res = json.loads((tmp_path / "res.json").read_text())
    names = [r["command"] for r in res["results"]]
    assert names == ["python -c pass", "python -c 'import torch'", "recsys-emb --version", "recsys-emb --help",
                     "recsys-emb train --help"]
    assert res["results"][0]["ratio_to_bare_python"] == 1.0 and all(r["ms"] > 0 for r in res["results"])
    assert [line.split("  ")[0] for line in out.splitlines()[2:]] == names
    text = (tmp_path / "performance.md").read_text()
    assert "<!-- cli_startup:begin -->" in text and "bench/cli_startup.py --quick" in text
