"""Training checkpoints: model and fused-optimizer state through torch.distributed.checkpoint (any world
size loads any checkpoint), the dense optimizer, every rank's random number generators, and the position
in the data, so a killed run resumes exactly.

A checkpoint is whole once its ``manifest.json`` (the sha256 and size of every file, written last) and
then the run's ``latest`` pointer are written. Loading checks every file against the manifest, so a
truncated or altered checkpoint is refused with the file named, and a resume falls back to the newest
intact checkpoint. Our own files load tensors-only (``torch.load(weights_only=True)``); DCP's
``.metadata`` is a pickle (torch's format), so a checkpoint is code you run: load only checkpoints you
trust (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import shutil
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from recsys_emb.config import RunConfig, config_to_dict
from recsys_emb.data.outdir import is_write_failure, save_file, write_error
from recsys_emb.errors import CheckpointError, ConfigError, RecsysEmbError
from recsys_emb.specs import FeatureSpec
from recsys_emb.training.rundir import fingerprint_differences

__all__ = ["Position", "checkpoint_dir", "latest_checkpoint", "intact_checkpoint", "verify_checkpoint",
           "save_checkpoint", "load_checkpoint", "load_weights", "prune_checkpoints", "reported_step", "rng_state", "set_rng_state", "seed_everything", "check_same_features",
           "MANIFEST", "sha256_file", "write_manifest", "verify_manifest", "open_regular", "read_regular_file", "dcp_load"]

MANIFEST = "manifest.json"

logger = logging.getLogger(__name__)


@dataclass
class Position:
    """Where a run is: optimizer steps taken, epoch, and batches of this epoch consumed (per rank)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def rng_state() -> Dict[str, Any]:
    """Torch's, NumPy's and Python's generator states as tensors and plain values (loadable with
    ``torch.load(weights_only=True)``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's generators (what a run does before building its model)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}"


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    """The checkpoint the run's ``latest`` pointer names (written after the checkpoint is whole), or None."""
    marker = Path(out_dir) / "checkpoints" / "latest"
    return marker.parent / marker.read_text().strip() if marker.exists() else None


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(path: Path) -> None:
    """Write ``path/manifest.json``: the size and sha256 of every file directly in ``path``."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(Path(path).iterdir()) if p.is_file() and p.name != MANIFEST}
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1))
    os.replace(tmp, path / MANIFEST)


def _manifest_entries(manifest: Path, what: str) -> Dict[str, Dict[str, Any]]:
    """``{name: {"bytes": int, "sha256": str}}`` of a manifest, each name a plain file name (no directory part,
    not ``.`` or ``..``); anything else is a :class:`~recsys_emb.errors.CheckpointError` naming the entry."""
    try:
        doc = json.loads(read_regular_file(manifest, what).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{manifest} is unreadable ({e}); the {what} is damaged") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        raise CheckpointError(f"{manifest}: 'files' must map each file name to its bytes and sha256, got "
                              f"{type(files).__name__}; the {what} is damaged")
    for name, want in files.items():
        if not name or name in (".", "..", MANIFEST) or "/" in name or "\\" in name or "\0" in name:
            raise CheckpointError(f"{manifest} lists {name!r}: a manifest lists plain file names inside the {what}, "
                                  "never a path, '.', '..' or itself; the manifest is forged or damaged")
        if (not isinstance(want, dict) or not isinstance(want.get("bytes"), int) or isinstance(want["bytes"], bool)
                or not isinstance(want.get("sha256"), str)):
            raise CheckpointError(f"{manifest}: the entry of {name!r} must be {{\"bytes\": int, \"sha256\": str}}, "
                                  f"got {want!r:.100}; the manifest is damaged")
    return files


def open_regular(path: Path, what: str) -> int:
    """A read-only descriptor of ``path`` if it is a regular file: a symlink (not followed), a device, a FIFO
    or a directory is a :class:`~recsys_emb.errors.CheckpointError` (opened non-blocking, so a FIFO never
    hangs the open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; the {what} is incomplete") from None
    except OSError as e:
        kind = "a symlink" if os.path.islink(path) else (e.strerror or str(e))
        raise CheckpointError(f"{path} is {kind}: a {what} holds regular files only, and symlinks are not "
                              "followed") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
        raise CheckpointError(f"{path} is {kind}: a {what} holds regular files only")
    return fd


def read_regular_file(path: Path, what: str = "directory", limit: int = 64 << 20) -> bytes:
    """The bytes of a small regular file (``manifest.json``), at most ``limit``, without following symlinks."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{path} is over {limit} bytes; a manifest is a few kB: the {what} is damaged")
    return data


def verify_manifest(path: Path, what: str = "checkpoint") -> List[str]:
    """Check every file ``path/manifest.json`` lists (present, a regular file and not a symlink, same size,
    same sha256); raise :class:`~recsys_emb.errors.CheckpointError` naming the first entry that is not a plain
    file name, or file that is missing, not a regular file, truncated or altered. ``what`` names the
    directory's kind in the messages (``"checkpoint"``, ``"model directory"``).

    Returns:
        The names the manifest lists (verified): what a loader may read, and all it may read.
    """
    manifest = Path(path) / MANIFEST
    if not manifest.exists() and not manifest.is_symlink():
        raise CheckpointError(f"{manifest} is missing: {path} is not a complete {what}")
    files = _manifest_entries(manifest, what)
    for name, want in files.items():
        f = Path(path) / name
        if not f.exists() and not f.is_symlink():
            raise CheckpointError(f"{f} is missing (listed in {manifest}); the {what} is incomplete")
        fd = open_regular(f, what)
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size != want["bytes"]:
                raise CheckpointError(f"{f} has {size} bytes, {manifest} lists {want['bytes']}: the file is "
                                      f"truncated or altered")
            h = hashlib.sha256()
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != want["sha256"]:
            raise CheckpointError(f"{f} does not match its sha256 in {manifest}: the file is corrupt or altered")
    return sorted(files)


def verify_checkpoint(path: Path) -> None:
    """Check every file of a checkpoint against its manifest; raise
    :class:`~recsys_emb.errors.CheckpointError` naming the first file that is missing, truncated or
    altered. A checkpoint without a manifest (written before manifests existed) is accepted unchecked,
    with a warning."""
    path = Path(path)
    if not (path / "trainer.json").exists() and not (path / MANIFEST).exists():
        raise CheckpointError(f"{path} is not a checkpoint (no trainer.json, no {MANIFEST})")
    if not (path / MANIFEST).exists():
        logger.warning("%s has no %s (written by an earlier version): its files are not verified", path, MANIFEST)
        return
    verify_manifest(path, "checkpoint")


def intact_checkpoint(out_dir: Path) -> Optional[Path]:
    """The newest checkpoint of a run that passes :func:`verify_checkpoint`: the ``latest`` one, else the
    newest intact ``step_*`` before it (each one skipped is logged with the reason); None if there is none."""
    ckpts = Path(out_dir) / "checkpoints"
    latest = latest_checkpoint(out_dir)
    candidates = sorted((p for p in ckpts.glob("step_*") if p.is_dir()), reverse=True) if ckpts.is_dir() else []
    if latest is not None:
        candidates = [latest] + [c for c in candidates if c.name < latest.name]
    for c in candidates:
        try:
            verify_checkpoint(c)
        except CheckpointError as e:
            logger.warning("skipping checkpoint %s: %s", c.name, e)
            continue
        if c != latest:
            logger.warning("resuming from %s, the newest intact checkpoint (the latest, %s, is not)", c,
                           latest.name if latest else "none")
        return c
    return None


@contextmanager
def _known_dcp_warnings() -> Iterator[None]:
    """Two warnings of torch 2.13's DCP that no caller can avoid, silenced here and nowhere else: its
    planner reads ``.device`` and ``.size()`` of TorchRec's sharded tables, which are ShardedTensors, whose
    every method warns that ShardedTensor is deprecated (TorchRec's DMP state dict still uses them); and a
    load without a process group warns that it assumes one process even when told so (``no_dist=True``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Please use DTensor instead and we are deprecating ShardedTensor",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized, "
                                "assuming the intent is to load in a single process", category=UserWarning)
        yield


def dcp_load(state: Dict[str, Any], path: Path, no_dist: bool = False) -> None:
    """``torch.distributed.checkpoint.load`` of ``state`` (in place) from checkpoint ``path``, without
    DCP's two unavoidable warnings (see ``_known_dcp_warnings``); ``no_dist``: one process, no group."""
    with _known_dcp_warnings():
        dcp.load(state, checkpoint_id=str(path), no_dist=no_dist)


def _state(model: nn.Module) -> Dict[str, Any]:
    # The dense optimizer is saved beside (torch.save): a fresh Adam's state_dict has no entries
    # yet, and DCP only loads keys the target already has.
    return {"model": model.state_dict(), "fused": _fused_optimizer(model).state_dict()}


def _fused_optimizer(model: nn.Module) -> Any:
    """The tables' fused optimizer (DistributedModelParallel and TableBatched both expose one)."""
    return model.fused_optimizer


def _os_error(error: BaseException) -> Optional[OSError]:
    """``error`` if it is an ``OSError``, else the first ``OSError`` a DCP ``CheckpointException`` wraps
    (its ``failures``: rank -> (exception, traceback)), else None."""
    if isinstance(error, OSError):
        return error
    for failure in (getattr(error, "failures", None) or {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, OSError):
            return inner
    return None


def save_checkpoint(model: nn.Module, dense_optimizer: torch.optim.Optimizer, out_dir: Path, pos: Position,
                    cfg: RunConfig, features: List[FeatureSpec], rank: int = 0, world_size: int = 1,
                    extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``<out_dir>/checkpoints/step_<N>`` (every rank calls it): the state, ``trainer.json`` (with
    ``extra``), the manifest, then the ``latest`` pointer."""
    path = checkpoint_dir(out_dir, pos.step)
    if rank == 0 and path.exists():
        # left by a save of this step that was cut off (a whole one is never saved again: the trainer
        # saves each step once, and a resume starts after the checkpoint it loaded)
        shutil.rmtree(path)
    if world_size > 1:
        dist.barrier()
    try:
        with _known_dcp_warnings():
            dcp.save(_state(model), checkpoint_id=str(path))
        save_file(torch.save, rng_state(), path / f"rng_rank{rank}.pt")
        if rank == 0:  # dense parameters are replicated: one copy of their optimizer state
            save_file(torch.save, dense_optimizer.state_dict(), path / "dense_optimizer.pt")
    except BaseException as e:  # noqa: BLE001 - DCP wraps OSErrors in a CheckpointException (a BaseException)
        cause = _os_error(e)
        if world_size > 1 or cause is None or isinstance(e, RecsysEmbError) or not is_write_failure(cause, out_dir):
            raise  # other ranks may still write into it; it has no manifest, so no resume takes it
        shutil.rmtree(path, ignore_errors=True)  # one process: nothing half-written stays behind
        raise write_error(path, cause, f"train (the checkpoint of step {pos.step}; `latest` still names the last "
                                       "whole one)") from e
    if world_size > 1:
        dist.barrier()
    if rank == 0:
        meta = {"step": pos.step, "epoch": pos.epoch, "batch_in_epoch": pos.batch_in_epoch, "world_size": world_size,
                "config": config_to_dict(cfg), "features": [f.to_dict() for f in features], **(extra or {})}
        (path / "trainer.json").write_text(json.dumps(meta, indent=1))
        write_manifest(path)
        marker = Path(out_dir) / "checkpoints" / "latest"
        tmp = marker.with_name(".latest.tmp")
        tmp.write_text(path.name)
        os.replace(tmp, marker)  # last: the checkpoint is whole
    return path


def load_checkpoint(path: Path, model: nn.Module, dense_optimizer: torch.optim.Optimizer,
                    features: List[FeatureSpec], rank: int = 0, world_size: int = 1,
                    fingerprint: Optional[Dict[str, Any]] = None) -> Position:
    """Load a checkpoint into a model built like the one that wrote it; returns its position. The files
    are verified against the manifest first; the random number generators are restored when the world
    size is the one that saved them. With ``fingerprint`` (:func:`~recsys_emb.training.rundir.run_fingerprint`
    of the resuming run), a checkpoint of another model (config, data or library version) is refused."""
    verify_checkpoint(path)
    meta = json.loads((path / "trainer.json").read_text())
    check_same_features(meta.get("features"), [f.to_dict() for f in features], path)
    if fingerprint is not None:
        check_same_run(meta.get("fingerprint"), fingerprint, path)
    state = _state(model)
    dcp_load(state, path)
    model.load_state_dict(state["model"])
    _fused_optimizer(model).load_state_dict(state["fused"])
    try:
        dense_state = torch.load(path / "dense_optimizer.pt", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path / 'dense_optimizer.pt'} is not a tensors-only file, so it is not loaded "
                              f"(unpickling it could run code): {str(e).splitlines()[0]}") from None
    dense_optimizer.load_state_dict(dense_state)
    rng = path / f"rng_rank{rank}.pt"
    rng_state = _load_rng(rng) if meta["world_size"] == world_size and rng.exists() else None
    if rng_state is not None:
        set_rng_state(rng_state)
    pos = Position(meta["step"], meta["epoch"], meta["batch_in_epoch"])
    logger.info("resumed from %s at step %d", path, pos.step)
    return pos


def _load_rng(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:  # an earlier version pickled NumPy's state: readable only unsafely
        logger.warning("%s holds random number generator state in an earlier, pickled format, which is not loaded "
                       "(unpickling can run code): the run resumes, but not bit for bit", path)
        return None


def load_weights(path: Path, model: nn.Module) -> None:
    """Load only a checkpoint's model state (verified) into ``model`` (sharded or not)."""
    verify_checkpoint(path)
    state = {"model": model.state_dict()}
    dcp_load(state, path)
    model.load_state_dict(state["model"])


def reported_step(out_dir: Path) -> Optional[int]:
    """The step of the model the run's ``summary.json`` reports (``model_step``), or None (no summary yet,
    or one without a step)."""
    try:
        step = json.loads((Path(out_dir) / "summary.json").read_text()).get("model_step")
    except (OSError, ValueError, AttributeError):
        return None
    return int(step) if isinstance(step, int) else None


def prune_checkpoints(out_dir: Path, keep_last: Optional[int], keep: Optional[int] = None) -> List[Path]:
    """Delete the run's step checkpoints older than the newest ``keep_last`` (``None``: keep all), never
    the one of step ``keep`` (the best), the one ``latest`` names, nor the one ``summary.json`` reports
    (a resumed run keeps the earlier result loadable until its own summary replaces it); returns what
    was deleted."""
    if keep_last is None:
        return []
    ckpts = sorted(p for p in (Path(out_dir) / "checkpoints").glob("step_*") if p.is_dir())
    protected = {checkpoint_dir(out_dir, step).name for step in (keep, reported_step(out_dir)) if step is not None}
    protected.add((latest_checkpoint(out_dir) or Path("")).name)
    doomed = [p for p in ckpts[:-keep_last] if p.name not in protected] if keep_last else []
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def check_same_run(saved: Optional[Dict[str, Any]], current: Dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint whose run fingerprint differs from the resuming run's."""
    if saved is None:
        logger.warning("%s records no run fingerprint (written by an earlier version): not compared", path)
        return
    diff = fingerprint_differences(saved, current)
    if diff:
        raise ConfigError(f"--resume: checkpoint {path} was trained by another run: {'; '.join(diff)}. Resume with "
                          f"the run's own settings (its config is in {path / 'trainer.json'}), or train anew with "
                          f"--overwrite or another train.out_dir")


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
        f"left out take the current defaults, e.g. embeddings.options.qr_op and embeddings.options.num_blocks), or train into a new "
        f"train.out_dir.")
