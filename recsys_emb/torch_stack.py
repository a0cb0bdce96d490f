"""The PyTorch stack under recsys_emb (torch, FBGEMM, TorchRec), checked where TorchRec is first needed.

The package cannot declare these three as dependencies: the CPU and CUDA builds come from different
package indexes, and TorchRec's metadata names the CUDA ``fbgemm-gpu`` even next to a CPU torch, so they
are installed first, in order (README.md, "Install").

``import recsys_emb`` and the torch-only core (specs, hashing, remap plans, the combine program, the
table-batched kernel and an :class:`~recsys_emb.layer.EmbeddingLayer` built on ``meta`` for it) need
torch and numpy alone. Every module that imports TorchRec calls :func:`require_torch_stack` first, so the
first use of a TorchRec-backed part without a working set fails there, with one
:class:`~recsys_emb.errors.TorchStackError` (an ``ImportError``) that names what is missing or mismatched,
the versions found and the commands that install a matching set, instead of a bare
``ModuleNotFoundError`` or a failed shared-library load somewhere inside TorchRec.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from typing import Dict, Optional

from recsys_emb.errors import TorchStackError

__all__ = ["TESTED", "INSTALL_COMMANDS", "check_torch_stack", "require_torch_stack", "stack_problem", "cuda_problem", "cuda_install_command"]

TESTED: Dict[str, str] = {"torch": "2.13", "fbgemm_gpu": "1.8", "torchrec": "1.8"}
"""The release series the library is tested with (``make`` installs exactly these)."""

_TORCH_OF_FBGEMM: Dict[str, str] = {"1.8": "2.13"}
"""FBGEMM release -> the torch release its kernels are built against (FBGEMM's compatibility table;
fbgemm_gpu carries the full table, read from it when it loads)."""

INSTALL_COMMANDS = """\
Install a matching set first, then recsys_emb (README.md, section "Install"):
  CPU:
    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    pip install fbgemm-gpu-cpu==1.8.0 tensordict torchmetrics pyre-extensions
    pip install --no-deps torchrec==1.8.0
  CUDA 12.8:
    pip install torch==2.13.0 fbgemm-gpu==1.8.0 --index-url https://download.pytorch.org/whl/cu128
    pip install torchrec==1.8.0"""
"""Shown with every :class:`~recsys_emb.errors.TorchStackError`; the same commands as README.md's table."""


def _series(version: str) -> Optional[str]:
    """``"2.13.0+cpu"`` -> ``"2.13"``; ``None`` for a nightly (dated) or local build, which is not judged."""
    m = re.match(r"(\d{1,2})\.(\d+)(\.\d+)*([+]cpu|[+]cu\d+|[+]rocm[\d.]+)?$", version)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _installed(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _found() -> str:
    parts = []
    for dist in ("torch", "fbgemm-gpu-cpu", "fbgemm-gpu", "torchrec"):
        version = _installed(dist)
        if version is not None or dist in ("torch", "torchrec"):
            parts.append(f"{dist} {version or 'not installed'}")
    if not any(p.startswith("fbgemm") for p in parts):
        parts.insert(1, "fbgemm-gpu(-cpu) not installed")
    return ", ".join(parts)


def stack_problem(torch_version: str, fbgemm_version: str, torchrec_version: str,
                  torch_of_fbgemm: Optional[Dict[str, str]] = None) -> Optional[str]:
    """What is mismatched between the three versions, or ``None`` when they belong together.

    TorchRec and FBGEMM are released in pairs of the same ``major.minor``; each FBGEMM release is built
    against one torch release (``torch_of_fbgemm``, default the tested pair; a release missing from it is
    not judged, nor are nightly or local builds).

    Example:
        >>> stack_problem("2.13.0+cpu", "1.8.0", "1.8.0") is None
        True
        >>> stack_problem("2.12.1", "1.8.0", "1.8.0")
        'fbgemm_gpu 1.8.0 is built for torch 2.13, not torch 2.12.1'
    """
    table = {**_TORCH_OF_FBGEMM, **(torch_of_fbgemm or {})}
    torch_series, fbgemm_series, torchrec_series = map(_series, (torch_version, fbgemm_version, torchrec_version))
    wanted_torch = table.get(fbgemm_series) if fbgemm_series else None
    if wanted_torch is not None and torch_series is not None and torch_series != wanted_torch:
        return f"fbgemm_gpu {fbgemm_version} is built for torch {wanted_torch}, not torch {torch_version}"
    if fbgemm_series and torchrec_series and torchrec_series != fbgemm_series:
        return f"torchrec {torchrec_version} goes with fbgemm_gpu {torchrec_series}.x, not fbgemm_gpu {fbgemm_version}"
    return None


def _fail(problem: str) -> TorchStackError:
    tested = f"torch {TESTED['torch']} + fbgemm-gpu(-cpu) {TESTED['fbgemm_gpu']} + torchrec {TESTED['torchrec']}"
    return TorchStackError(f"recsys_emb needs torch, FBGEMM and TorchRec in versions that load together "
                           f"(tested: {tested}): {problem}. Found: {_found()}.\n{INSTALL_COMMANDS}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


class _FxTracingNotice(logging.Filter):
    """Drops the one record torch 2.13 logs (once per process, on ``torch.fx._symbolic_trace``) that its
    ``is_fx_tracing()`` now means symbolic tracing or export: torch's own ``ProxyableClassMeta`` calls it
    when the first KeyedJaggedTensor is built, so every user of TorchRec saw it and none can act on it.
    Every other record of that logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("is_fx_tracing will return true for both fx.symbolic_trace")


_FX_LOGGER = logging.getLogger("torch.fx._symbolic_trace")
if not any(isinstance(f, _FxTracingNotice) for f in _FX_LOGGER.filters):
    _FX_LOGGER.addFilter(_FxTracingNotice())


def check_torch_stack() -> Dict[str, str]:
    """Import torch, fbgemm_gpu and torchrec and check that their versions belong together.

    Returns:
        ``{"torch": version, "fbgemm_gpu": version, "torchrec": version}``.

    Raises:
        TorchStackError: (an ``ImportError``) one of them is missing, fails to load, or does not match the
            others; the message has the versions found and the install commands for CPU and CUDA.

    Example:
        >>> sorted(check_torch_stack())
        ['fbgemm_gpu', 'torch', 'torchrec']
    """
    try:
        import torch
    except ImportError as e:  # torch's own import errors (a broken install) land here too
        missing = getattr(e, "name", None) == "torch"
        raise _fail("torch is not installed" if missing
                    else f"torch fails to import ({_first_line(e)})") from (None if missing else e)
    if _installed("fbgemm-gpu") and _installed("fbgemm-gpu-cpu"):
        raise _fail("both fbgemm-gpu (CUDA) and fbgemm-gpu-cpu are installed, into the same fbgemm_gpu package "
                    "(installing torchrec with its dependencies adds the CUDA one); uninstall both and "
                    f"reinstall the one that matches torch {torch.__version__}")
    try:
        import fbgemm_gpu
    except Exception as e:  # a kernel library that does not load raises OSError or RuntimeError, not ImportError
        missing = getattr(e, "name", None) == "fbgemm_gpu"
        raise _fail("fbgemm_gpu is not installed" if missing
                    else f"fbgemm_gpu does not load next to torch {torch.__version__} ({_first_line(e)})"
                    ) from (None if missing else e)
    try:
        import torchrec
    except Exception as e:
        missing = getattr(e, "name", None) == "torchrec"
        raise _fail("torchrec is not installed" if missing
                    else f"torchrec does not import ({_first_line(e)})") from (None if missing else e)
    versions = {"torch": str(torch.__version__),
                "fbgemm_gpu": str(getattr(fbgemm_gpu, "__version__", None) or _installed("fbgemm-gpu-cpu")
                                  or _installed("fbgemm-gpu")),
                "torchrec": str(getattr(torchrec, "__version__", None) or _installed("torchrec"))}
    problem = stack_problem(versions["torch"], versions["fbgemm_gpu"], versions["torchrec"],
                            getattr(fbgemm_gpu, "_fbgemm_torch_compat_table", None))
    if problem is not None:
        raise _fail(problem)
    return versions


_CHECKED: Optional[Dict[str, str]] = None


def require_torch_stack() -> Dict[str, str]:
    """:func:`check_torch_stack` once per process (a passed check is remembered; a failed one raises again):
    what a module that imports TorchRec calls before it does.

    Raises:
        TorchStackError: as :func:`check_torch_stack`.

    Example:
        >>> require_torch_stack() is require_torch_stack()
        True
    """
    global _CHECKED
    if _CHECKED is None:
        _CHECKED = check_torch_stack()
    return _CHECKED


def cuda_install_command(cuda_version: Optional[str]) -> str:
    """The commands that replace the CPU set by the tested CUDA set, for PyTorch's CUDA ``cuda_version``
    (``torch.version.cuda``; ``None`` for a CPU torch: the tested CUDA 12.8, README.md's table).

    Example:
        >>> cuda_install_command("12.6").split(" && ")[1]
        'pip install torch==2.13.0 fbgemm-gpu==1.8.0 --index-url https://download.pytorch.org/whl/cu126'
    """
    tag = "cu" + (cuda_version or "12.8").replace(".", "")
    return (f"pip uninstall -y fbgemm-gpu-cpu && pip install torch=={TESTED['torch']}.0 fbgemm-gpu=={TESTED['fbgemm_gpu']}.0 "
            f"--index-url https://download.pytorch.org/whl/{tag} && pip install torchrec=={TESTED['torchrec']}.0")


def cuda_problem(fbgemm_kernels: bool = True) -> Optional[str]:
    """Why training on CUDA cannot run with this install, with the fix; ``None`` when it can.

    Checks what is installed and loaded, not what is wanted: FBGEMM's build variant
    (``fbgemm_gpu.__variant__``; ``cpu`` for fbgemm-gpu-cpu, whose kernels TorchRec cannot shard on
    GPUs; checked when ``fbgemm_kernels``), whether torch is a CUDA build, and whether it sees a GPU.

    Example:
        >>> cuda_problem() is None or "pip install" in cuda_problem() or "no GPU" in cuda_problem()
        True
    """
    import fbgemm_gpu
    import torch

    cuda = torch.version.cuda
    fix = f"install the CUDA set ({cuda_install_command(cuda)})"
    variant = str(getattr(fbgemm_gpu, "__variant__", "")).lower()
    if fbgemm_kernels and (variant == "cpu" or _installed("fbgemm-gpu-cpu")):
        version = getattr(fbgemm_gpu, "__version__", None) or _installed("fbgemm-gpu-cpu")
        return f"fbgemm_gpu {version} is FBGEMM's CPU build (fbgemm-gpu-cpu), without the CUDA kernels; {fix}"
    if cuda is None:
        return f"torch {torch.__version__} is a CPU build; {fix}"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {cuda}) sees no GPU (check the driver with nvidia-smi and "
                f"CUDA_VISIBLE_DEVICES)")
    return None
