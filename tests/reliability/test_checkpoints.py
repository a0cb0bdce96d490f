"""Checkpoints: a truncated, bit-flipped or replaced file is refused with the file named, a resume falls
back to the newest intact checkpoint, and no file the library loads can run code."""

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from recsys_emb.config import config_from_dict
from recsys_emb.errors import CheckpointError
from recsys_emb.serving import load_model
from recsys_emb.training import prepare_data, train
from recsys_emb.training.checkpoint import MANIFEST, write_manifest, intact_checkpoint, verify_checkpoint

MARKER = "payload-ran"


class Payload:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, where):
        self.where = str(where)

    def __reduce__(self):
        return (Path.touch, (Path(self.where),))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ckpt")
    cfg = config_from_dict({
        "name": "c", "seed": 0,
        "data": {"path": str(base / "cl"), "generate": {"kind": "criteo-like", "rows": 20000, "scale": 0.001, "seed": 0},
                 "batch_size": 256},
        "model": {"kind": "dlrm", "bottom_mlp": [16, 8], "top_mlp": [16]},
        "embeddings": {"variant": "qr", "dim": 8, "min_rows": 64},
        "train": {"max_steps": 40, "checkpoint_every": 20, "log_every": 0, "progress": False,
                  "out_dir": str(base / "run")}})
    prepare_data(cfg)
    summary = train(cfg)
    return {"cfg": cfg, "dir": base / "run", "summary": summary}


def copy_run(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run["dir"], out)
    cfg = config_from_dict({**json.loads((out / "run.json").read_text())["config"]})
    cfg.train.out_dir = str(out)
    cfg.train.max_steps = 60
    return cfg, out


def test_every_checkpoint_has_a_manifest_of_its_files(run):
    ckpt = run["dir"] / "checkpoints" / "step_00000040"
    files = json.loads((ckpt / MANIFEST).read_text())["files"]
    assert set(files) == {p.name for p in ckpt.iterdir() if p.name != MANIFEST}
    assert {"trainer.json", "dense_optimizer.pt", "rng_rank0.pt", ".metadata"} <= set(files)
    verify_checkpoint(ckpt)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_checkpoint_is_refused_and_resume_falls_back(run, tmp_path, damage, caplog):
    cfg, out = copy_run(run, tmp_path)
    latest = out / "checkpoints" / "step_00000040"
    target = next(p for p in latest.iterdir() if p.name.endswith(".distcp"))
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:100] + bytes([data[100] ^ 0x10]) + data[101:])
    else:
        target.unlink()
    want = {"truncate": "truncated or altered", "flip": "does not match its sha256", "delete": "is missing"}[damage]
    with pytest.raises(CheckpointError, match=rf"{target.name}.*{want}"):
        load_model(latest)
    assert intact_checkpoint(out) == out / "checkpoints" / "step_00000020"
    caplog.set_level("WARNING", logger="recsys_emb.training.checkpoint")
    summary = train(cfg, resume=True)  # from step 20, saying so
    assert summary["steps"] == 60
    assert "the newest intact checkpoint" in caplog.text and "step_00000040" in caplog.text


def test_a_trainer_json_altered_to_the_same_size_is_refused_and_resume_falls_back(run, tmp_path):
    # trainer.json holds the run's config and position: an edit that keeps its size (seed 0 -> 1) would
    # load silently unless its sha256 is checked
    cfg, out = copy_run(run, tmp_path)
    latest = out / "checkpoints" / "step_00000040"
    text = (latest / "trainer.json").read_text()
    assert '"seed": 0' in text
    (latest / "trainer.json").write_text(text.replace('"seed": 0', '"seed": 1', 1))
    with pytest.raises(CheckpointError, match=r"trainer.json does not match its sha256"):
        load_model(latest)
    assert intact_checkpoint(out) == out / "checkpoints" / "step_00000020"


@pytest.mark.parametrize("name", ["dense_optimizer.pt", "rng_rank0.pt"])
def test_a_pickled_payload_never_runs(run, tmp_path, name):
    cfg, out = copy_run(run, tmp_path)
    ckpt = out / "checkpoints" / "step_00000040"
    marker = tmp_path / MARKER
    torch.save({"state": Payload(marker)}, ckpt / name, _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError, match=rf"{name} (has \d+ bytes|does not match its sha256)"):
        verify_checkpoint(ckpt)
    write_manifest(ckpt)  # a forger rewrites the manifest too: the loader still does not unpickle
    if name == "dense_optimizer.pt":
        with pytest.raises(CheckpointError, match="dense_optimizer.pt is not a tensors-only file"):
            train(cfg, resume=True)
    else:
        train(cfg, resume=True)  # the generators' state is skipped, with a warning
    assert not marker.exists()
    assert pickle.loads(pickle.dumps(Payload(marker))) is None and marker.exists()  # the payload is real
