"""A model directory from a source nobody vouches for: the manifest names only plain files inside the
directory, lists every file the loader reads, and the sizes model.json declares are checked against the
weights' header and the memory limit before anything is allocated. Real files; the CLI cases run
``recsys-emb predict`` in a subprocess (a name like ``/dev/zero`` or a FIFO used to hang it)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_emb.cli import main
from recsys_emb.errors import CheckpointError
from recsys_emb.model_dir import MANIFEST, load_model, save_model_dir
from recsys_emb.training.checkpoint import write_manifest

from test_model_dir import saved
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_dir(tmp_path):
    save_model_dir(saved(), tmp_path / "m")
    return tmp_path / "m"


def _manifest(d):
    return json.loads((d / MANIFEST).read_text())


def _write_manifest(d, doc):
    (d / MANIFEST).write_text(json.dumps(doc))


def _timeout(*_):
    raise TimeoutError("the load blocked for 60 s")


def _entry(path):
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def predict_cli(model, tmp_path, timeout=HANG_GUARD_S):
    """``recsys-emb predict`` in a subprocess: (exit code, stderr lines, whether a scores file was written)."""
    (tmp_path / "in.tsv").write_text("")
    env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", "predict", "--model", str(model), "--input",
                           str(tmp_path / "in.tsv"), "--out", str(tmp_path / "s.parquet")], capture_output=True,
                          text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stderr.strip().splitlines(), (tmp_path / "s.parquet").exists()


def test_manifest_names_that_leave_the_directory_or_are_not_files_are_refused(model_dir, tmp_path, capsys):
    """Before: ``/dev/zero`` (listed with 0 bytes, its size) and a FIFO were hashed forever (predict hung;
    ``/dev/zero`` runs in a subprocess, the FIFO under an alarm); a name outside the directory was read (its size told back in the message)."""
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef")
    os.mkfifo(model_dir / "pipe")
    (model_dir / "sub").mkdir()
    empty = {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    cases = {"/dev/zero": empty, "pipe": empty, str(secret): {"bytes": 0, "sha256": "0"},
             "../secret": {"bytes": 0, "sha256": "0"}, "sub/../../secret": _entry(secret),
             "sub": {"bytes": 0, "sha256": "0"}, ".": {"bytes": 0, "sha256": "0"}}
    good = _manifest(model_dir)
    for name, entry in cases.items():
        _write_manifest(model_dir, {"files": {**good["files"], name: entry}})
        if name == "/dev/zero":
            rc, err, wrote = predict_cli(model_dir, tmp_path, timeout=HANG_GUARD_S)
        else:
            signal.signal(signal.SIGALRM, _timeout)
            signal.alarm(int(HANG_GUARD_S))  # a hang guard: the FIFO used to block the open for ever
            try:
                rc = main(["predict", "--model", str(model_dir), "--input", str(tmp_path / "in.tsv"), "--out",
                           str(tmp_path / "s.parquet")])
            finally:
                signal.alarm(0)
            err, wrote = capsys.readouterr().err.strip().splitlines(), (tmp_path / "s.parquet").exists()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (name, err[-5:])
        assert not wrote
        if name in ("pipe", "sub"):
            assert "a model directory holds regular files only" in err[0], err
        else:
            assert f"lists {name!r}: a manifest lists plain file names inside the model directory" in err[0], err
        assert "16 bytes" not in err[0]  # nothing read outside the directory


def test_a_symlinked_file_is_not_followed_even_with_its_true_hash(model_dir, tmp_path):
    """Before: a symlink to a copy of the weights elsewhere loaded (its hash is right)."""
    outside = tmp_path / "elsewhere.pt"
    os.replace(model_dir / "weights.pt", outside)
    os.symlink(outside, model_dir / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights.pt is a symlink: .* symlinks are not followed"):
        load_model(model_dir)
    os.replace(model_dir / MANIFEST, tmp_path / "manifest.json")
    os.symlink(tmp_path / "manifest.json", model_dir / MANIFEST)
    with pytest.raises(CheckpointError, match=r"manifest.json is a symlink"):
        load_model(model_dir)


@pytest.mark.parametrize("files", [{}, "drop config.json", "drop counts.npz"])
def test_an_incomplete_manifest_is_refused(model_dir, files):
    """Before: ``{"files": {}}`` and a flipped bit in weights.pt loaded and scored. The loader reads only the
    files the manifest lists; each one it needs must be listed."""
    w = bytearray((model_dir / "weights.pt").read_bytes())
    w[len(w) // 2] ^= 0x10  # inside a table's data: torch still loads it, with a wrong weight
    (model_dir / "weights.pt").write_bytes(bytes(w))
    listed = _manifest(model_dir)["files"]
    if files == {}:
        _write_manifest(model_dir, {"files": {}})
        name = "model.json"
    else:
        name = files.split()[1]
        listed["weights.pt"] = _entry(model_dir / "weights.pt")  # the flipped weights, listed as they are now
        del listed[name]
        _write_manifest(model_dir, {"files": listed})
    with pytest.raises(CheckpointError, match=rf"manifest.json does not list {name}, which the model needs"):
        load_model(model_dir)


def test_a_manifest_of_the_wrong_shape_is_one_line(model_dir, capsys):
    """Before: ``{"files": []}`` was an AttributeError traceback."""
    for doc, what in [({"files": []}, "got list"), ([], "got NoneType"),
                      ({"files": {"weights.pt": {"bytes": "7", "sha256": "x"}}}, "must be")]:
        (model_dir / MANIFEST).write_text(json.dumps(doc))
        assert main(["predict", "--model", str(model_dir), "--input", "x.tsv", "--out", "s.parquet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and what in err[0], err


def _forge_cardinality(d, cardinality):
    doc = json.loads((d / "model.json").read_text())
    doc["features"][0]["cardinality"] = cardinality
    (d / "model.json").write_text(json.dumps(doc))
    write_manifest(d)  # a forger regenerates the manifest


def test_declared_sizes_are_checked_before_allocating(tmp_path):
    """Before: 3e8 rows allocated 9.8 GB for 35 s before the shape check refused them; 1e12 died with an
    allocator traceback. Now both are refused from model.json and the weights' header alone: the child's
    peak memory stays far below the table either declares."""
    dirs = []
    for cardinality in (300_000_000, 10**12):
        d = tmp_path / f"m{cardinality}"
        save_model_dir(saved(), d)
        _forge_cardinality(d, cardinality)
        dirs.append(str(d))
    code = ("import json, resource, sys\nfrom recsys_emb.model_dir import load_model\n"
            "from recsys_emb.errors import CheckpointError\nerrors = []\nfor d in sys.argv[1:]:\n    try:\n"
            "        load_model(d)\n        errors.append(None)\n    except CheckpointError as e:\n"
            "        errors.append(str(e))\n"
            "print(json.dumps({'errors': errors, 'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *dirs], capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for e in out["errors"]:
        assert e is not None and "refused before allocating" in e, out
    assert "more than the memory available now" in out["errors"][1]
    assert out["rss"] < 2 << 30, out  # the 9.6 GB table was never allocated


def test_a_stated_limit_refuses_a_model_larger_than_it(model_dir):
    assert load_model(model_dir, max_bytes=10 << 20) is not None
    with pytest.raises(CheckpointError, match=r"more than max_bytes \(1,000 bytes\) .* refused before allocating"):
        load_model(model_dir, max_bytes=1000)
