"""`recsys-emb --version`, `--help` and every subcommand's `--help` import nothing heavy (not torch, TorchRec,
numpy or pandas): the property that keeps them well under a second (bench/cli_startup.py measures the
time; a test asserts only what is loaded, never how long it took)."""

import subprocess
import sys

from recsys_emb.benchmarks.cli_startup import help_commands
from waiting import HANG_GUARD_S

PROBE = """
import contextlib, io, sys
from recsys_emb.cli import build_parser
for argv in {commands!r}:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(list(argv))
        except SystemExit as e:
            assert e.code == 0, (argv, e.code)
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""

HEAVY = {"torch", "torchrec", "fbgemm_gpu", "numpy", "pandas", "pyarrow", "optuna", "sklearn", "scipy"}


def test_version_and_every_help_load_nothing_heavy():
    commands = help_commands()
    assert ("export", "--help") in commands and ("generate", "criteo-like", "--help") in commands
    proc = subprocess.run([sys.executable, "-c", PROBE.format(commands=commands)], capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(proc.stdout.split())
    assert "recsys_emb" in loaded and not loaded & HEAVY, sorted(loaded & HEAVY)
