"""Every variant, in a DLRM (dot and DCN-v2 interactions) and a DIN (coupled and decoupled), exported with torch.export and loaded in a fresh process (torch only):
the scores equal the eager model's to 1e-6 with fp32 tables, on batches of another size than the export's."""

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from inference_cases import din_case, dlrm_case

from recsys_emb.embeddings import register_variant, unregister_variant
from recsys_emb.errors import ConfigError, DataError
from recsys_emb.inference import (PROGRAM_FILE, SIGNATURE_FILE, export_program, inference_module, load_program,
                                  write_exported)
from recsys_emb.layer import EmbeddingLayer, kjt_from_lists
from recsys_emb.models import DLRM
from recsys_emb.specs import FeatureSpec, Full
from waiting import HANG_GUARD_S

LOADER = """
import sys, torch
sys.path.insert(0, {root!r})
from recsys_emb.inference import load_program
inputs = torch.load(sys.argv[1], weights_only=True)
out = {{name: load_program(path)(*args) for name, (path, args) in inputs.items()}}
torch.save(out, sys.argv[2])
"""


def test_exported_modules_score_like_eager_in_a_fresh_process(tmp_path):
    inputs, expected = {}, {}
    for name, case in (("dlrm", dlrm_case), ("dlrm_dcn", partial(dlrm_case, interaction="dcn", linear=True)),
                       ("din", din_case),
                       ("din_dare", partial(din_case, decoupled=True))):
        model, specs, dense, kjt = case(batch=7)
        d = tmp_path / name
        d.mkdir()
        path = write_exported(model, specs, d)
        assert path == d / PROGRAM_FILE
        assert sorted(p.name for p in d.iterdir()) == [SIGNATURE_FILE, PROGRAM_FILE]  # no temporary file left
        sig = json.loads((d / SIGNATURE_FILE).read_text())
        assert sig["features"] == [s.name for s in specs] and sig["table_dtype"] == "fp32"
        assert [i["name"] for i in sig["inputs"]] == ["dense", "values", "lengths"]
        with torch.no_grad():
            expected[name] = model(dense if dense.shape[1] else None, kjt)
        inputs[name] = (str(path), (dense, kjt.values(), kjt.lengths().long()))
    torch.save(inputs, tmp_path / "inputs.pt")
    root = str(Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", LOADER.format(root=root), str(tmp_path / "inputs.pt"),
                    str(tmp_path / "out.pt")], check=True, timeout=HANG_GUARD_S)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    for name in ("dlrm", "dlrm_dcn", "din", "din_dare"):
        assert out[name].shape == (7,)
        torch.testing.assert_close(out[name], expected[name], atol=1e-6, rtol=0)


def test_inference_module_equals_eager_for_every_variant_and_batch():
    for case in (dlrm_case, partial(dlrm_case, interaction="dcn", linear=True), din_case,
                 partial(din_case, decoupled=True)):
        for batch in (1, 5):
            model, specs, dense, kjt = case(batch=batch)
            m = inference_module(model, specs)
            with torch.no_grad():
                want = model(dense if dense.shape[1] else None, kjt)
                got = m(dense, kjt.values(), kjt.lengths().long())
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
            assert not any(p.requires_grad for p in m.parameters())


def test_feature_order_of_the_inputs_follows_the_specs_given():
    model, specs, dense, kjt = dlrm_case(batch=4, linear=True)  # the first-order term reads the ids too
    order = list(reversed(specs))
    permuted = kjt.permute([[s.name for s in specs].index(s.name) for s in order])
    m = inference_module(model, order)
    with torch.no_grad():
        torch.testing.assert_close(m(dense, permuted.values(), permuted.lengths().long()), model(dense, kjt),
                                   atol=1e-6, rtol=0)


def test_bad_arguments_are_refused_with_a_clear_error(tmp_path):
    model, specs, _, _ = dlrm_case(batch=2)
    with pytest.raises(ConfigError, match="table_dtype='int4' is not a table storage; choose one of fp32, fp16, int8"):
        inference_module(model, specs, "int4")
    with pytest.raises(ConfigError, match="are not the model's features"):
        inference_module(model, specs[:-1])
    with pytest.raises(ConfigError, match="takes a DLRM or DIN model"):
        inference_module(torch.nn.Linear(2, 2), specs)
    with pytest.raises(DataError, match="the export directory does not exist"):
        write_exported(model, specs, tmp_path / "missing")
    with pytest.raises(DataError, match="no exported program there"):
        load_program(tmp_path)


@pytest.fixture()
def head_tail():
    """The custom variant of docs/architecture.md (a variant without a plan: its own remap), registered."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    code = re.search(r"<!-- example:begin -->\n```python\n(.*?)```\n<!-- example:end -->", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/architecture.md", "exec"), namespace)

    @dataclass(frozen=True)
    class Checked(namespace["HeadTail"]):
        kind: ClassVar[str] = "head_tail_checked"

    class CheckedEmbedding(namespace["HeadTailEmbedding"]):
        def remap(self, ids, lengths):
            if bool((ids < 0).any()):  # data-dependent Python control flow: not exportable
                raise ValueError("negative id")
            return super().remap(ids, lengths)

    register_variant(Checked, CheckedEmbedding)
    yield namespace["HeadTail"], Checked
    unregister_variant(Checked)
    unregister_variant(namespace["HeadTail"])


def test_a_variant_with_its_own_remap_exports_unless_its_remap_branches_on_data(head_tail, tmp_path):
    plain, checked = head_tail
    specs = [FeatureSpec("c", plain(dim=8, head=5, tail=7)), FeatureSpec("f", Full(dim=8), cardinality=4)]
    model = DLRM(EmbeddingLayer(specs), dense_in=0, top_mlp=(4,)).eval()
    kjt = kjt_from_lists({"c": [[0, 4], [5, -9, 10**12], []], "f": [[1], [2], [3]]})
    module = inference_module(model, specs)
    args = (torch.zeros(3, 0), kjt.values(), kjt.lengths().long())
    path = export_program(module, tmp_path / "own.pt2")
    with torch.no_grad():
        torch.testing.assert_close(load_program(path)(*args), model(None, kjt), atol=1e-6, rtol=0)
    specs[0] = FeatureSpec("c", checked(dim=8, head=5, tail=7))
    model = DLRM(EmbeddingLayer(specs), dense_in=0, top_mlp=(4,)).eval()
    with pytest.raises(ConfigError, match=r"torch.export could not export the inference module .*'c: own', 'f: "
                                          r"Identity'.*must avoid data-dependent Python control flow"):
        export_program(inference_module(model, specs), tmp_path / "checked.pt2")
