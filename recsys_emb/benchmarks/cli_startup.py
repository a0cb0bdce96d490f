"""How long ``recsys-emb --version``, ``--help`` and every subcommand's ``--help`` take, start to exit, in
fresh processes: the wall time of each command against a bare interpreter (``python -c pass``) and
``python -c "import torch"`` (what a command that loaded the trainer's stack would pay at least), measured
in the same run, the commands interleaved round by round; the figure per command is the median round.

``--source DIR`` measures the package of another checkout (``python -m recsys_emb.cli`` started in
``DIR``, which Python puts first on the path), e.g. an older commit, with the same commands;
``--compare DIR`` measures both in the same rounds (the other checkout's rows marked ``[DIR's name]``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from recsys_emb.benchmarks.common import REPO, command_line, write_section

__all__ = ["help_commands", "run", "format_table", "main"]

QUICK = (("--version",), ("--help",), ("train", "--help"))
"""The commands of ``--quick`` (a format check)."""


def help_commands() -> List[Tuple[str, ...]]:
    """``--version``, ``--help`` and ``SUB [SUBSUB] --help`` for every (nested) subcommand of the CLI.

    Example:
        >>> cmds = help_commands()
        >>> cmds[:2], ("train", "--help") in cmds
        ([('--version',), ('--help',)], True)
    """
    from recsys_emb.cli import build_parser

    out: List[Tuple[str, ...]] = [("--version",), ("--help",)]

    def walk(parser: argparse.ArgumentParser, prefix: Tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append((*prefix, name, "--help"))
                    walk(sub, (*prefix, name))

    walk(build_parser(), ())
    return out


def _seconds(argv: Sequence[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return seconds


def run(commands: Sequence[Tuple[str, ...]], rounds: int = 5, source: Optional[Path] = None,
        compare: Optional[Path] = None) -> Dict[str, Any]:
    """Time every command (after one untimed warm-up round, which fills the file cache) in ``rounds``
    interleaved rounds next to the two references, in ``source``'s package and, when given, in
    ``compare``'s too; returns the settings and one row per command."""
    cwd = Path(source or REPO).resolve()
    other = Path(compare).resolve() if compare else None
    python = sys.executable
    rows: List[Tuple[str, List[str], Path]] = [("python -c pass", [python, "-c", "pass"], cwd),
                                               ("python -c 'import torch'", [python, "-c", "import torch"], cwd)]
    for c in commands:
        rows.append(("recsys-emb " + " ".join(c), [python, "-m", "recsys_emb.cli", *c], cwd))
        if other is not None:
            rows.append((f"recsys-emb {' '.join(c)} [{other.name}]", [python, "-m", "recsys_emb.cli", *c], other))
    times: List[List[float]] = [[] for _ in rows]
    for r in range(rounds + 1):
        for i, (_, argv, where) in enumerate(rows):
            seconds = _seconds(argv, where)
            if r:
                times[i].append(seconds)
    base = statistics.median(times[0])
    results = [{"command": name, "ms": round(1000 * statistics.median(t), 1),
                "ratio_to_bare_python": round(statistics.median(t) / base, 2)} for (name, _, _), t in zip(rows, times)]
    import platform

    return {"settings": {"rounds": rounds, "source": str(cwd), "compare": str(other) if other else None,
                         "python": platform.python_version()},
            "results": results}


def format_table(res: Dict[str, Any]) -> str:
    """The results as a text table (the references first)."""
    s = res["settings"]
    lines = [f"start to exit, median of {s['rounds']} interleaved rounds, Python {s['python']}",
             f"{'command':<56}{'ms':>10}{'x bare python':>15}"]
    for r in res["results"]:
        lines.append(f"{r['command']:<56}{r['ms']:>10,.0f}{r['ratio_to_bare_python']:>15.1f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``--json`` / ``--readme``; returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="1 round of --version, --help and train --help (format check)")
    p.add_argument("--source", default=None, help="checkout whose recsys_emb to start (default: this one)")
    p.add_argument("--compare", default=None, help="another checkout whose package runs the same commands in the same rounds")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--readme", default=None, help="also write the table into this file (docs/performance.md)")
    a = p.parse_args(argv)
    commands = list(QUICK) if a.quick else help_commands()
    res = run(commands, rounds=1 if a.quick else a.rounds, source=Path(a.source) if a.source else None,
              compare=Path(a.compare) if a.compare else None)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    table = format_table(res)
    if a.readme:
        body = f"```text\n{table}\n```\n\nCommand: `{command_line('bench/cli_startup.py', argv)}`"
        write_section(Path(a.readme), "cli_startup", body, "## Start-up of the command line")
    return table
