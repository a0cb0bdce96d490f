"""``recsys-emb train`` with a batch larger than the training split (the command's main, in this process:
tests/cli_helpers.py): refused before training in one line (exit 2), nothing written, the run directory's
lock released."""

from pathlib import Path

from cli_helpers import recsys_here

from recsys_emb.config import config_from_dict
from recsys_emb.training import prepare_data

ROOT = Path(__file__).resolve().parents[2]


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
    data = tmp_path / "cl"
    prepare_data(config_from_dict({"data": {"path": str(data), "generate": {
        "kind": "criteo-like", "rows": 2000, "scale": 0.001, "seed": 0}}}))  # 1,600 training rows
    out = tmp_path / "run"
    proc = recsys_here("train", "--config", ROOT / "configs/demo.yaml", "--set", f"data.path={data}", "--set",
                       "data.batch_size=2048", "--set", f"train.out_dir={out}", "--set", "train.progress=false")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("error: data.batch_size=2048 gives no training step: the training split has 1,600 rows")
    assert errors[0].endswith("set data.batch_size to at most 1,600 (e.g. --set data.batch_size=64)")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no model, no run.json, no metrics
    assert (out / ".lock").read_text() == ""  # released: the next run takes the directory without a warning
