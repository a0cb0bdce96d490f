"""bench/device_kit.sh (downloading needs a registry, so not run here; docs/performance.md lists what it
fetched for torch 2.11 / Python 3.12): its table of releases agrees with FBGEMM's own table and with the
tested pins, and a torch it has no entry for, or missing arguments, stop it before any download."""

import re
import subprocess

import fbgemm_gpu

from bench_helpers import ROOT
from waiting import HANG_GUARD_S

KIT = ROOT / "bench" / "device_kit.sh"


def kit_table():
    """``{torch series: (fbgemm series, tensordict series)}`` from the script's case statement."""
    rows = re.findall(r"^\s*(\d+\.\d+)\) FBGEMM=(\d+\.\d+); TENSORDICT=(\d+\.\d+) ;;", KIT.read_text(), re.M)
    return {torch: (fbgemm, tensordict) for torch, fbgemm, tensordict in rows}


def test_the_kit_pairs_torch_and_fbgemm_as_fbgemm_does_and_the_tested_set_as_pinned():
    table = kit_table()
    assert "2.11" in table and "2.13" in table
    compat = fbgemm_gpu._fbgemm_torch_compat_table  # {fbgemm series: torch series}, from the installed FBGEMM
    for torch_series, (fbgemm_series, _) in table.items():
        if fbgemm_series in compat:
            assert compat[fbgemm_series] == torch_series, (torch_series, fbgemm_series)
    pins = dict(re.findall(r"^([a-z-]+)==(\d+\.\d+)", (ROOT / "requirements-torch.txt").read_text(), re.M))
    assert table[pins["torch"]] == (pins["fbgemm-gpu-cpu"], pins["tensordict"])


def test_an_unknown_torch_or_missing_arguments_stop_before_any_download(tmp_path):
    proc = subprocess.run(["bash", str(KIT), "2.9", "3.12"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and "no FBGEMM release is known for torch 2.9" in proc.stderr
    proc = subprocess.run(["bash", str(KIT)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 2 and "usage: bash bench/device_kit.sh TORCH_VERSION PYTHON_VERSION" in proc.stderr
