"""From a trained run to scores: load a checkpoint as an unsharded model, and score a split with it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from torch import nn

from recsys_emb.config import config_from_dict, migrate_config_dict
from recsys_emb.data.parquet import read_metadata, schema_from_metadata
from recsys_emb.errors import CheckpointError, DataError
from recsys_emb.specs import FeatureSpec
from recsys_emb.training.build import build_model, input_features
from recsys_emb.training.checkpoint import checkpoint_dir, dcp_load, latest_checkpoint, verify_checkpoint
from recsys_emb.training.metrics import score_split

__all__ = ["load_model", "evaluate_checkpoint", "resolve_checkpoint"]


def resolve_checkpoint(checkpoint: Union[str, os.PathLike]) -> Path:
    """A checkpoint directory as given; for a run directory, the model its ``summary.json`` reports (the
    best checkpoint under early stopping), else (a run still training, or killed) its latest checkpoint."""
    path = Path(checkpoint)
    if (path / "model.json").exists() and not (path / "trainer.json").exists():
        raise CheckpointError(f"{path} is a model directory, not a run or checkpoint; load it with "
                              f"recsys_emb.load_model({str(path)!r})")
    if (path / "trainer.json").exists():
        return path
    summary = path / "summary.json"
    if summary.exists():
        step = json.loads(summary.read_text()).get("model_step")
        if step is not None:
            reported = checkpoint_dir(path, int(step))
            if not (reported / "trainer.json").exists():
                raise CheckpointError(f"{path}: summary.json reports the model of step {step}, but {reported} is "
                                      f"missing; pass one of the run's checkpoints/step_* directories instead")
            return reported
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path} is neither a checkpoint (no trainer.json) nor a run directory with "
                              f"checkpoints (no checkpoints/latest)")
    return latest


def load_model(checkpoint: Union[str, os.PathLike]) -> Tuple[nn.Module, List[FeatureSpec], Dict[str, Any]]:
    """An unsharded model with a checkpoint's weights, for scoring in a ranking pipeline.

    Args:
        checkpoint: a checkpoint directory (``.../checkpoints/step_N``) or a run directory: the model its
            ``summary.json`` reports (``model_step``: the best checkpoint under early stopping), or, for a
            run that has not finished, its latest checkpoint. This needs the run's dataset (its schema,
            and its counts for mixed dimension); a self-contained model directory (``<run>/model``,
            ``recsys-emb export``) loads without it through :func:`recsys_emb.load_model`.
    Returns:
        ``(model, features, data_config)``: the model in eval mode (``model(dense, kjt) -> logits (B,)``),
        the feature specs it expects (KJT keys and vocabularies), and the run's data config (the dataset
        path, relative to where training ran). No process group is needed; any world size and either
        table backend that saved it works.

    Example::

        model, features, _ = load_model("runs/dlrm-criteo-like-full")
        logits = model(dense, kjt)
    """
    path = resolve_checkpoint(checkpoint)
    verify_checkpoint(path)
    meta = json.loads((path / "trainer.json").read_text())
    cfg = config_from_dict(migrate_config_dict(meta["config"]))
    data_dir = _data_dir(cfg.data.path, meta.get("data_dir"), path)
    cfg.data.path = str(data_dir)
    schema = schema_from_metadata(read_metadata(data_dir))
    model = build_model(cfg, schema, linear=bool(meta.get("linear", False)))  # a run without the key had none
    state = {"model": model.state_dict()}
    dcp_load(state, path, no_dist=True)
    model.load_state_dict(state["model"])
    model.eval()
    features = input_features(model)
    return model, features, {**meta["config"]["data"], "path": str(data_dir)}


def _data_dir(path: str, recorded: Any, checkpoint: Path) -> Path:
    """The run's dataset directory: ``data.path`` as configured (relative to where training ran), else
    the absolute path the checkpoint recorded."""
    for candidate in (Path(path), Path(recorded) if recorded else None):
        if candidate is not None and (candidate / "metadata.json").exists():
            return candidate
    where = f" (relative to the directory training ran in; here that is {Path.cwd() / path})" \
        if not Path(path).is_absolute() else ""
    also = f", nor at the recorded {recorded}" if recorded else ""
    raise DataError(f"{checkpoint}: the run's dataset data.path={path!r}{where} has no metadata.json{also}; run "
                    f"from the directory training ran in, or move the dataset back")


def evaluate_checkpoint(checkpoint: Union[str, os.PathLike], split: str = "test",
                        batch_size: int = 16384) -> Dict[str, Any]:
    """Metrics of a saved model on a split of its dataset (unsharded, one process)."""
    model, _, data = load_model(checkpoint)
    return score_split(model, data["path"], split, batch_size)
