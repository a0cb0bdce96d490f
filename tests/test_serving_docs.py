"""The pipeline example of docs/serving.md, run as written from a working directory that holds a model
directory and a day of raw logs (and no training data)."""

import re
from pathlib import Path

import numpy as np
import torch
from docs_helpers import serving_dir
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb.data.criteo import CAT_COLUMNS
from recsys_emb.data.vocabulary import load_vocabulary

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"


def test_the_documented_pipeline_runs(tmp_path, monkeypatch, capsys):
    work = serving_dir(tmp_path)
    code = re.search(r"<!-- pipeline:begin -->\n```python\n(.*?)```\n<!-- pipeline:end -->", DOC.read_text(),
                     re.S).group(1)
    assert len(code.splitlines()) <= 25
    monkeypatch.chdir(work)
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
