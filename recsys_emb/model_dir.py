"""A self-contained model directory: everything needed to score new data with a trained model, and
nothing that runs code when loaded.

A run's checkpoint needs the training dataset to be rebuilt (its schema, and for mixed dimension its
frequency counts) and holds DCP's pickled ``.metadata``. A model directory holds instead:

- ``weights.pt``: the unsharded model's state dict, plain tensors (``torch.load(weights_only=True)``);
- ``model.json``: the format, the resolved feature specs (mixed-dimension blocks included, so no counts
  are needed to rebuild), the dataset schema and facts (dense transform, OOV ids), and provenance
  (library, torch, TorchRec, FBGEMM versions, the git commit of the library's checkout when it has one,
  the command line, the checkpoint it came from);
- ``config.json``: the run config;
- ``vocab.npz`` / ``counts.npz``: the raw value -> id vocabulary of each field, where the dataset has one;
- ``manifest.json``: the size and sha256 of every file, checked on every load.

It is written at the end of training into ``<run>/model`` and by ``recsys-emb export``; it is read by
:func:`load_model` from any working directory, with the training data moved or deleted.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import nn

from recsys_emb.config import config_from_dict, migrate_config_dict
from recsys_emb.data.outdir import atomic_output_dir, check_not_over_inputs, save_file
from recsys_emb.data.parquet import TableSchema, read_metadata
from recsys_emb.data.vocabulary import COUNTS_FILE, VOCAB_FILE, Vocabulary, load_vocabulary, save_vocabularies
from recsys_emb.errors import CheckpointError, ConfigError, RecsysEmbError, UnknownVariantError
from recsys_emb.serving import load_model as load_checkpoint_model, resolve_checkpoint
from recsys_emb.spec_io import specs_from_dicts
from recsys_emb.specs import FeatureSpec
from recsys_emb.training.build import build_model
from recsys_emb.training.build import check_model_fits
from recsys_emb.training.checkpoint import MANIFEST, open_regular, read_regular_file, verify_manifest, write_manifest
from recsys_emb.version import __version__

__all__ = ["SavedModel", "load_model", "model_from_checkpoint", "save_model_dir", "load_model_dir",
           "export_model", "EXPORT_FORMATS", "is_model_dir", "MODEL_FORMAT", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]

MODEL_FORMAT = "recsys-emb-model"
FORMAT_VERSION = 1
"""Bumped when a reader of the previous version could not read the directory; readers refuse newer ones."""
WEIGHTS_FILE = "weights.pt"
MODEL_FILE = "model.json"
CONFIG_FILE = "config.json"
MODEL_DIR_ENTRIES = (WEIGHTS_FILE, MODEL_FILE, CONFIG_FILE, COUNTS_FILE, VOCAB_FILE, MANIFEST)
_DATASET_KEYS = ("dataset", "format_version", "min_count", "vocab_from", "vocab_sizes", "oov_ids", "missing_value",
                 "dense_transform", "missing_flags", "table_spec", "dense_stats")


@dataclass
class SavedModel:
    """A trained model ready to score, with what it needs to map new data to its inputs.

    Attributes:
        module: the DLRM or DIN in eval mode: ``module(dense (B, D) float32, kjt) -> logits (B,)``.
        features: the feature specs (KJT keys in ``schema.keys`` order).
        schema: the dataset schema (dense columns, sparse / jagged keys, label, vocab sizes).
        config: the run config, as a dict.
        dataset: facts of the training dataset: ``dataset`` (e.g. ``"criteo"``), ``dense_transform``,
            ``oov_ids``, ``vocab_sizes``, ``min_count``.
        vocabulary: raw value -> id per field, or ``None`` when the dataset came without one (generated
            sequences, MovieLens: their Parquet files hold ids).
        provenance: versions, git commit, command line and source checkpoint of the export.
        path: the model directory it was loaded from (``None`` when built from a checkpoint).
    """

    module: nn.Module
    features: List[FeatureSpec]
    schema: TableSchema
    config: Dict[str, Any]
    dataset: Dict[str, Any]
    vocabulary: Optional[Dict[str, Vocabulary]] = None
    provenance: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None


def _installed(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> Optional[Dict[str, Any]]:
    """The commit of the checkout the library runs from (``None`` for an installed package)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)}


def provenance(source: Optional[str] = None) -> Dict[str, Any]:
    """Versions, git commit and command line of this process (recorded in ``model.json``)."""
    return {
        "library_version": __version__,
        "torch": torch.__version__,
        "torchrec": _installed("torchrec"),
        "fbgemm_gpu": _installed("fbgemm-gpu-cpu") or _installed("fbgemm-gpu"),
        "python": platform.python_version(),
        "git": _git_commit(),
        "command": list(sys.argv),
        "source": source,
    }


def model_from_checkpoint(checkpoint: PathLike) -> SavedModel:
    """A :class:`SavedModel` from a run or checkpoint directory; needs the run's dataset (its schema and
    vocabulary), found as :func:`recsys_emb.serving.load_model` finds it."""
    module, features, data = load_checkpoint_model(checkpoint)
    data_dir = Path(data["path"])
    meta = read_metadata(data_dir)
    ckpt = resolve_checkpoint(checkpoint)
    config = json.loads((ckpt / "trainer.json").read_text())["config"]
    vocab = load_vocabulary(data_dir) if (data_dir / VOCAB_FILE).is_file() else None
    dataset = {k: meta[k] for k in _DATASET_KEYS if k in meta}
    dataset["source"] = str(data_dir.resolve())
    return SavedModel(module, list(features), TableSchema.from_dict(meta["schema"]), migrate_config_dict(config),
                      dataset, vocab, provenance(str(ckpt.resolve())))


def save_model_dir(model: SavedModel, out: PathLike, overwrite: bool = False) -> Path:
    """Write ``model`` as a model directory at ``out``, whole or not at all (a temporary sibling renamed
    into place); an existing ``out`` is refused unless ``overwrite`` (and holds only model files)."""
    state = {k: v.detach().cpu().clone() for k, v in model.module.state_dict().items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"the model's state dict holds non-tensor entries {bad[:5]}; a model directory "
                              "holds tensors only")
    with atomic_output_dir(out, overwrite=overwrite, owned=MODEL_DIR_ENTRIES, command="export") as tmp:
        save_file(torch.save, state, tmp / WEIGHTS_FILE)  # a full disk is an OSError naming the file
        (tmp / CONFIG_FILE).write_text(json.dumps(model.config, indent=1))
        if model.vocabulary is not None:
            save_vocabularies(tmp, model.vocabulary)
        doc = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "model": model.config["model"]["kind"],
               "features": [f.to_dict() for f in model.features], "schema": model.schema.to_dict(),
               "dataset": model.dataset, "has_vocabulary": model.vocabulary is not None,
               "provenance": model.provenance}
        (tmp / MODEL_FILE).write_text(json.dumps(doc, indent=1))
        write_manifest(tmp)  # last: a directory without it is not a model
    logger.info("wrote model directory %s", out)
    return Path(out)


def is_model_dir(path: PathLike) -> bool:
    """Whether ``path`` is (or claims to be) a model directory: it has ``model.json``."""
    return (Path(path) / MODEL_FILE).is_file()


def load_model_dir(path: PathLike, max_bytes: Optional[int] = None) -> SavedModel:
    """Read a model directory written by :func:`save_model_dir`, trusting nothing in it.

    Every file the loader reads is listed in ``manifest.json`` (a plain file name inside the directory, a
    regular file, not a symlink: none is followed) and matches its size and sha256; files the manifest does
    not list are never read. Before anything is allocated, the parameters ``model.json`` describes are
    checked against the tensors ``weights.pt`` holds (their shapes read from its header, the data memory-mapped,
    not read) and against ``max_bytes``.

    Args:
        path: the model directory.
        max_bytes: the most parameter bytes to allocate; None: the memory available now
            (:func:`recsys_emb.memory.available_memory`).

    Raises:
        CheckpointError: a manifest entry that is not a plain file name, a file that is missing, unlisted,
            not a regular file, truncated or altered (checked against the manifest), a format that is not a
            model directory or is newer than this library reads, parameters over ``max_bytes`` or larger than
            the weights, or weights that do not fit the model the specs describe (the message names the
            parameter).
        SpecError: a feature names a variant type not registered in this process.
    """
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"model directory {p} does not exist (resolved from {Path.cwd()})")
    if not is_model_dir(p):
        raise CheckpointError(f"{p} is not a model directory (no {MODEL_FILE}); write one with "
                              f"`recsys-emb export --checkpoint RUN --out {p}`")
    listed = set(verify_manifest(p, "model directory"))

    def read(name: str) -> Path:
        """The path of a file the manifest lists (verified); any other is refused before it is read."""
        if name not in listed:
            raise CheckpointError(f"{p / MANIFEST} does not list {name}, which the model needs: every file the "
                                  "loader reads must be listed with its size and sha256 (the directory is incomplete "
                                  f"or its manifest forged); export it again")
        return p / name

    doc = _json_file(read(MODEL_FILE))
    if doc.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{p / MODEL_FILE}: format {doc.get('format')!r}, expected {MODEL_FORMAT!r}")
    try:
        version = int(doc.get("format_version", 0))
    except (TypeError, ValueError):
        raise CheckpointError(f"{p / MODEL_FILE}: format_version {doc.get('format_version')!r} is not an "
                              "integer") from None
    if version > FORMAT_VERSION:
        written = (doc.get("provenance") or {}).get("library_version", "?")
        raise CheckpointError(f"{p}: model directory format {version} (written by recsys_emb {written}) is newer "
                              f"than this recsys_emb {__version__} reads (format {FORMAT_VERSION}); upgrade recsys_emb")
    try:
        features = specs_from_dicts(doc["features"])
    except UnknownVariantError as e:
        raise type(e)(f"{p / MODEL_FILE}: {e} (a custom variant must be registered, by importing its module, "
                      "before the model is loaded)") from None
    except RecsysEmbError as e:
        raise type(e)(f"{p / MODEL_FILE}: {e}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{p / MODEL_FILE}: its features cannot be read ({type(e).__name__}: {e})") from None
    config = _json_file(read(CONFIG_FILE))
    cfg = config_from_dict(migrate_config_dict(config))
    try:
        schema = TableSchema.from_dict(doc["schema"])
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{p / MODEL_FILE}: its schema cannot be read ({type(e).__name__}: {e})") from None
    weights = read(WEIGHTS_FILE)
    state = _read_weights(weights)
    _check_sizes(p, cfg, schema, features, state, max_bytes)
    module = build_model(cfg, schema, specs=features, linear=_has_linear(state))
    _load_weights(weights, state, module)
    module.eval()
    vocab = None
    if doc.get("has_vocabulary"):
        for name in (COUNTS_FILE, VOCAB_FILE):
            read(name)
        vocab = load_vocabulary(p)
    return SavedModel(module, features, schema, config, doc.get("dataset", {}), vocab, doc.get("provenance", {}), p)


def _json_file(path: Path) -> Dict[str, Any]:
    """A JSON object from a listed file (regular, not followed if a symlink)."""
    try:
        doc = json.loads(read_regular_file(path, "model directory").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: a JSON object was expected, got {type(doc).__name__}")
    return doc


def _has_linear(state: Dict[str, torch.Tensor]) -> bool:
    """Whether the saved DLRM has the first-order term (``model.linear``; ``auto`` followed the training rows)."""
    return any(k.startswith("linear.") for k in state)


def _read_weights(path: Path) -> Dict[str, torch.Tensor]:
    """The state dict of ``weights.pt``, tensors-only and memory-mapped: shapes and dtypes come from the
    file's header, no tensor data is read or allocated until a tensor is used. The file is opened without
    following a symlink and re-opened through its descriptor, so what is mapped is the file the manifest
    check read."""
    fd = open_regular(path, "model directory")
    try:
        via_fd = f"/proc/self/fd/{fd}"
        state = torch.load(via_fd if os.path.exists(via_fd) else path, map_location="cpu", weights_only=True,
                           mmap=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError or RuntimeError for foreign content
        raise CheckpointError(f"{path}: not a tensors-only state dict ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
    finally:
        os.close(fd)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: not a state dict of named tensors ({type(state).__name__})")
    return state


def _check_sizes(p: Path, cfg: Any, schema: TableSchema, features: List[FeatureSpec],
                 state: Dict[str, torch.Tensor], max_bytes: Optional[int]) -> None:
    """Before the model is built: the shapes model.json and config.json declare (the model built on ``meta``)
    against the tensors of ``weights.pt`` (its header), and their bytes against ``max_bytes`` (the
    available memory by default)."""
    where = f"max_bytes ({max_bytes:,} bytes)" if max_bytes is not None else "the memory available now"
    try:
        meta = check_model_fits(cfg, schema, features, training=False, available=max_bytes, where=where,
                                linear=_has_linear(state))
    except ConfigError as e:
        raise CheckpointError(f"{p / MODEL_FILE} and {CONFIG_FILE}: {e}; refused before allocating") from None
    _same_shapes(p / WEIGHTS_FILE, state, meta.state_dict(), " (refused before allocating)")


def _same_shapes(path: Path, state: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor], when: str = "") -> None:
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise CheckpointError(f"{path}: the weights do not fit the model model.json describes: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}{when}")
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: {k} has shape {tuple(state[k].shape)}, the model expects "
                                  f"{tuple(v.shape)}{when}")


def _load_weights(path: Path, state: Dict[str, torch.Tensor], module: nn.Module) -> None:
    _same_shapes(path, state, module.state_dict())
    module.load_state_dict(state)


def load_model(path: PathLike, max_bytes: Optional[int] = None) -> SavedModel:
    """A trained model ready to score, from a model directory (self-contained), a run directory (its
    ``model/`` directory when training wrote one) or a checkpoint directory (which needs the run's dataset).

    Args:
        path: ``models/NAME`` (``recsys-emb export``), ``runs/NAME`` or ``runs/NAME/checkpoints/step_N``.
        max_bytes: a model directory: the most parameter bytes to allocate (:func:`load_model_dir`).
    Returns:
        A :class:`SavedModel`; score raw rows with :func:`recsys_emb.scoring.score_frame`.

    For the ``(model, features, data_config)`` tuple of a run or checkpoint, see
    :func:`recsys_emb.serving.load_model`.

    Example (``run``: a trained run directory)::

        model = load_model(run / "model")
        model.module(dense, kjt)  # logits (B,)
    """
    p = Path(path)
    if is_model_dir(p):
        return load_model_dir(p, max_bytes)
    if is_model_dir(p / "model"):
        return load_model_dir(p / "model", max_bytes)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist (resolved from {Path.cwd()}); pass a model directory "
                              "(recsys-emb export), a run directory or a checkpoint directory")
    return model_from_checkpoint(p)


def _export_model_dir(checkpoint: PathLike, out: PathLike, overwrite: bool, **_: Any) -> Path:
    return save_model_dir(model_from_checkpoint(checkpoint), out, overwrite=overwrite)


def _export_torch(checkpoint: PathLike, out: PathLike, overwrite: bool, table_dtype: str = "fp32", **_: Any) -> Path:
    from recsys_emb.inference import PROGRAM_FILE, SIGNATURE_FILE, write_exported

    saved = load_model(checkpoint)  # a model directory, a run or a checkpoint
    with atomic_output_dir(out, overwrite=overwrite, owned=(PROGRAM_FILE, SIGNATURE_FILE),
                           command="recsys-emb export --format torch-export") as tmp:
        write_exported(saved.module, saved.features, tmp, table_dtype=table_dtype)
    return Path(out) / PROGRAM_FILE


EXPORT_FORMATS: Dict[str, Callable[..., Path]] = {"model-dir": _export_model_dir, "torch-export": _export_torch}
"""``recsys-emb export --format`` choices: ``format -> f(checkpoint, out, overwrite, **options) -> path``."""


def export_model(checkpoint: PathLike, out: PathLike, format: str = "model-dir", overwrite: bool = False,
                 **options: Any) -> Path:
    """Export a trained run or checkpoint: ``format="model-dir"`` writes a self-contained model directory;
    ``format="torch-export"`` (``checkpoint`` may also be a model directory) writes a directory with the
    inference module as a ``torch.export`` program (``model.pt2``, ``export.json``: feature order, inputs,
    table storage), its tables stored as ``table_dtype`` (``fp32``, ``fp16`` or ``int8`` row-wise), loadable
    with :func:`recsys_emb.inference.load_program` (docs/inference.md).

    Example (``run``: a trained run directory)::

        export_model(run, "models/ctr-v1")
        model = load_model("models/ctr-v1")
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format {format!r} is not one of {sorted(EXPORT_FORMATS)}")
    check_not_over_inputs(out, [checkpoint], command="export")  # --overwrite would delete the run it reads
    return EXPORT_FORMATS[format](checkpoint, out, overwrite=overwrite, **options)
