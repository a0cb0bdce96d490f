"""Training checkpoints: model and fused-optimizer state through torch.distributed.checkpoint (any world
size loads any checkpoint), the dense optimizer, every rank's random number generators, and the position
in the data, so a killed run resumes exactly."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from recsys_emb.config import RunConfig, config_to_dict
from recsys_emb.errors import ConfigError
from recsys_emb.specs import FeatureSpec

__all__ = ["Position", "checkpoint_dir", "latest_checkpoint", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state", "seed_everything", "check_same_features"]

logger = logging.getLogger(__name__)


@dataclass
class Position:
    """Where a run is: optimizer steps taken, epoch, and batches of this epoch consumed (per rank)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's generators (what a run does before building its model)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}"


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    """The run's latest complete checkpoint (its ``latest`` pointer is written last), or None."""
    marker = Path(out_dir) / "checkpoints" / "latest"
    return marker.parent / marker.read_text().strip() if marker.exists() else None


def _state(model: nn.Module) -> Dict[str, Any]:
    # The dense optimizer is saved beside (torch.save): a fresh Adam's state_dict has no entries
    # yet, and DCP only loads keys the target already has.
    return {"model": model.state_dict(), "fused": model.fused_optimizer.state_dict()}


def save_checkpoint(model: nn.Module, dense_optimizer: torch.optim.Optimizer, out_dir: Path, pos: Position,
                    cfg: RunConfig, features: List[FeatureSpec], rank: int = 0, world_size: int = 1) -> Path:
    """Write ``<out_dir>/checkpoints/step_<N>`` (every rank calls it) and point ``latest`` at it."""
    path = checkpoint_dir(out_dir, pos.step)
    dcp.save(_state(model), checkpoint_id=str(path))
    torch.save(rng_state(), path / f"rng_rank{rank}.pt")
    if rank == 0:  # dense parameters are replicated: one copy of their optimizer state
        torch.save(dense_optimizer.state_dict(), path / "dense_optimizer.pt")
    if world_size > 1:
        dist.barrier()
    if rank == 0:
        meta = {"step": pos.step, "epoch": pos.epoch, "batch_in_epoch": pos.batch_in_epoch, "world_size": world_size,
                "config": config_to_dict(cfg), "features": [f.to_dict() for f in features]}
        (path / "trainer.json").write_text(json.dumps(meta, indent=1))
        (Path(out_dir) / "checkpoints" / "latest").write_text(path.name)  # written last: the checkpoint is whole
    return path


def load_checkpoint(path: Path, model: nn.Module, dense_optimizer: torch.optim.Optimizer,
                    features: List[FeatureSpec], rank: int = 0, world_size: int = 1) -> Position:
    """Load a checkpoint into a model built like the one that wrote it; returns its position. The random
    number generators are restored when the world size is the one that saved them."""
    meta = json.loads((path / "trainer.json").read_text())
    check_same_features(meta.get("features"), [f.to_dict() for f in features], path)
    state = _state(model)
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"])
    model.fused_optimizer.load_state_dict(state["fused"])
    dense_optimizer.load_state_dict(torch.load(path / "dense_optimizer.pt", weights_only=False))
    rng = path / f"rng_rank{rank}.pt"
    if meta["world_size"] == world_size and rng.exists():
        set_rng_state(torch.load(rng, weights_only=False))
    pos = Position(meta["step"], meta["epoch"], meta["batch_in_epoch"])
    logger.info("resumed from %s at step %d", path, pos.step)
    return pos


def check_same_features(saved: Optional[List[Dict[str, Any]]], current: List[Dict[str, Any]], path: Path) -> None:
    """Refuse to resume a checkpoint into other tables: a changed embedding setting (or a default that
    changed between versions) would otherwise surface as a shape error deep inside the checkpoint load."""
    if saved is None or saved == current:
        return
    was = {f["name"]: f for f in saved}
    now = {f["name"]: f for f in current}
    if list(was) != list(now):
        detail = f"the checkpoint has features {list(was)}, this config {list(now)}"
    else:
        name = next(n for n in now if was[n] != now[n])
        detail = f"feature {name!r} was {was[name]}, this config builds {now[name]}"
    raise ConfigError(
        f"--resume: checkpoint {path} holds other embedding tables than this config builds: {detail}. Set the "
        f"embeddings settings the run was trained with (its whole config is in {path / 'trainer.json'}; settings "
        f"left out take the current defaults, e.g. embeddings.qr_op and embeddings.num_blocks), or train into a new "
        f"train.out_dir.")
