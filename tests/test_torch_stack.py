"""torch / FBGEMM / TorchRec are checked where TorchRec is first needed: `import recsys_emb` succeeds without
them, and the first TorchRec-backed part used then fails with one ImportError that names what is missing or
mismatched and the install commands (real interpreters that lack a piece of the stack, and an import shim
that hides TorchRec, FBGEMM and Optuna from the test environment's interpreter)."""

import subprocess
import sys
from pathlib import Path

import pytest

from recsys_emb.errors import RecsysEmbError, TorchStackError
from recsys_emb.torch_stack import INSTALL_COMMANDS, check_torch_stack, cuda_install_command, cuda_problem, stack_problem
from stack_shim import HIDDEN, hidden_stack_env, loaded_modules
from venv_helpers import SITE, clean_env, closure, fresh_venv, link_distributions
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]

TRY_IMPORT = """
import recsys_emb, sys
print("imported", recsys_emb.__version__)
import recsys_emb.sharding
print("sharding imported")
"""


def test_the_installed_stack_passes_and_reports_its_versions():
    versions = check_torch_stack()
    assert versions["torch"].startswith("2.13.") and versions["fbgemm_gpu"].startswith("1.8.")
    assert versions["torchrec"].startswith("1.8.")


@pytest.mark.parametrize("torch_v, fbgemm_v, torchrec_v, problem", [
    ("2.13.0+cpu", "1.8.0", "1.8.0", None),
    ("2.13.1+cu128", "1.8.2", "1.8.0", None),
    ("2.12.1", "1.8.0", "1.8.0", "fbgemm_gpu 1.8.0 is built for torch 2.13, not torch 2.12.1"),
    ("2.13.0", "1.8.0", "1.7.1", "torchrec 1.7.1 goes with fbgemm_gpu 1.7.x, not fbgemm_gpu 1.8.0"),
    ("2.13.0", "INTERNAL", "1.8.0", None),  # a local FBGEMM build is not judged
    ("2.14.0.dev20260101+cpu", "2026.1.1", "2026.1.1", None),  # nor nightlies
])
def test_stack_problem_names_the_mismatch(torch_v, fbgemm_v, torchrec_v, problem):
    assert stack_problem(torch_v, fbgemm_v, torchrec_v) == problem


def test_fbgemm_pairs_beyond_the_tested_one_come_from_fbgemm():
    table = {"1.7": "2.12"}
    assert stack_problem("2.12.0", "1.7.0", "1.7.0", table) is None
    assert stack_problem("2.13.0", "1.7.0", "1.7.0", table) == "fbgemm_gpu 1.7.0 is built for torch 2.12, not torch 2.13.0"


def test_the_error_is_an_import_error_of_the_library():
    assert issubclass(TorchStackError, ImportError) and issubclass(TorchStackError, RecsysEmbError)


def test_readme_lists_the_same_install_commands():
    readme = (ROOT / "README.md").read_text()
    commands = [line.strip() for line in INSTALL_COMMANDS.splitlines() if line.strip().startswith("pip install")]
    assert len(commands) == 5
    for command in commands:
        assert f"`{command}`" in readme, f"README.md's install table lacks `{command}`"


def test_cuda_install_command_follows_torchs_cuda_and_the_readme_for_a_cpu_torch():
    readme = (ROOT / "README.md").read_text()
    # a CPU torch gets README.md's CUDA row (the tested CUDA 12.8 set)
    for command in cuda_install_command(None).split(" && ")[1:]:
        assert f"`{command}`" in readme, command
    assert "/whl/cu126 " in cuda_install_command("12.6")


def test_the_cuda_check_reads_the_installed_fbgemm_build():
    """The real installed FBGEMM, not a stand-in: its build variant decides."""
    import fbgemm_gpu
    import torch

    problem = cuda_problem()
    if fbgemm_gpu.__variant__ == "cpu":
        assert problem is not None and "is FBGEMM's CPU build (fbgemm-gpu-cpu)" in problem
        assert cuda_install_command(torch.version.cuda) in problem
    elif torch.cuda.is_available():
        assert problem is None
    # the table-batched kernel needs a CUDA torch and a GPU only
    assert (cuda_problem(fbgemm_kernels=False) is None) == torch.cuda.is_available()


def _import_in(tmp_path: Path, dists, torchrec_version=None):
    """``import recsys_emb`` (the source tree) in a fresh interpreter that sees only ``dists``' closure;
    ``torchrec_version``: the linked torchrec package reports this version instead (its version.py)."""
    shared = link_distributions(closure(dists), tmp_path / "shared")
    if torchrec_version is not None:
        (shared / "torchrec").unlink()
        (shared / "torchrec").mkdir()
        for entry in (SITE / "torchrec").iterdir():
            if entry.name not in ("version.py", "__pycache__"):
                (shared / "torchrec" / entry.name).symlink_to(entry)
        (shared / "torchrec" / "version.py").write_text(
            (SITE / "torchrec" / "version.py").read_text().replace("1.8.0", torchrec_version))
    python = fresh_venv(tmp_path / "venv", shared)
    return subprocess.run([str(python), "-c", TRY_IMPORT], capture_output=True, text=True, cwd=tmp_path,
                          env=clean_env(PYTHONPATH=str(ROOT)), timeout=HANG_GUARD_S)


def _assert_fails_with(proc, problem: str) -> None:
    """``import recsys_emb`` succeeded; the TorchRec-backed module after it failed with the install message."""
    assert proc.returncode != 0 and "imported" in proc.stdout and "sharding imported" not in proc.stdout
    last = proc.stderr[proc.stderr.index("recsys_emb.errors.TorchStackError"):]
    assert problem in last, proc.stderr[-3000:]
    assert "pip install fbgemm-gpu-cpu==1.8.0" in last and "--index-url https://download.pytorch.org/whl/cu128" in last
    assert 'README.md, section "Install"' in last


def test_import_without_fbgemm_names_it_and_the_commands(tmp_path):
    proc = _import_in(tmp_path, ["torch"])
    _assert_fails_with(proc, "fbgemm_gpu is not installed. Found: torch 2.13")


def test_import_without_torchrec_names_it(tmp_path):
    proc = _import_in(tmp_path, ["torch", "fbgemm-gpu-cpu"])
    _assert_fails_with(proc, "torchrec is not installed. Found: torch 2.13")


def test_import_with_a_torchrec_of_another_release_names_the_mismatch(tmp_path):
    proc = _import_in(tmp_path, ["torch", "fbgemm-gpu-cpu", "torchrec"], torchrec_version="1.7.0")
    _assert_fails_with(proc, "torchrec 1.7.0 goes with fbgemm_gpu 1.7.x, not fbgemm_gpu 1.8.0")


def test_import_without_torch_names_it(tmp_path):
    python = fresh_venv(tmp_path / "venv")
    use = 'import recsys_emb\nprint("imported")\nrecsys_emb.EmbeddingLayer\nprint("sharding imported")'
    proc = subprocess.run([str(python), "-c", use], capture_output=True, text=True, cwd=tmp_path,
                          env=clean_env(PYTHONPATH=str(ROOT)), timeout=HANG_GUARD_S)
    _assert_fails_with(proc, "torch is not installed. Found: torch not installed, fbgemm-gpu(-cpu) not installed, "
                             "torchrec not installed")



USE_WITHOUT_TORCHREC = """
import torch, recsys_emb
from recsys_emb.specs import FeatureSpec, Full, Hashed
specs = [FeatureSpec("a", Full(dim=4), cardinality=10), FeatureSpec("b", Hashed(dim=4, buckets=8))]
# the torch-only core: a layer on meta, its tables allocated by the table-batched kernel, plain-tensor input
layer = recsys_emb.EmbeddingLayer(specs, device=torch.device("meta"))
recsys_emb.TableBatched(layer, recsys_emb.EmbeddingOptimizer("sgd", lr=0.1), init_seed=0)
out = layer.embed([torch.tensor([1, 2, 3]), torch.tensor([-5, 7])], [torch.tensor([1, 2]), torch.tensor([1, 1])])
out.sum().backward()
print("core", tuple(out.shape))
try:
    recsys_emb.EmbeddingLayer(specs)  # tables on the CPU: a TorchRec collection
except recsys_emb.TorchStackError as e:
    print("layer refused:", str(e).replace(chr(10), " | "))
try:
    recsys_emb.kjt_from_lists({"a": [[1]]})
except ImportError as e:
    print("kjt refused:", type(e).__name__)
"""


def test_import_and_the_torch_only_core_work_without_torchrec_and_its_classes_name_the_install(tmp_path):
    env, report = hidden_stack_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", USE_WITHOUT_TORCHREC], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "core (2, 8)" in proc.stdout
    refused = proc.stdout.split("layer refused:")[1].splitlines()[0]
    assert "fbgemm_gpu is not installed" in refused and "pip install fbgemm-gpu-cpu==1.8.0" in refused
    assert "kjt refused: TorchStackError" in proc.stdout
    loaded = loaded_modules(report)
    assert "torch" in loaded and not loaded & set(HIDDEN)


def test_a_bare_import_loads_neither_torch_nor_torchrec(tmp_path):
    env, report = hidden_stack_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "import recsys_emb; print(recsys_emb.__version__, recsys_emb.Full)"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_GUARD_S)
    assert proc.returncode == 0 and "recsys_emb.specs.Full" in proc.stdout, proc.stderr[-3000:]
    loaded = loaded_modules(report)
    assert "recsys_emb" in loaded and not loaded & {"torch", "numpy", *HIDDEN}
