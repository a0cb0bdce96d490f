"""An interpreter in which TorchRec, FBGEMM and Optuna look absent: a ``sitecustomize`` whose import hook
raises ``ModuleNotFoundError`` for them, as Python does for a package that is not installed (the lent GPU
machines' image has none of the three). The environment carries over to child processes, and each
process appends the top-level modules it loaded to a report file when it exits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Set, Tuple

HIDDEN = ("torchrec", "fbgemm_gpu", "optuna")

_SITECUSTOMIZE = '''
import atexit, os, sys

_HIDDEN = {hidden!r}


class _Absent:
    """A meta path finder that answers for the hidden packages as an absent package does."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Absent())


@atexit.register
def _report():
    with open(os.environ["STACK_SHIM_REPORT"], "a") as f:
        f.write(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})) + "\\n")
'''


def hidden_stack_env(tmp_path: Path) -> Tuple[Dict[str, str], Path]:
    """``(environment, report file)`` for a subprocess that cannot import :data:`HIDDEN`."""
    shim = tmp_path / "stack_shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(hidden=HIDDEN))
    report = tmp_path / "stack_shim_loaded.txt"
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "STACK_SHIM_REPORT": str(report)}, report


def loaded_modules(report: Path) -> Set[str]:
    """The top-level modules every process under the shim loaded (they all ran: the report exists)."""
    assert report.exists(), "no process under the import shim reported its modules"
    return {name for line in report.read_text().splitlines() for name in line.split()}
