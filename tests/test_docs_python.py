"""Every Python block of README.md, docs/, datasets/ and models/ runs as written, each in a fresh
process whose working directory is outside the checkout, and prints nothing on stderr (no warning).

A block runs in an empty directory unless an HTML comment just before it names a set-up:
``<!-- setup: NAME -->`` prepares the directory first (``docs_helpers.SETUPS``: e.g. ``serving-dir``, a
model directory and a day of raw logs). A block that cannot run standalone says why in
``<!-- no-run: REASON -->``; these marks are counted so that they stay rare."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from docs_helpers import SETUP_LOG_LINES, SETUPS
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "datasets").glob("*.md")),
        *sorted((ROOT / "models").glob("*/README.md"))]
MAX_NO_RUN = 2


def python_blocks():
    """(doc, line, code, marks) of every ```python block; marks: the HTML comments on the lines just before it."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "```python":
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            marks, k = {}, i - 1
            while k >= 0 and lines[k].strip().startswith("<!--"):
                m = re.match(r"<!--\s*([\w-]+):\s*(.*?)\s*-->", lines[k].strip())
                if m:
                    marks[m.group(1)] = m.group(2)
                k -= 1
            found.append((doc.relative_to(ROOT), i + 1, "\n".join(lines[i + 1:end]) + "\n", marks))
    return found


BLOCKS = python_blocks()


def test_every_block_is_run_or_says_why_not():
    skipped = [(str(doc), line, marks["no-run"]) for doc, line, _, marks in BLOCKS if "no-run" in marks]
    assert all(reason for _, _, reason in skipped)
    assert len(skipped) <= MAX_NO_RUN, f"{len(skipped)} blocks are marked no-run (at most {MAX_NO_RUN}): {skipped}"
    assert len(BLOCKS) - len(skipped) >= 6
    unknown = [marks["setup"] for _, _, _, marks in BLOCKS if marks.get("setup", next(iter(SETUPS))) not in SETUPS]
    assert not unknown, f"unknown set-ups {unknown}; known: {sorted(SETUPS)}"


@pytest.mark.parametrize("doc,line,code,marks", [b for b in BLOCKS if "no-run" not in b[3]],
                         ids=[f"{b[0]}:{b[1]}" for b in BLOCKS if "no-run" not in b[3]])
def test_python_block_runs_in_a_fresh_process_outside_the_checkout(doc, line, code, marks, tmp_path):
    work = SETUPS[marks["setup"]](tmp_path) if "setup" in marks else tmp_path
    script = tmp_path / "block.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, f"{doc}:{line}\n{proc.stderr[-3000:]}"
    allowed = SETUP_LOG_LINES.get(marks.get("setup", ""))
    noise = [ln for ln in proc.stderr.splitlines() if not (allowed and ln.startswith(allowed))]
    assert not noise, f"{doc}:{line} wrote to stderr:\n{proc.stderr[-3000:]}"
