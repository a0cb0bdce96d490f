"""Checkpoints written by an earlier version of the library (tests/fixtures/v0_checkpoints, made by
tests/fixtures/make_v0_checkpoints.py at commit "tests: v0 checkpoint fixtures") load and score as
they did then: every variant (DLRM) and the sequence layer (DIN)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_emb.data.batches import ParquetBatches
from recsys_emb.serving import load_model

FIXTURE = Path(__file__).parent / "fixtures" / "v0_checkpoints"


@pytest.mark.parametrize("run", ["dlrm", "din"])
def test_v0_checkpoint_scores_as_when_written(run, tmp_path, monkeypatch):
    work = tmp_path / "v0"
    shutil.copytree(FIXTURE, work)
    monkeypatch.chdir(work)  # the runs name their data by a path relative to where they trained
    model, features, data = load_model(Path("runs") / run)
    ds = ParquetBatches(data["path"], "test", batch_size=256)
    with torch.no_grad():
        logits = np.concatenate([model(b.dense, b.sparse).numpy() for b in ds])
    expected = np.load(Path("runs") / run / "expected_test_logits.npy")
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)
    kinds = {f.embedding.kind for f in features}
    assert kinds == ({"full", "hashed", "qr", "mixed", "unified"} if run == "dlrm" else {"full", "hashed"})
