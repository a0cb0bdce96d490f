"""Fresh virtual environments that see only chosen distributions of the running interpreter's site-packages.

Installing torch, FBGEMM and TorchRec again in a test would download gigabytes, so a fresh environment
reuses the installed ones: a directory of symbolic links to exactly the files of the chosen distributions
and of everything they require (read from their metadata), put on the new interpreter's path by a
``.pth`` file. Whatever is not in that closure stays invisible, so a package that imports something it
does not declare fails there as it would for a user.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

try:
    from packaging.requirements import Requirement
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement

import torch

SITE = Path(torch.__file__).resolve().parents[1]
"""The site-packages that holds the installed torch stack (and everything else of the test environment)."""

TORCH_STACK = ("torch", "fbgemm-gpu-cpu", "torchrec")
NOT_FOLLOWED = ("fbgemm-gpu",)
"""torchrec's metadata names the CUDA fbgemm-gpu; the CPU stack installs fbgemm-gpu-cpu instead."""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(site: Path = SITE) -> Dict[str, importlib.metadata.Distribution]:
    """``{normalised name: distribution}`` of ``site``."""
    return {_key(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(site)])}


def closure(roots: Iterable[str], extras: Sequence[str] = (), site: Path = SITE,
            requirements: Sequence[str] = ()) -> List[importlib.metadata.Distribution]:
    """The distributions ``roots`` and ``requirements`` (requirement strings, with ``extras`` active) need,
    recursively, as installed in ``site``; raises when one is not installed there."""
    dists = installed(site)
    out: Dict[str, importlib.metadata.Distribution] = {}
    todo = [(r, tuple(extras)) for r in requirements] + [(name, ()) for name in roots]
    while todo:
        text, active = todo.pop()
        req = Requirement(text)
        envs = [{"extra": e} for e in (*active, "")]
        if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
            continue
        key = _key(req.name)
        if key in NOT_FOLLOWED:
            continue
        if key not in dists:
            raise LookupError(f"{req.name} (needed: {text}) is not installed in {site}")
        if key in out:
            continue
        out[key] = dists[key]
        todo += [(r, tuple(req.extras)) for r in dists[key].requires or ()]
    return list(out.values())


def link_distributions(dists: Iterable[importlib.metadata.Distribution], dest: Path, site: Path = SITE) -> Path:
    """Symbolic links in ``dest`` to every top-level file or package directory of ``dists`` (their RECORD)."""
    dest.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        if not dist.files:
            raise LookupError(f"{dist.metadata['Name']} in {site} lists no files (no RECORD): cannot link it")
        for top in {Path(f).parts[0] for f in dist.files}:
            if top == ".." or (dest / top).exists():
                continue
            (dest / top).symlink_to(site / top)
    return dest


def fresh_venv(path: Path, shared: Optional[Path] = None) -> Path:
    """A new virtual environment without pip (``pip --python`` installs into it) whose interpreter also
    sees ``shared``; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    if shared is not None:
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        (Path(purelib) / "_shared_site.pth").write_text(f"{shared}\n")
    return python


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment for a process that must not see the source tree or this machine's pip settings:
    no PYTHONPATH, no PIP_* variables (index URLs, find-links), pip's configuration files off."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env
