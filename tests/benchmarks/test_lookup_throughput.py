"""`recsys-emb bench lookup --quick`: the single-device kernel benchmark runs and reports every model next
to the per-field nn.EmbeddingBag baseline (format only; speed is for bench/, never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stack_shim import HIDDEN, hidden_stack_env, loaded_modules
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_the_baseline_and_each_variant(tmp_path):
    out, readme = tmp_path / "res.json", tmp_path / "README.md"
    readme.write_text("# DLRM\n")
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "lookup", "--quick", "--device", "cpu",
                           "--json", str(out), "--readme", str(readme)], capture_output=True, text=True, cwd=ROOT,
                          timeout=HANG_GUARD_S, env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    names = [r["model"] for r in res["results"]]
    assert names == ["per_field_embedding_bag", "full", "unified", "hashed"]
    assert res["results"][0]["ratio_to_baseline"] == 1.0
    by = {r["model"]: r for r in res["results"]}
    assert by["full"]["params"] == by["per_field_embedding_bag"]["params"] > by["unified"]["params"]
    assert all(r["samples_per_s"] > 0 for r in res["results"])
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["model", "samples/s", "ratio", "params"]
    assert [line.split()[0] for line in lines[2:]] == names
    text = readme.read_text()
    assert "<!-- lookup_cpu:begin -->" in text and "per_field_embedding_bag" in text
    assert "bench/lookup_throughput.py --quick" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_refused():
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "bench", "lookup", "--device", "cuda"],
                          capture_output=True, text=True, cwd=ROOT, timeout=HANG_GUARD_S,
                          env={**os.environ, "RECSYS_EMB_NO_REEXEC": "1"})
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr


def test_the_script_runs_on_torch_alone_as_on_the_gpu_machines_image(tmp_path):
    """TorchRec, FBGEMM and Optuna hidden (absent from the lent GPU machines' image): the quick run still
    measures every model, and no process of it loaded any of the three."""
    env, report = hidden_stack_env(tmp_path)
    out = tmp_path / "res.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "lookup_throughput.py"), "--device", "cpu", "--quick",
                           "--json", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD_S,
                          env={**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{ROOT}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [r["model"] for r in res["results"]] == ["per_field_embedding_bag", "full", "unified", "hashed"]
    loaded = loaded_modules(report)
    assert {"torch", "recsys_emb"} <= loaded and not loaded & set(HIDDEN)
