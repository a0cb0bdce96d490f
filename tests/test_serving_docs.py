"""The pipeline example of docs/serving.md, run as written from a working directory that holds a model
directory and a day of raw logs (and no training data)."""

import gzip
import re
from pathlib import Path

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb.config import config_from_dict, config_to_dict
from recsys_emb.data.criteo import CAT_COLUMNS, preprocess
from recsys_emb.data.parquet import TableSchema, read_metadata
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.data.vocabulary import load_vocabulary
from recsys_emb.model_dir import SavedModel, provenance, save_model_dir
from recsys_emb.training.build import build_model, embedding_layers

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


def test_the_documented_pipeline_runs(tmp_path, monkeypatch, capsys):
    g = generate_criteo_like(tmp_path / "raw", rows=1000, scale=0.001, seed=3)
    preprocess(g.tsv, tmp_path / "data", min_count=2)
    meta = read_metadata(tmp_path / "data")
    cfg = config_from_dict({"data": {"path": "gone"}, "model": {"kind": "dlrm", "bottom_mlp": [8, 8], "top_mlp": [8]},
                            "embeddings": {"variant": "qr", "dim": 8}})
    schema = TableSchema.from_dict(meta["schema"])
    torch.manual_seed(0)
    module = build_model(cfg, schema).eval()
    features = [f for layer in embedding_layers(module) for f in layer.features]
    save_model_dir(SavedModel(module, features, schema, config_to_dict(cfg), {"dataset": "criteo",
                              "oov_ids": meta["oov_ids"]}, load_vocabulary(tmp_path / "data"), provenance()),
                   tmp_path / "work" / "models" / "ctr-v1")
    (tmp_path / "work" / "logs").mkdir()
    lines = [ln.split("\t", 1)[1] for ln in g.tsv.read_text().splitlines()[:300]]
    with gzip.open(tmp_path / "work" / "logs" / "day_24.tsv.gz", "wt") as fh:
        fh.write("\n".join(lines[:10] + ["not\ta\tcriteo\tline"] + lines[10:]) + "\n")

    code = re.search(r"<!-- pipeline:begin -->\n```python\n(.*?)```\n<!-- pipeline:end -->", DOC.read_text(),
                     re.S).group(1)
    assert len(code.splitlines()) <= 25
    monkeypatch.chdir(tmp_path / "work")
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)
    out = capsys.readouterr().out
    assert "300 rows, 1 malformed lines skipped" in out
    assert ns["probs"].shape == (3,) and len(ns["top"]) == 100
    assert ns["scores"].line.tolist() == list(range(1, 11)) + list(range(12, 302))

    # the second candidate has every value missing: dense zeros, each field's id of the empty value (-1)
    vocab = load_vocabulary(tmp_path / "data")
    ids = torch.tensor([int(vocab[c].lookup(np.array([-1]))[0]) for c in CAT_COLUMNS])
    kjt = KeyedJaggedTensor(keys=list(CAT_COLUMNS), values=ids, lengths=torch.ones(26, dtype=torch.int32))
    with torch.no_grad():
        expected = torch.sigmoid(ns["model"].module(torch.zeros(1, 13), kjt)).item()
    assert abs(float(ns["probs"][1]) - expected) < 1e-6
    assert sum(ns["oov"].values()) > 0  # "0badcafe" is no generated value
