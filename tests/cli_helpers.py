"""``recsys-emb ARGS`` in the test's own process: the command's ``main`` with its standard output and error
captured, for tests whose subject is what a command prints, writes or refuses. Each process of the suite
that imports torch, FBGEMM and TorchRec spends seconds of CPU before doing anything; the tests whose
subject is the process itself (start-up, stderr free of import-time warnings, signals, standard input, the
launcher) still start one."""

import contextlib
import io
import logging
import subprocess

__all__ = ["recsys_here"]


def recsys_here(*args) -> subprocess.CompletedProcess:
    """Run ``recsys-emb ARGS`` through :func:`recsys_emb.cli.main` here; ``returncode`` is what ``main``
    returned (2 for a refused input, as the command's exit code), stdout and stderr the text it printed.
    An exception ``main`` lets through (a traceback in a real process) fails the test where it is raised.
    The root logger's handlers and level, which ``main`` replaces, are restored."""
    from recsys_emb.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess(["recsys-emb", *argv], code, out.getvalue(), err.getvalue())
