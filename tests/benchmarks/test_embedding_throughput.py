"""`recsys-emb bench embeddings --quick` in real processes: every variant and extra preset next to TorchRec's
baseline, the JSON and the doc block (format only; speed is for bench/, never asserted)."""

import json

import pytest
from bench_helpers import run_cli


def test_bench_embeddings_quick_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    out = run_cli("bench", "embeddings", "--quick", "--json", str(path)).stdout
    assert "torchrec_baseline" in out
    data = json.loads(path.read_text())
    names = [r["variant"] for r in data["results"]]
    assert names[0] == "torchrec_baseline"
    assert {"full", "hashed", "multi_hash", "qr", "mixed", "unified"} <= set(names)
    for r in data["results"]:
        assert set(r) >= {"samples_per_s", "ratio_to_torchrec", "params", "bytes"}
        assert r["samples_per_s"] > 0 and r["bytes"] == 4 * r["params"]
    assert data["results"][0]["ratio_to_torchrec"] == 1.0


def test_bench_embeddings_measures_extra_presets_and_writes_the_doc_block(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n<!-- embedding_throughput:begin -->\nold\n<!-- embedding_throughput:end -->\n")
    path = tmp_path / "bench.json"
    run_cli("bench", "embeddings", "--quick", "--variants", "qr", "qr_big", "--preset", "qr_big=qr:min_rows=1000",
            "--json", str(path), "--readme", str(doc))
    rows = {r["variant"]: r for r in json.loads(path.read_text())["results"]}
    assert set(rows) == {"torchrec_baseline", "qr", "qr_big"}
    assert rows["qr_big"]["params"] > rows["qr"]["params"]  # fields of 64..999 ids stay full tables
    text = doc.read_text()
    assert "old" not in text and "qr_big " in text and "--preset qr_big=qr:min_rows=1000" in text


@pytest.mark.parametrize("preset, message", [("qr_big", "NAME=VARIANT"), ("x=qr:rows=3", "knob=value with a knob in"),
                                             ("x=nope", "embeddings.variant='nope'"), ("qr=qr", "built-in variant")])
def test_bench_embeddings_bad_preset_is_refused_with_the_fix(preset, message):
    proc = run_cli("bench", "embeddings", "--quick", "--variants", "qr", "--preset", preset, ok=False)
    assert proc.returncode != 0
    assert message in proc.stderr
