"""Table storage for inference: int8 row-wise rows within half a quantisation step of the trained rows, fp16
rows as fp16 rounds them, the bytes each storage holds equal to what memory_from_specs counts, an int8
module exported and loaded, and int8 scores near the fp32 ones."""

import re
from pathlib import Path

import pytest
import torch
from inference_cases import din_case, dlrm_case

from recsys_emb.inference import (StoredTable, dequantize_rowwise, export_program, inference_module, load_program,
                                  quantize_rowwise)
from recsys_emb.inference.module import _layer_tables
from recsys_emb.memory import memory_from_specs


def test_int8_rows_are_within_half_a_step_of_the_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(200, 16, generator=g) * torch.rand(200, 1, generator=g) * 3
    w[7] = 0.25  # a constant row: scale 0, restored exactly
    codes, scale_bias = quantize_rowwise(w)
    assert codes.dtype == torch.uint8 and scale_bias.shape == (200, 2)
    scale, bias = scale_bias[:, 0], scale_bias[:, 1]
    torch.testing.assert_close(scale, (w.max(1).values - w.min(1).values) / 255)
    torch.testing.assert_close(bias, w.min(1).values)
    err = (dequantize_rowwise(codes, scale_bias) - w).abs()
    assert bool((err <= scale.unsqueeze(1) / 2 + 1e-6).all())
    assert float(err[7].max()) == 0.0
    assert (codes.amin(1) == 0).all() and (codes[scale > 0].amax(1) == 255).all()  # the full code range is used


def test_stored_tables_of_a_model_read_the_trained_rows():
    model, specs, _, _ = dlrm_case(batch=2)
    weights = _layer_tables(model.embeddings)
    for dtype in ("fp32", "fp16", "int8"):
        m = inference_module(model, specs, dtype)
        assert m.table_names == list(weights)
        for name, table in zip(m.table_names, m.tables):
            w = weights[name].detach()
            got = table.dequantized()
            if dtype == "fp32":
                assert torch.equal(got, w)
            elif dtype == "fp16":
                assert table.weight.dtype == torch.float16 and torch.equal(got, w.half().float())
            else:
                step = (w.max(1).values - w.min(1).values) / 255
                assert bool(((got - w).abs() <= step.unsqueeze(1) / 2 + 1e-6).all()), name


@pytest.mark.parametrize("case", [dlrm_case, din_case])
def test_table_bytes_are_what_memory_from_specs_counts(case):
    model, specs, _, _ = case(batch=2)
    for dtype, per_element, per_row in (("fp32", 4, 0), ("fp16", 2, 0), ("int8", 1, 8)):
        m = inference_module(model, specs, dtype)
        report = memory_from_specs(specs, table_dtype=dtype)
        assert m.table_bytes == sum(t.bytes for t in report.tables)
        assert m.table_bytes == sum(t.rows * (t.dim * per_element + per_row) for t in m.tables)
        assert all(t.nbytes == t.rows * (t.dim * per_element + per_row) for t in m.tables)


def test_int8_module_exports_and_scores_near_fp32(tmp_path):
    model, specs, dense, kjt = dlrm_case(batch=6)
    args = (dense, kjt.values(), kjt.lengths().long())
    fp32 = inference_module(model, specs)(*args)

    int8 = inference_module(model, specs, "int8")
    path = export_program(int8, tmp_path / "int8.pt2")
    with torch.no_grad():
        exported = load_program(path)(*args)
    torch.testing.assert_close(exported, int8(*args), atol=1e-6, rtol=0)
    # each row moves by at most half a step (~4e-4 here): the logits move by far less than their spread
    assert float((exported - fp32).abs().max()) < 0.05 * float(fp32.std())
    assert not torch.equal(exported, fp32)


def test_stored_table_refuses_a_non_matrix():
    with pytest.raises(ValueError, match=r"takes a \(rows, dim\) table; got shape \(4,\)"):
        StoredTable(torch.zeros(4))


def test_table_storage_example_of_the_docs_runs():
    text = (Path(__file__).resolve().parents[2] / "docs" / "embeddings.md").read_text()
    (code,) = re.findall(r"## Table storage\n.*?```python\n(.*?)```", text, flags=re.S)
    exec(compile(code, "docs/embeddings.md", "exec"), {})
