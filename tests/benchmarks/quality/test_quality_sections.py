"""The families section's reference rows: computed once per dataset and read back with ``reuse``."""

import json

import pytest

import recsys_emb.baselines
from generated_data import criteo_like_dir
from recsys_emb.benchmarks.quality.sections import reference_rows_on_test
from recsys_emb.data.parquet import read_metadata


def test_reference_rows_are_kept_per_dataset_and_read_back(tmp_path, monkeypatch):
    data = criteo_like_dir(tmp_path, 3000)
    meta = read_metadata(data)
    first = reference_rows_on_test(data, meta, tmp_path / "work", reuse=True)
    assert set(first) == {"constant", "logistic_regression"} and 0.5 < first["logistic_regression"]["auc"] < 1

    def refuse(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(recsys_emb.baselines, "baseline_report", refuse)
    assert reference_rows_on_test(data, meta, tmp_path / "work", reuse=True) == first
    with pytest.raises(AssertionError, match="computed again"):  # without reuse, or for other data, computed
        reference_rows_on_test(data, meta, tmp_path / "work", reuse=False)
    with pytest.raises(AssertionError, match="computed again"):
        reference_rows_on_test(data, {**meta, "rows": {"train": 1}}, tmp_path / "work", reuse=True)
    assert list(json.loads((tmp_path / "work" / "baselines.json").read_text()).values()) == [first]
