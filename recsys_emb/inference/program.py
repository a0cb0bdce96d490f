"""Export an inference module with ``torch.export`` to a ``.pt2`` file, and load it back in any process.

The file holds the program, the stored tables and example inputs; :func:`write_exported` also writes
``export.json`` beside it: the feature order, the input signature and the table storage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb.errors import ConfigError, DataError
from recsys_emb.inference.module import InferenceModule, inference_module
from recsys_emb.specs import FeatureSpec
from recsys_emb.data.outdir import save_file
from recsys_emb.version import __version__

__all__ = ["PROGRAM_FILE", "SIGNATURE_FILE", "KJTScorer", "example_inputs", "export_program", "load_program",
           "write_exported", "signature"]

logger = logging.getLogger(__name__)

PROGRAM_FILE = "model.pt2"
SIGNATURE_FILE = "export.json"


def example_inputs(module: InferenceModule, batch: int = 3) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dense, values, lengths)`` for ``batch`` samples: id 0 once per bag (valid for every variant), and two
    ids in the first bag of every feature that is not a DIN candidate, so the example is not all ones."""
    n_features = len(module.feature_names)
    lengths = torch.ones(n_features, batch, dtype=torch.int64)
    if module.model_kind == "din":
        candidates = {module.sequence_pos[i] for i in module.candidates}
    else:
        candidates = set()
    for f in range(n_features):
        if f not in candidates:
            lengths[f, 0] = 2
    values = torch.zeros(int(lengths.sum()), dtype=torch.int64)
    return torch.zeros(batch, module.dense_in), values, lengths.flatten()


def export_program(module: InferenceModule, path: os.PathLike,
                   example: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None) -> Path:
    """``torch.export.export`` the module, with a dynamic batch size and number of ids, and save it to ``path``
    (a ``.pt2`` file holding the program, its tables and the example inputs). Returns ``path``.

    Example::

        model, features, _ = recsys_emb.serving.load_model("runs/NAME")
        export_program(inference_module(model, features, "int8"), "model.pt2")
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"{path}: its directory {path.parent} does not exist; create it first")
    example = example if example is not None else example_inputs(module)
    batch = torch.export.Dim("batch", min=1)
    n_ids = torch.export.Dim("n_ids", min=0)
    shapes = {"dense": {0: batch}, "values": {0: n_ids}, "lengths": {0: len(module.feature_names) * batch}}
    try:
        program = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
    except Exception as e:  # torch.export raises many types; name the module's variants with the cause
        kinds = sorted({f"{f.name}: {f.kind}" for f in [*module.pooled_features, *module.sequence_features]})
        raise ConfigError(f"torch.export could not export the inference module ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); its features' remaps: {kinds}. A variant "
                          f"without a remap plan ('own') must avoid data-dependent Python control flow") from e
    tmp = path.with_name(f".partial-{path.name}")  # written beside, then renamed: never a half-written program
    try:
        save_file(torch.export.save, program, tmp)  # a full disk is an OSError naming the file
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # on a read-only filesystem the cleanup fails too: keep the first error
            tmp.unlink(missing_ok=True)
    logger.info("exported %s (%s tables, %d table bytes) to %s", module.model_kind, module.table_dtype,
                module.table_bytes, path)
    return path


def load_program(path: os.PathLike) -> nn.Module:
    """The exported module of a ``.pt2`` file (or of a directory holding ``model.pt2``) as a callable:
    ``load_program(path)(dense, values, lengths) -> logits (B,)``. Needs torch only (no recsys_emb, no TorchRec).

    The file is a pickle-free archive, but it holds code: load only files from sources you trust."""
    p = Path(path)
    if p.is_dir():
        p = p / PROGRAM_FILE
    if not p.is_file():
        raise DataError(f"{p}: no exported program there; write one with write_exported or export_program")
    serde = logging.getLogger("torch._export.serde.serialize")
    level = serde.level
    serde.setLevel(logging.ERROR)  # a warning per per-feature id count, which the graph does not keep
    try:
        return torch.export.load(str(p)).module()
    finally:
        serde.setLevel(level)


def signature(module: InferenceModule) -> Dict[str, Any]:
    """What ``export.json`` records: the format, model kind, table storage and bytes, feature order, and the
    inputs and output with their shapes (``B`` samples, ``n`` ids, ``F`` features) and dtypes."""
    n_features = len(module.feature_names)
    return {
        "format": "torch-export", "file": PROGRAM_FILE, "model": module.model_kind,
        "table_dtype": module.table_dtype, "table_bytes": module.table_bytes,
        "features": list(module.feature_names),
        "inputs": [
            {"name": "dense", "shape": ["B", module.dense_in], "dtype": "float32"},
            {"name": "values", "shape": ["n"], "dtype": "int64",
             "layout": "key-major: every id of feature 0 (bag of sample 0, then 1, ...), then feature 1, ..."},
            {"name": "lengths", "shape": [f"{n_features}*B"], "dtype": "int64",
             "layout": "key-major: bag lengths of feature 0 for samples 0..B-1, then feature 1, ..."},
        ],
        "output": {"name": "logits", "shape": ["B"], "dtype": "float32"},
        "recsys_emb": __version__, "torch": torch.__version__,
    }


def write_exported(model: nn.Module, features: Sequence[FeatureSpec], out_dir: os.PathLike,
                   table_dtype: str = "fp32") -> Path:
    """Export a trained model into an existing directory: ``model.pt2`` (:func:`export_program`) and
    ``export.json`` (:func:`signature`). Returns the ``.pt2`` path.

    Args:
        model, features: as :func:`recsys_emb.serving.load_model` returns them.
        out_dir: an existing directory (a model directory).
        table_dtype: ``"fp32"``, ``"fp16"`` or ``"int8"``.

    Example::

        model, features, _ = recsys_emb.serving.load_model("runs/NAME")
        write_exported(model, features, "models/NAME", table_dtype="int8")
        scores = torch.sigmoid(load_program("models/NAME")(dense, values, lengths))
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise DataError(f"{out}: the export directory does not exist; create it (or write the model directory) first")
    module = inference_module(model, features, table_dtype)
    path = export_program(module, out / PROGRAM_FILE)
    tmp = out / f".{SIGNATURE_FILE}.tmp"
    tmp.write_text(json.dumps(signature(module), indent=1) + "\n")
    os.replace(tmp, out / SIGNATURE_FILE)
    return path


class KJTScorer(nn.Module):
    """A model's own calling convention, ``forward(dense (B, dense_in) or None, sparse KeyedJaggedTensor) -> logits
    (B,)``, over an inference module or a loaded program: the KJT's keys are put in ``feature_names`` order
    (``export.json``'s ``features``), so :func:`recsys_emb.training.metrics.score_split` and the trainer's
    batches score through it.

    Example:
        >>> from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
        >>> from recsys_emb.models import DLRM
        >>> from recsys_emb.specs import FeatureSpec, Full
        >>> specs = [FeatureSpec("a", Full(dim=4), cardinality=10), FeatureSpec("b", Full(dim=4), cardinality=10)]
        >>> model = DLRM(EmbeddingLayer(specs), dense_in=0, top_mlp=(4,)).eval()
        >>> scorer = KJTScorer(inference_module(model, specs, "fp16"), ["a", "b"], dense_in=0)
        >>> scorer(None, kjt_from_lists({"b": [[1], [2]], "a": [[3], []]})).shape
        torch.Size([2])
    """

    def __init__(self, program: nn.Module, feature_names: Sequence[str], dense_in: int) -> None:
        super().__init__()
        self.program = program
        self.feature_names = list(feature_names)
        self.dense_in = int(dense_in)

    def forward(self, dense: Optional[torch.Tensor], sparse: KeyedJaggedTensor) -> torch.Tensor:
        keys = sparse.keys()
        if sorted(keys) != sorted(self.feature_names):
            raise ConfigError(f"KeyedJaggedTensor keys {keys} are not the exported features {self.feature_names}")
        if list(keys) != self.feature_names:
            sparse = sparse.permute([keys.index(n) for n in self.feature_names])
        if dense is None:
            dense = torch.zeros(sparse.stride(), self.dense_in)
        return self.program(dense, sparse.values(), sparse.lengths().long())
