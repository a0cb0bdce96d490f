"""Set-ups of the docs' Python examples: the working directory a documented example expects."""

import gzip
from pathlib import Path

import torch

from recsys_emb.config import config_from_dict, config_to_dict
from recsys_emb.data.criteo import preprocess
from recsys_emb.data.parquet import TableSchema, read_metadata
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.data.vocabulary import load_vocabulary
from recsys_emb.model_dir import SavedModel, provenance, save_model_dir
from recsys_emb.training.build import build_model, embedding_layers


def serving_dir(tmp_path: Path) -> Path:
    """``tmp_path/work`` as docs/serving.md's pipeline finds it: ``models/ctr-v1`` (a model directory of an
    untrained QR DLRM over a preprocessed Criteo-like dataset, which is then out of reach) and
    ``logs/day_24.tsv.gz`` (300 raw lines without labels, one malformed line after the tenth).
    The dataset stays in ``tmp_path/data``."""
    g = generate_criteo_like(tmp_path / "raw", rows=1000, scale=0.001, seed=3)
    preprocess(g.tsv, tmp_path / "data", min_count=2)
    meta = read_metadata(tmp_path / "data")
    cfg = config_from_dict({"data": {"path": "gone"}, "model": {"kind": "dlrm", "bottom_mlp": [8, 8], "top_mlp": [8]},
                            "embeddings": {"variant": "qr", "dim": 8}})
    schema = TableSchema.from_dict(meta["schema"])
    torch.manual_seed(0)
    module = build_model(cfg, schema).eval()
    features = [f for layer in embedding_layers(module) for f in layer.features]
    work = tmp_path / "work"
    save_model_dir(SavedModel(module, features, schema, config_to_dict(cfg), {"dataset": "criteo",
                              "oov_ids": meta["oov_ids"]}, load_vocabulary(tmp_path / "data"), provenance()),
                   work / "models" / "ctr-v1")
    (work / "logs").mkdir()
    lines = [ln.split("\t", 1)[1] for ln in g.tsv.read_text().splitlines()[:300]]
    with gzip.open(work / "logs" / "day_24.tsv.gz", "wt") as fh:
        fh.write("\n".join(lines[:10] + ["not\ta\tcriteo\tline"] + lines[10:]) + "\n")
    return work


def serving_dir_int8(tmp_path: Path) -> Path:
    """:func:`serving_dir` plus ``models/ctr-v1-int8``: its model exported with int8 tables (``model.pt2``)."""
    from recsys_emb.inference import write_exported
    from recsys_emb.model_dir import load_model

    work = serving_dir(tmp_path)
    saved = load_model(work / "models" / "ctr-v1")
    (work / "models" / "ctr-v1-int8").mkdir()
    write_exported(saved.module, saved.features, work / "models" / "ctr-v1-int8", table_dtype="int8")
    return work


SETUPS = {"serving-dir": serving_dir, "serving-dir-int8": serving_dir_int8}
"""``<!-- setup: NAME -->`` before a block: the function that prepares its working directory."""

SETUP_LOG_LINES = {"serving-dir": "WARNING:recsys_emb.scoring:skipped 1 malformed lines "}
"""The one stderr line a block may print in a set-up's directory: the library's own report of the
malformed line the set-up puts into the logs (a block that predicts on them with ``on_bad_line="skip"``)."""
