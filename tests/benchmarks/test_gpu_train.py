"""bench/gpu_train.py on the CPU (--device cpu --quick): the same `recsys-emb train` commands as the GPU
run, float32 and bf16 autocast, with the table-batched kernel (format and plumbing only; speed is never
asserted, and no GPU figure is written from a CPU run). bench/gpu_numbers.sh refuses to run without a GPU."""

import json
import subprocess

import pytest
import torch
from bench_helpers import ROOT, run_script

from recsys_emb.benchmarks.gpu_train import main
from waiting import HANG_GUARD_S


def test_quick_cpu_run_trains_both_precisions_with_the_table_batched_kernel(tmp_path):
    out = run_script("gpu_train.py", "--device", "cpu", "--quick", "--json", str(tmp_path / "res.json"),
                     "--out-dir", str(tmp_path / "work"))
    res = json.loads((tmp_path / "res.json").read_text())
    assert [r["mixed_precision"] for r in res["rows"]] == ["none", "bf16"]
    assert all(r["steps"] == 5 and r["samples_per_s"] > 0 and r["device"] == "cpu" for r in res["rows"])
    for precision in ("none", "bf16"):
        run = json.loads((tmp_path / "work" / f"run-{precision}" / "run.json").read_text())["config"]["train"]
        assert (run["embedding_backend"], run["mixed_precision"]) == ("table_batched", precision)
    rows = [line for line in out.splitlines() if line.startswith("| none") or line.startswith("| bf16")]
    assert len(rows) == 2 and "Command: `.venv/bin/python bench/gpu_train.py --device cpu --quick" in out


def test_a_cpu_or_quick_run_never_writes_the_gpu_block(tmp_path):
    for argv in (["--device", "cpu"], ["--quick"]):
        with pytest.raises(SystemExit, match="--readme holds a full CUDA run only"):
            main([*argv, "--readme", str(tmp_path / "README.md")])
    assert not (tmp_path / "README.md").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would measure")
def test_gpu_numbers_script_stops_without_a_gpu_before_any_benchmark():
    import sys

    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_numbers.sh")], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert proc.returncode == 1
    assert "no CUDA device is visible to PyTorch" in proc.stderr and "these are GPU figures" in proc.stderr
