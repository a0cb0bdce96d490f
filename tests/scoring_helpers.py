"""A small Criteo model directory without training (random weights, a real vocabulary of raw values) and
raw TSV lines for it: what the predict tests score, in seconds instead of a training run."""

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from waiting import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]


def criteo_lines(tmp: Path, rows: int, seed: int = 0) -> List[str]:
    """``rows`` raw Criteo lines (label, 13 counts, 26 hex values) from the generator."""
    from recsys_emb.data.synthetic import generate_criteo_like

    g = generate_criteo_like(tmp / f"raw{seed}", rows=rows, scale=0.001, seed=seed)
    return g.tsv.read_text().splitlines()


def tiny_model_dir(out: Path, lines: List[str], missing_flags: bool = False, seed: int = 0,
                   model: Optional[dict] = None, embeddings: Optional[dict] = None) -> Path:
    """A DLRM model directory whose vocabulary holds the raw values of ``lines`` (so they map to ids, not
    all to the OOV id), with random weights; ``missing_flags``: M1..M13 are dense inputs; ``model``: keys
    of the config's model section to override (e.g. ``{"interaction": "dcn"}``); ``embeddings``: of the
    embeddings section (default: full tables of dim 4)."""
    from recsys_emb.config import config_from_dict, config_to_dict
    from recsys_emb.data.criteo import CAT_COLUMNS, criteo_schema
    from recsys_emb.data.criteo.fields import parse_hex
    from recsys_emb.data.vocabulary import Vocabulary
    from recsys_emb.model_dir import SavedModel, save_model_dir
    from recsys_emb.training.build import build_model, embedding_layers

    import pyarrow as pa

    fields = [ln.split("\t") for ln in lines]
    vocabs = {}
    for j, c in enumerate(CAT_COLUMNS):
        values, _ = parse_hex(pa.array([f[14 + j] for f in fields]))
        keys, counts = np.unique(values, return_counts=True)
        vocabs[c] = Vocabulary.from_counts(keys, counts, 1)
    schema = criteo_schema({c: v.size for c, v in vocabs.items()}, missing_flags=missing_flags)
    torch.manual_seed(seed)
    cfg = config_from_dict({"data": {"path": "gone"},
                            "model": {"kind": "dlrm", "bottom_mlp": [8, 4], "top_mlp": [8], **(model or {})},
                            "embeddings": embeddings or {"variant": "full", "dim": 4}})
    module = build_model(cfg, schema).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.5, 0.5)
    features = [f for layer in embedding_layers(module) for f in layer.features]
    for layer in embedding_layers(module):  # managed-collision remaps admit the ids they have room for
        for f in layer.features:
            if f.embedding.kind == "managed_collision":
                variant = layer.variant(f.name).train()
                variant.remap(torch.arange(int(f.cardinality)), torch.tensor([int(f.cardinality)]))
                variant.eval()
    dataset = {"dataset": "criteo", "missing_flags": missing_flags,
               "oov_ids": {c: v.oov_id for c, v in vocabs.items()}}
    save_model_dir(SavedModel(module, features, schema, config_to_dict(cfg), dataset, vocabs,
                              {"library_version": "test"}), out)
    return out


def recsys(*args, cwd: Optional[Path] = None, stdin: Optional[bytes] = None, env: Optional[dict] = None
           ) -> subprocess.CompletedProcess:
    """``recsys-emb ARGS`` in a fresh process (text stdout / stderr; ``stdin`` bytes piped in)."""
    full_env = {**os.environ, "RECSYS_EMB_NO_REEXEC": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "recsys_emb.cli", *map(str, args)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=HANG_GUARD_S, env=full_env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
