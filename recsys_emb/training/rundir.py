"""A run's output directory: held by one process at a time, never mixed with an earlier run, resumed
only by the run that wrote it.

* **Lock.** The process that trains (rank 0) holds an exclusive ``fcntl`` lock on ``<out_dir>/.lock``
  for the run's life and writes its pid, host and command into it; the operating system releases the
  lock on any exit, a kill included. A second run on the same directory is refused, naming the holder.
  A lock file that still names a holder but is not locked was left by a process that died: it is
  taken over, and the takeover is logged with what it names.
* **Reuse.** A new run refuses a directory that holds an earlier run's results unless it resumes it
  (``--resume``) or replaces it (``--overwrite``, which removes those results and nothing else: a
  directory that also holds a file no run wrote, at any depth, is refused whole, naming the file).
* **Fingerprint.** Everything that changes the trained model (the config without its cadence, logging
  and placement keys, the dataset's identity, the library version) is recorded in ``run.json`` and in
  every checkpoint; ``--resume`` refuses a checkpoint whose fingerprint differs, naming the keys.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

from recsys_emb.config import RunConfig, config_to_dict
from recsys_emb.data.outdir import foreign_files, make_parent_dirs
from recsys_emb.errors import ConfigError, OutputDirError
from recsys_emb.families import family_options
from recsys_emb.presets import LEGACY_OPTION_KEYS
from recsys_emb.version import __version__

__all__ = ["RunDirectory", "RUN_FILES", "RUN_PATHS", "LOGS_DIR", "run_fingerprint", "fingerprint_differences",
           "migrate_fingerprint", "data_identity"]

logger = logging.getLogger(__name__)

RUN_FILES = ("checkpoints", "metrics.jsonl", "summary.json", "run.json", "model")
"""What a run writes into its directory (besides the lock): what ``--overwrite`` removes."""

LOGS_DIR = "logs"
"""The launcher's per-rank logs (``--nproc``, :class:`~recsys_emb.training.launch.RankLogs`), one folder per
launch: written before rank 0 opens the directory, so neither a result (a directory holding only logs is
unused) nor removed by ``--overwrite`` (the current launch is writing into it)."""

CHECKPOINT_PATHS: Tuple[str, ...] = (
    "latest", ".latest.tmp",
    *(f"step_*/{name}" for name in (".metadata", ".metadata.tmp", "__*.distcp", "__*.metadata", "__*.metadata.tmp",
                                    "rng_rank*.pt", "dense_optimizer.pt", "trainer.json", "manifest.json",
                                    ".manifest.json.tmp")))
"""What a run writes under ``checkpoints/`` (``fnmatch`` patterns): the ``latest`` pointer and every
``step_N`` checkpoint's files (torch.distributed.checkpoint's ``.metadata`` and ``__R_I.distcp`` shards,
the random generator and dense optimizer states, ``trainer.json``, the manifest) with their temporaries."""

RUN_PATHS: Tuple[str, ...] = (
    *(f"checkpoints/{p}" for p in CHECKPOINT_PATHS),
    "metrics.jsonl", ".metrics.jsonl.tmp", "summary.json", ".summary.json.tmp", "run.json", ".run.json.tmp",
)
"""Every path a run writes besides ``model/`` (``fnmatch`` patterns, temporaries of a killed run included):
what ``--overwrite`` may remove (:func:`~recsys_emb.data.outdir.foreign_files`)."""

_NOT_MODEL_KEYS = {
    "name", "train.epochs", "train.max_steps", "train.eval_every", "train.checkpoint_every", "train.log_every", "train.out_dir", "train.progress",
    "train.threads", "train.sharding_types", "train.device", "train.keep_last", "train.early_stopping",
    "train.pipeline",
    "data.num_workers",
    "data.eval_batch_size", "data.path", "data.generate",
}
"""Config keys that do not change the trained model: how long to train and when to stop (a resume may
extend a run), cadence, logging, placement, and where the data is (its identity is fingerprinted from its
metadata)."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k not in ("dims", "overrides", "early_stopping"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_fingerprint(cfg: RunConfig, metadata: Mapping[str, Any]) -> Dict[str, Any]:
    """What determines the trained model: ``{dotted config key: value}`` without the keys that do not
    (:data:`_NOT_MODEL_KEYS`), plus ``data.identity`` (a hash of the dataset's metadata: its files, rows,
    vocabularies) and ``library.version``.

    Example:
        >>> from recsys_emb.config import config_from_dict
        >>> fp = run_fingerprint(config_from_dict({"data": {"path": "d"}}), {"rows": {"total": 10}})
        >>> fp["seed"], "train.log_every" in fp, len(fp["data.identity"])
        (0, False, 64)
    """
    data = config_to_dict(cfg)
    # the chosen variant's family options, defaults included (the knobs its tables were sized with)
    data["embeddings"]["options"] = family_options(cfg.embeddings.variant, cfg.embeddings.options)
    flat = {k: v for k, v in _flatten(data).items() if k not in _NOT_MODEL_KEYS}
    # whether the model has DLRM's first-order term, as built: ``auto`` follows the training rows, so on
    # large data it is the same run as ``false`` (and as a run written before the key existed)
    flat["model.linear"] = cfg.model.linear_for(_train_rows(metadata))
    flat["data.identity"] = data_identity(metadata)
    flat["library.version"] = __version__
    return flat


def data_identity(metadata: Mapping[str, Any]) -> str:
    """A hash of a dataset's metadata (its files, rows, vocabularies), without how long preprocessing
    took: equal for the same data, whatever run or benchmark reads it.

    Example:
        >>> data_identity({"rows": {"total": 10}, "seconds": 1.5}) == data_identity({"rows": {"total": 10}})
        True
    """
    volatile = {"seconds"}  # how long preprocessing took: the same data either way
    canonical = json.dumps({k: v for k, v in metadata.items() if k not in volatile}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _train_rows(metadata: Mapping[str, Any]) -> Optional[int]:
    """The training split's rows as the metadata declares them, else as its file list counts them (None:
    neither says)."""
    rows = metadata.get("rows")
    train = rows.get("train") if isinstance(rows, Mapping) else None
    if train is not None:
        return int(train)
    files = metadata.get("files")
    shards = files.get("train") if isinstance(files, Mapping) else None
    return sum(int(f["rows"]) for f in shards) if shards else None


def migrate_fingerprint(saved: Mapping[str, Any]) -> Dict[str, Any]:
    """A fingerprint of an earlier version in today's keys. One written before the families' knobs moved
    into ``embeddings.options``: the saved variant's family options become ``embeddings.options.<name>``,
    the other families' knobs (which did not size its tables) are dropped. One written before
    ``model.linear`` existed gets ``model.linear: False``: it trained without the first-order term.

    Example:
        >>> migrate_fingerprint({"embeddings.variant": "qr", "embeddings.qr_op": "mult", "embeddings.chunks": 1,
        ...                      "model.kind": "dlrm"})
        {'embeddings.variant': 'qr', 'model.kind': 'dlrm', 'model.linear': False, 'embeddings.options.qr_op': 'mult'}
    """
    legacy = [f"embeddings.{k}" for k in LEGACY_OPTION_KEYS]
    migrated = dict(saved)
    if "model.kind" in migrated and "model.linear" not in migrated:
        migrated["model.linear"] = False
    if not any(k in saved for k in legacy):
        return migrated
    out = {k: v for k, v in migrated.items() if k not in legacy}
    try:
        mine = family_options(str(saved.get("embeddings.variant")), {})
    except ConfigError:
        return migrated
    for name in mine:
        if f"embeddings.{name}" in saved:
            out[f"embeddings.options.{name}"] = saved[f"embeddings.{name}"]
    return out


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """``key: saved -> current`` for every key whose value differs (or exists on one side only); a saved
    fingerprint of an earlier version is read in today's keys first (:func:`migrate_fingerprint`)."""
    saved = migrate_fingerprint(saved)
    keys = sorted(set(saved) | set(current))
    missing = object()
    return [f"{k}: {saved.get(k, missing)!r} -> {current.get(k, missing)!r}".replace(repr(missing), "(unset)")
            for k in keys if saved.get(k, missing) != current.get(k, missing)]


class RunDirectory:
    """The output directory of one run, held exclusively from :meth:`open` to :meth:`close`.

    Args:
        path: the run's ``train.out_dir``.
        model_files: the names a model directory holds
            (:data:`recsys_emb.model_dir.MODEL_DIR_ENTRIES`): what ``--overwrite`` may remove from
            ``model/`` (and from the temporaries of a killed write of it), besides :data:`RUN_PATHS`.

    Example:
        >>> import tempfile
        >>> d = RunDirectory(tempfile.mkdtemp())
        >>> d.open(resume=False, overwrite=False)
        >>> d.used()
        False
        >>> d.close()
    """

    def __init__(self, path: os.PathLike, model_files: Collection[str] = ()) -> None:
        self.path = Path(path)
        self.model_files = tuple(model_files)
        self._fh: Optional[Any] = None

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def used(self) -> bool:
        """Whether an earlier run left results here."""
        return any((self.path / name).exists() for name in RUN_FILES)

    def open(self, resume: bool, overwrite: bool) -> None:
        """Take the lock, then check the directory for a new run (refused if used, unless ``overwrite``)
        or for ``resume``. Nothing is removed here: with ``overwrite`` the earlier run stays until
        :meth:`replace_earlier_run`, which the trainer calls once every check that can fail before
        training has passed."""
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: resume continues the run in "
                              f"{self.path}, overwrite replaces it; pass one")
        if self.path.exists() and not self.path.is_dir():
            raise OutputDirError(f"train.out_dir={str(self.path)!r} is a file, not a directory; remove it or set "
                                 "another train.out_dir")
        make_parent_dirs(self.path / ".lock")  # a parent that is a file is named, not a FileExistsError
        self._lock()
        try:
            if not overwrite and not resume and self.used():
                found = sorted(name for name in RUN_FILES if (self.path / name).exists())
                raise OutputDirError(
                    f"{self.path} holds an earlier run ({', '.join(found)}); a new run would mix with it. Pass "
                    f"--resume to continue it, --overwrite to replace it, or set another train.out_dir")
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        fh = open(self.lock_path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutputDirError(f"{self.path} is in use by {holder}; wait for that run to end, or set another "
                                 f"train.out_dir") from None
        fh.seek(0)
        stale = fh.read().strip()
        if stale:  # the lock is ours, so whoever wrote this is gone
            logger.warning("%s: taking over the lock left by %s, which ended without releasing it", self.path, stale)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                 f"({' '.join(sys.argv)[:200]})\n")
        fh.flush()
        self._fh = fh

    def owned_paths(self) -> List[str]:
        """What ``--overwrite`` may remove, as ``fnmatch`` path patterns: :data:`RUN_PATHS`, the model
        directory's files (also in the temporaries of a killed write of it), the lock and the launcher's logs
        (these two are kept)."""
        model = [f"{d}/{name}" for d in ("model", ".model.partial-*", ".model.old-*") for name in self.model_files]
        return [*RUN_PATHS, *model, ".lock", f"{LOGS_DIR}/**"]

    def replace_earlier_run(self) -> None:
        """``--overwrite``: remove the earlier run's results (held under the lock taken by :meth:`open`)."""
        if self._fh is None:
            raise RuntimeError(f"{self.path}: replace_earlier_run() before open()")
        self._clear()

    def _clear(self) -> None:
        others = foreign_files(self.path, self.owned_paths())
        if others:
            raise OutputDirError(f"--overwrite: {self.path} also holds {others}, which no run wrote; it is not "
                                 f"replaced. Move them, or set another train.out_dir")
        for p in self.path.iterdir():
            if p.name in (LOGS_DIR, ".lock"):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        logger.info("--overwrite: removed the earlier run's results from %s", self.path)

    def close(self) -> None:
        """Release the lock. The lock file stays, emptied: a lock file with a holder in it that nobody
        locks was left by a process that died."""
        if self._fh is None:
            return
        try:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.flush()
        finally:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def write_run_json(self, cfg: RunConfig, fingerprint: Mapping[str, Any]) -> None:
        """Record what this run is (config and fingerprint) when it starts."""
        data = {"config": config_to_dict(cfg), "fingerprint": dict(fingerprint)}
        tmp = self.path / ".run.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path / "run.json")

    def read_metrics(self) -> List[Dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (none if it is absent). A last line that is not whole JSON (a
        write cut short by a kill or a full disk) is left out with a warning; any other line that is not a
        JSON object is corruption.

        Raises:
            OutputDirError: naming ``metrics.jsonl:LINE`` and the fix.

        Example:
            >>> import tempfile
            >>> d = RunDirectory(tempfile.mkdtemp())
            >>> _ = (d.path / "metrics.jsonl").write_text('{"step": 5, "loss": 0.5}\\n{"step": 10, "lo')
            >>> d.read_metrics()
            [{'step': 5, 'loss': 0.5}]
        """
        return [row for _, row in self._metrics_lines()]

    def _metrics_lines(self) -> List[Tuple[str, Dict[str, Any]]]:
        """``(line, row)`` of every whole row of ``metrics.jsonl`` (:meth:`read_metrics`)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(errors="replace").splitlines()
        rows: List[Tuple[str, Dict[str, Any]]] = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("step", 0), int):
                rows.append((line, row))
            elif i == len(lines) and row is None:
                logger.warning("%s:%d is cut short (%r): the write of that row did not finish (a kill or a full "
                               "disk); it is dropped", path, i, line[:80])
            else:
                raise OutputDirError(f"{path}:{i} is not a metrics row ({line[:80]!r}): the file is corrupt. Remove "
                                     f"that line (or the file: it is a log, the checkpoints do not need it) and "
                                     f"resume again")
        return rows

    def trim_metrics(self, step: int) -> int:
        """Drop the ``metrics.jsonl`` rows logged after ``step`` (a resumed run logs them again) and a last
        row cut short (:meth:`read_metrics`); returns how many rows were dropped."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return 0
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        kept = [ln for ln, row in self._metrics_lines() if row.get("step", 0) <= step]
        if len(kept) != len(lines) or not path.read_bytes().endswith(b"\n"):
            tmp = self.path / ".metrics.jsonl.tmp"
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, path)
        return len(lines) - len(kept)
