"""Every preset variant and search trial sizes its group exactly as when the snapshot was written
(tests/fixtures/make_preset_specs.py): a refactor of how families size groups must not move a byte."""
import gzip
import json
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_preset_specs  # noqa: E402

SAVED = json.loads(gzip.decompress((FIXTURES / "preset_specs.json.gz").read_bytes()))


def _json(x):
    return json.loads(json.dumps(x, sort_keys=True))


def test_preset_specs_equal_the_snapshot():
    now = _json(make_preset_specs.compute())
    assert len(now["presets"]) == len(SAVED["presets"]) and len(now["search"]) == len(SAVED["search"])
    for was, got in zip(SAVED["presets"], now["presets"]):
        assert got["embeddings"] == was["embeddings"]
        assert got["specs"] == was["specs"], f"embeddings {was['embeddings']}"
    for was, got in zip(SAVED["search"], now["search"]):
        assert got["choices"] == was["choices"], f"search base {was['embeddings']}, trial {was['params']}"
