"""Throughput benchmarks (run them with ``recsys-emb bench ...`` or the scripts in ``bench/``)."""

from pathlib import Path
from typing import Callable, List, Optional, Sequence

__all__ = ["write_section", "quiet", "command_line", "publish", "interleaved_seconds"]


def quiet() -> None:
    """Benchmark scripts: warnings and TorchRec's planner chatter off, library warnings on stderr."""
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def interleaved_seconds(steps_of: Sequence[Callable[[int], None]], steps: int, rounds: int, warmup: int,
                        sync: Optional[Callable[[], None]] = None) -> List[float]:
    """Median seconds of ``steps`` steps for each run, the runs interleaved round by round so that
    machine noise hits them alike. ``steps_of[r](i)`` performs step ``i`` of run ``r``; ``sync``
    (e.g. ``torch.cuda.synchronize``) is called around every timed round."""
    import statistics
    import time

    sync = sync or (lambda: None)
    for step in steps_of:
        for i in range(warmup):
            step(i)
    sync()
    times: List[List[float]] = [[] for _ in steps_of]
    for _ in range(rounds):
        for r, step in enumerate(steps_of):
            sync()
            t0 = time.perf_counter()
            for i in range(steps):
                step(i)
            sync()
            times[r].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    """The command that reproduces a run, as written under its table."""
    import shlex
    import sys

    return " ".join([f".venv/bin/python {script}", *map(shlex.quote, list(sys.argv[1:] if argv is None else argv))])


def publish(text: str, readme: Optional[Path], marker: str, title: str) -> str:
    """Write a result table into ``readme``'s block (unless ``readme`` is None); returns the table for the
    caller (a script or the CLI) to print."""
    if readme is not None:
        write_section(readme, marker, text, title)
    return text


def write_section(readme: Path, marker: str, body: str, title: str) -> None:
    """Write a benchmark's result block into ``readme`` between ``<!-- marker:begin -->`` and
    ``<!-- marker:end -->``, replacing the old block (the file is re-read first: several scripts
    write into one README); append ``title`` and a new block at the end when the markers are absent.
    """
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
