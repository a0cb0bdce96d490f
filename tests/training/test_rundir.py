"""A run fingerprint written before the families' knobs moved into ``embeddings.options`` compares equal to
today's for the same run, and still names a knob that changed."""

from recsys_emb.config import config_from_dict
from recsys_emb.presets import LEGACY_OPTION_KEYS
from recsys_emb.training.rundir import fingerprint_differences, run_fingerprint


def _legacy(fp):
    """The fingerprint as earlier versions wrote it: all five knobs as keys of ``embeddings``."""
    out = {k: v for k, v in fp.items() if not k.startswith("embeddings.options.")}
    defaults = {"num_hashes": 2, "qr_op": "concat", "alpha": 0.3, "num_blocks": 1, "chunks": 1}
    out.update({f"embeddings.{k}": fp.get(f"embeddings.options.{k}", defaults[k]) for k in LEGACY_OPTION_KEYS})
    return out


def test_an_earlier_fingerprint_matches_the_same_run_and_names_a_changed_knob():
    meta = {"rows": {"total": 10}}
    cfg = config_from_dict({"data": {"path": "d"}, "embeddings": {"variant": "qr", "qr_op": "mult"}})
    now = run_fingerprint(cfg, meta)
    assert now["embeddings.options.qr_op"] == "mult" and "embeddings.options.chunks" not in now
    assert fingerprint_differences(_legacy(now), now) == []
    other = run_fingerprint(config_from_dict({"data": {"path": "d"}, "embeddings": {"variant": "qr"}}), meta)
    assert fingerprint_differences(_legacy(now), other) == ["embeddings.options.qr_op: 'mult' -> 'concat'"]
    # a default given explicitly is the same run
    explicit = config_from_dict({"data": {"path": "d"}, "embeddings": {"variant": "qr", "options": {"qr_op": "concat"}}})
    assert fingerprint_differences(other, run_fingerprint(explicit, meta)) == []


def test_model_linear_is_fingerprinted_as_built():
    # auto follows the training rows: on large data it is the same run as false, and as a run written
    # before the key existed (no first-order term); on small data it is the same run as true
    large, small = {"rows": {"train": 80_000}}, {"rows": {"train": 4_000}}
    auto = config_from_dict({"data": {"path": "d"}})
    off = config_from_dict({"data": {"path": "d"}, "model": {"linear": False}})
    on = config_from_dict({"data": {"path": "d"}, "model": {"linear": True}})
    assert run_fingerprint(auto, large)["model.linear"] is False
    assert run_fingerprint(auto, small)["model.linear"] is True
    assert fingerprint_differences(run_fingerprint(off, large), run_fingerprint(auto, large)) == []
    assert fingerprint_differences(run_fingerprint(on, small), run_fingerprint(auto, small)) == []
    before = {k: v for k, v in run_fingerprint(off, large).items() if k != "model.linear"}
    assert fingerprint_differences(before, run_fingerprint(auto, large)) == []
    assert fingerprint_differences(before, run_fingerprint(on, large)) == ["model.linear: False -> True"]
    listed = {"files": {"train": [{"name": "part-00000.parquet", "rows": 3_000}, {"name": "part-00001.parquet",
                                                                                 "rows": 1_000}]}}
    assert run_fingerprint(auto, listed)["model.linear"] is True  # the rows its file list counts
