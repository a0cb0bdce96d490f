"""The package as pip users get it: the wheel's metadata, and the wheel installed with its extras into a fresh
virtual environment beside the installed CPU torch / FBGEMM / TorchRec, running README.md's example from
outside the source tree. Also: pins, ranges, the changelog and the version agree."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from venv_helpers import TORCH_STACK, clean_env, closure, fresh_venv, link_distributions

from recsys_emb.version import __version__
from waiting import HANG_GUARD_S

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = ("plot", "postgres")


def _pip(*args, cwd, timeout=HANG_GUARD_S):
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, cwd=cwd,
                          env=clean_env(), timeout=timeout)
    assert proc.returncode == 0, f"pip {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built from a copy of the package (the source tree gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "recsys_emb", src / "recsys_emb", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    # the build uses this environment's setuptools: nothing is downloaded
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src), cwd=src)
    (path,) = dist.glob("recsys_emb-*.whl")
    return path


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(z.read(meta).decode()), names


def test_wheel_metadata_says_what_it_needs(wheel):
    meta, names = _metadata(wheel)
    assert meta["Version"] == __version__ and wheel.name.startswith(f"recsys_emb-{__version__}-py3-none-any")
    assert meta["Requires-Python"] == ">=3.11"
    assert "recsys_emb/py.typed" in names
    # the configs ship in the wheel (`recsys-emb config`, `--config NAME` from any directory)
    configs = ROOT / "recsys_emb" / "configs"
    shipped = sorted(n.removeprefix("recsys_emb/configs/") for n in names if n.startswith("recsys_emb/configs/"))
    assert shipped == sorted(p.relative_to(configs).as_posix() for p in configs.rglob("*.yaml"))
    assert "demo.yaml" in shipped and "schemas/avazu.yaml" in shipped
    assert not [n for n in names if not n.startswith(("recsys_emb/", f"recsys_emb-{__version__}.dist-info/"))]
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    base = {r.name for r in requires if r.marker is None}
    assert base == {"numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "optuna", "PyYAML", "tqdm"}
    assert not {"torch", "torchrec", "fbgemm-gpu", "fbgemm-gpu-cpu", "pytest", "mypy"} & base
    assert set(meta.get_all("Provides-Extra")) == {"plot", "postgres", "ray", "test"}
    by_extra = {e: {r.name for r in requires if r.marker is not None and r.marker.evaluate({"extra": e})}
                for e in ("plot", "postgres", "ray", "test")}
    assert by_extra["plot"] == {"matplotlib"} and by_extra["postgres"] == {"psycopg2-binary"}
    assert by_extra["ray"] == {"ray"}
    assert {"pytest", "mypy", "recsys_emb"} <= by_extra["test"]
    with zipfile.ZipFile(wheel) as z:
        (entry,) = [n for n in names if n.endswith("entry_points.txt")]
        assert "recsys-emb = recsys_emb.cli:main" in z.read(entry).decode()


def test_wheel_installs_with_its_extras_and_runs_the_readme_example_outside_the_tree(wheel, tmp_path):
    meta, _ = _metadata(wheel)
    # The new environment sees the torch stack and what the wheel declares (with its extras), nothing else:
    # an undeclared import fails here as it would for a user.
    needed = closure(TORCH_STACK, extras=EXTRAS, requirements=meta.get_all("Requires-Dist"))
    python = fresh_venv(tmp_path / "venv", link_distributions(needed, tmp_path / "shared"))
    # --no-index: every requirement of the wheel and its extras must already be met by what it sees
    _pip("--python", str(python), "install", "--no-index", "--no-cache-dir", f"{wheel}[{','.join(EXTRAS)}]", cwd=tmp_path)

    readme = (ROOT / "README.md").read_text()
    (example,) = re.findall(r"## Thirty seconds in Python\s+```python\n(.*?)```", readme, flags=re.S)
    script = tmp_path / "example.py"
    script.write_text(example + "\nimport recsys_emb\nprint('from', recsys_emb.__file__, recsys_emb.__version__)\n")
    run = subprocess.run([str(python), str(script)], capture_output=True, text=True, cwd=tmp_path, env=clean_env(),
                         timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "MiB" in run.stdout and "torch.Size([2, 48])" in run.stdout
    where = run.stdout.split("from ")[-1].split()
    assert Path(where[0]).is_relative_to(tmp_path / "venv") and where[1] == __version__
    assert run.stderr == "", run.stderr[-3000:]  # no warning on a plain import and forward

    cli = subprocess.run([str(tmp_path / "venv" / "bin" / "recsys-emb"), "--version"], capture_output=True,
                         text=True, cwd=tmp_path, env=clean_env(), timeout=HANG_GUARD_S)
    assert cli.returncode == 0 and cli.stdout.strip() == f"recsys-emb {__version__}", cli.stderr[-3000:]

    # the configs by name, from a directory without any: listed, printed, and loaded by name
    recsys_emb_cli = str(tmp_path / "venv" / "bin" / "recsys-emb")
    listed = subprocess.run([recsys_emb_cli, "config", "list"], capture_output=True, text=True, cwd=tmp_path,
                            env=clean_env(), timeout=HANG_GUARD_S)
    assert listed.returncode == 0 and listed.stdout.startswith("demo "), listed.stderr[-3000:]
    shown = subprocess.run([recsys_emb_cli, "config", "show", "demo"], capture_output=True, text=True, cwd=tmp_path,
                           env=clean_env(), timeout=HANG_GUARD_S)
    assert shown.returncode == 0 and shown.stdout == (ROOT / "configs" / "demo.yaml").read_text(), shown.stderr[-3000:]
    check = ("from recsys_emb.config import load_config\n"
             "a, b = load_config('configs/demo.yaml'), load_config('demo')\n"
             "assert a == b and a.name == 'demo-dlrm-unified', a\n"
             "import recsys_emb.config as c\nprint(c.resolve_config('demo'))\n")
    loaded = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path, env=clean_env(),
                            timeout=HANG_GUARD_S)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert Path(loaded.stdout.strip()).is_relative_to(tmp_path / "venv") and not (tmp_path / "configs").exists()


def test_pins_lie_in_the_declared_ranges():
    """requirements.txt (what `make` installs and the tests run on) satisfies pyproject.toml's ranges, and
    every declared dependency and extra is pinned there."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version.strip()
    project = PYPROJECT["project"]
    declared = list(project["dependencies"]) + [r for e in EXTRAS for r in project["optional-dependencies"][e]]
    for text in declared:
        req = Requirement(text)
        assert req.name.lower() in pins, f"{req.name} is declared but not pinned in requirements.txt"
        assert req.specifier.contains(pins[req.name.lower()]), f"{req.name}=={pins[req.name.lower()]} is outside {req}"
    assert set(pins) == {Requirement(t).name.lower() for t in declared}
    assert not [n for n in pins if n in ("pytest", "mypy", "torch", "torchrec")]
    # the [ray] extra is pinned with the test tools (`make test` installs it; `make demo` does not need it)
    (ray,) = [r for r in (ROOT / "requirements-test.txt").read_text().splitlines() if r.startswith("ray==")]
    (declared_ray,) = project["optional-dependencies"]["ray"]
    assert Requirement(declared_ray).specifier.contains(ray.split("==")[1]), (ray, declared_ray)
    assert "recsys_emb[plot,postgres,ray]" in project["optional-dependencies"]["test"]


def test_python_range_is_the_same_everywhere():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"
    assert "Python 3.11" in (ROOT / "README.md").read_text()
    assert "(3, 11)" in (ROOT / "Makefile").read_text()
    assert 'PYTHON:-python3.11' in (ROOT / ".ci" / "run").read_text()
    assert sys.version_info >= (3, 11)


def test_changelog_names_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    first = re.search(r"^## (\S+)", text, flags=re.M)
    assert first and first.group(1) == __version__
