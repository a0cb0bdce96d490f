"""bench/data_throughput.py in a real process on a small generated dataset: the table, the JSON, and the
data reused by a second run (format only; speed is never asserted)."""

import json

from bench_helpers import run_script


def test_small_run_reports_both_orders_and_reuses_its_data(tmp_path):
    work, out = tmp_path / "work", tmp_path / "res.json"
    args = ["--rows", "20000", "--scale", "0.001", "--batch-size", "1024", "--epochs", "1", "--workdir", str(work)]
    first = run_script("data_throughput.py", *args, "--workers", "1", "2", "--unit-mb", "0.5", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["rows"] == 20000 and res["torch_threads"] == 1
    assert [r["shuffle"] for r in res["iterate"]] == [False, True]
    ordered, shuffled = res["iterate"]
    # the train split (80%), a short last batch per shard (one shard per work unit of 0.5 MiB)
    assert ordered["samples"] == 16000 and ordered["batches"] >= 16
    assert shuffled["batches"] <= 15 and shuffled["samples"] == shuffled["batches"] * 1024  # full batches only
    assert res["generate_rows_per_s"] > 0 and res["tsv_bytes"] > 0
    assert [(r["workers"], r["parse_cache"]) for r in res["preprocess"]] == [(1, False), (1, True), (2, True)]
    assert all(r["mb_per_s"] > 0 for r in res["preprocess"])
    lines = first.splitlines()
    assert lines[0].split()[:4] == ["shuffle", "batches", "samples/s", "batches/s"] and "(batch 1024, 1 thread)" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == ["False", "True"]
    assert [line.split(":")[0] for line in lines[3:]] == [
        "generate_rows_per_s", "preprocess, 1 worker(s), without parse cache", "preprocess, 1 worker(s), with parse cache",
        "preprocess, 2 worker(s), with parse cache"]
    second = run_script("data_throughput.py", *args, "--workers", "1", "--json", str(out))  # the data is reused
    assert "generate_rows_per_s" not in json.loads(out.read_text()) and len(second.splitlines()) == 5
