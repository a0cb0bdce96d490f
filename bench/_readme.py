"""Writing a benchmark's result block into a README between ``<!-- NAME:begin -->`` / ``<!-- NAME:end -->``."""

from __future__ import annotations

from pathlib import Path


def write_section(readme: Path, marker: str, body: str, title: str) -> None:
    """Replace the text between the markers (re-reading the file first: other scripts write it too);
    append ``title`` and a new block at the end when the markers are absent."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = readme.read_text() if readme.exists() else ""
    if begin in text and end in text and text.index(begin) < text.index(end):
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    else:
        text = (text.rstrip() + "\n\n" if text else "") + f"{title}\n\n{block}\n"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(text)
