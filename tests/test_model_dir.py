"""Model directories: every variant and DIN round-trip to the same scores; the weights load tensors-only;
a damaged, foreign or newer directory is refused naming the file and the fix."""

import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recsys_emb.config import config_from_dict, config_to_dict
from recsys_emb.data.batches import batch_from_table
from recsys_emb.data.criteo import CAT_COLUMNS, INT_COLUMNS, criteo_schema
from recsys_emb.data.parquet import TableSchema
from recsys_emb.data.vocabulary import Vocabulary
from recsys_emb.errors import CheckpointError, DataError, SpecError
from recsys_emb.layer import kjt_from_lists
from recsys_emb.model_dir import MANIFEST, SavedModel, load_model, save_model_dir
from recsys_emb.scoring import predict
from recsys_emb.serving import load_model as load_checkpoint_model
from recsys_emb.training.build import build_model, input_features
from recsys_emb.training.checkpoint import write_manifest

CARD = 40
SEQ = TableSchema(sparse=("user_id", "cand_item"), jagged=("hist_item",), label="label",
                  vocab_sizes={"user_id": 30, "cand_item": 50, "hist_item": 50})


def saved(kind="dlrm", variant="full", seed=0):
    """A model with random weights; ``kind``: ``dlrm``, ``dlrm_linear`` (with the first-order term), ``din`` or
    ``din_dare`` (decoupled embeddings)."""
    torch.manual_seed(seed)
    dlrm = kind.startswith("dlrm")
    model_cfg = ({"kind": "dlrm", "bottom_mlp": [8, 4], "top_mlp": [8], "linear": kind == "dlrm_linear"} if dlrm else
                 {"kind": "din", "item_pairs": [["cand_item", "hist_item"]], "attention_mlp": [8], "mlp": [8],
                  "decoupled_embeddings": kind == "din_dare"})
    cfg = config_from_dict({"data": {"path": "gone"}, "model": model_cfg,
                            "embeddings": {"variant": variant, "dim": 8, "min_rows": 8, "compression": 4}})
    schema = criteo_schema({c: CARD for c in CAT_COLUMNS}) if dlrm else SEQ
    counts = {c: np.arange(CARD, 0, -1) for c in CAT_COLUMNS}
    module = build_model(cfg, schema, counts=counts).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.5, 0.5)  # every table row differs, so a mixed-up row would show
    features = input_features(module)
    vocab = ({c: Vocabulary.from_counts(np.arange(CARD - 1) * 7, np.arange(CARD - 1, 0, -1), 1) for c in CAT_COLUMNS}
             if dlrm else None)
    return SavedModel(module, features, schema, config_to_dict(cfg), {"dataset": "criteo" if vocab else "sequences"},
                      vocab, {"library_version": "test"})


def rows(schema, n=16, seed=0):
    """Random processed rows (ids) of ``schema``, as a table."""
    rng = np.random.default_rng(seed)
    import pyarrow as pa

    cols = {c: pa.array(rng.random(n).astype(np.float32)) for c in schema.dense}
    cols.update({c: pa.array(rng.integers(0, schema.vocab_sizes[c], n)) for c in schema.sparse})
    for c in schema.jagged:
        cols[c] = pa.array([rng.integers(0, schema.vocab_sizes[c], rng.integers(0, 5)).tolist() for _ in range(n)],
                           pa.list_(pa.int64()))
    return pa.table(cols)


def batch(schema, n=16, seed=0):
    return batch_from_table(rows(schema, n, seed), schema)


@pytest.mark.parametrize("kind,variant", [("dlrm", v) for v in ["full", "hashed", "multi_hash", "qr", "mixed",
                                                                 "unified"]] + [("din", "hashed"),
                                                                                  ("din_dare", "unified"),
                                                                                  ("dlrm_linear", "hashed")])
def test_a_model_directory_scores_like_the_model_that_wrote_it(tmp_path, kind, variant):
    m = saved(kind, variant)
    dlrm = kind.startswith("dlrm")
    save_model_dir(m, tmp_path / "m")
    b = batch(m.schema)
    loaded = load_model(tmp_path / "m")
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.module(b.dense, b.sparse).numpy(), m.module(b.dense, b.sparse).numpy())
    assert loaded.features == m.features and loaded.schema == m.schema
    assert (loaded.vocabulary is None) == (m.vocabulary is None)
    state = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    listed = json.loads((tmp_path / "m" / MANIFEST).read_text())["files"]
    assert set(listed) == {p.name for p in (tmp_path / "m").iterdir()} - {MANIFEST}
    assert (loaded.module.linear is not None) == (kind == "dlrm_linear") if dlrm else True
    if kind in ("din_dare", "dlrm_linear"):  # rebuilt from the saved specs / weights; predict over processed Parquet
        if kind == "din_dare":
            assert [f.name for f in loaded.module.attention.features] == ["cand_item_att", "hist_item_att"]
            assert {f.name for f in loaded.features} == {"user_id", "cand_item", "hist_item"}
        pq.write_table(rows(m.schema), tmp_path / "rows.parquet")  # the rows of ``b``
        report = predict(loaded, [tmp_path / "rows.parquet"], tmp_path / "scores.parquet")
        assert report.rows == 16
        with torch.no_grad():
            np.testing.assert_allclose(pq.read_table(tmp_path / "scores.parquet").column("logit").to_numpy(),
                                       m.module(b.dense, b.sparse).numpy(), rtol=0, atol=1e-6)


def test_a_run_directory_loads_its_model_directory(tmp_path):
    m = saved()
    save_model_dir(m, tmp_path / "run" / "model")
    assert load_model(tmp_path / "run").path == tmp_path / "run" / "model"
    with pytest.raises(CheckpointError, match="is a model directory, not a run"):
        load_checkpoint_model(tmp_path / "run" / "model")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_an_existing_directory_is_replaced_only_with_overwrite(tmp_path):
    save_model_dir(saved(seed=0), tmp_path / "m")
    with pytest.raises(DataError, match="overwrite"):
        save_model_dir(saved(seed=1), tmp_path / "m")
    save_model_dir(saved(seed=1), tmp_path / "m", overwrite=True)
    b = batch(saved().schema)
    with torch.no_grad():  # the directory scores as the second model, not the first
        got = load_model(tmp_path / "m").module(b.dense, b.sparse).numpy()
        np.testing.assert_array_equal(got, saved(seed=1).module(b.dense, b.sparse).numpy())
        assert not np.array_equal(got, saved(seed=0).module(b.dense, b.sparse).numpy())


@pytest.fixture
def model_dir(tmp_path):
    save_model_dir(saved(), tmp_path / "m")
    return tmp_path / "m"


def test_a_damaged_or_incomplete_directory_names_the_file(model_dir):
    (model_dir / "vocab.npz").unlink()
    with pytest.raises(CheckpointError, match=r"vocab.npz is missing \(listed in .*manifest.json\)"):
        load_model(model_dir)
    write_manifest(model_dir)  # a manifest that no longer lists it: the loader reads only listed files
    with pytest.raises(CheckpointError, match=r"manifest.json does not list vocab.npz, which the model needs"):
        load_model(model_dir)


def _same_size_edit(path):
    """Alter ``path`` without changing its size, so that only its sha256 tells: one weight changed (the
    file still loads), or one character of a JSON document."""
    before = path.stat().st_size
    if path.suffix == ".pt":
        state = torch.load(path, weights_only=True)
        key = next(k for k, v in state.items() if v.is_floating_point() and v.numel())
        state[key].view(-1)[0] += 1.0
        torch.save(state, path)
    else:
        text = path.read_text()
        i = text.index('"', text.index(":")) + 1  # the first character of the first string value
        path.write_text(text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1:])
    assert path.stat().st_size == before


@pytest.mark.parametrize("name", ["weights.pt", "config.json", "model.json"])
def test_a_file_altered_to_the_same_size_is_refused_by_its_sha256(model_dir, name):
    # the manifest's sizes alone pass these: only the sha256, checked on every load, refuses them
    _same_size_edit(model_dir / name)
    with pytest.raises(CheckpointError, match=rf"{name} does not match its sha256 in .*manifest.json"):
        load_model(model_dir)


def test_truncated_weights_are_refused(model_dir):
    data = (model_dir / "weights.pt").read_bytes()
    (model_dir / "weights.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"weights.pt has \d+ bytes, .* lists \d+: the file is truncated"):
        load_model(model_dir)


def test_a_newer_format_or_a_foreign_variant_says_what_to_do(model_dir):
    doc = json.loads((model_dir / "model.json").read_text())
    (model_dir / "model.json").write_text(json.dumps({**doc, "format_version": 99}))
    write_manifest(model_dir)
    with pytest.raises(CheckpointError, match="format 99 .* is newer than this recsys_emb .*; upgrade recsys_emb"):
        load_model(model_dir)
    doc["features"][0]["embedding"]["type"] = "my_variant"
    (model_dir / "model.json").write_text(json.dumps(doc))
    write_manifest(model_dir)
    with pytest.raises(SpecError, match="model.json: .*my_variant.*must be registered"):
        load_model(model_dir)


def test_only_an_unknown_variant_is_told_to_register_one(model_dir):
    doc = json.loads((model_dir / "model.json").read_text())
    doc["features"][0]["embedding"]["colour"] = "red"
    (model_dir / "model.json").write_text(json.dumps(doc))
    write_manifest(model_dir)
    with pytest.raises(SpecError) as e:
        load_model(model_dir)
    # before: every spec error ended with "(a custom variant must be registered, ...)"
    assert "unknown key(s) ['colour']" in str(e.value) and "registered" not in str(e.value)


def test_weights_that_do_not_fit_the_specs_name_the_parameter(model_dir):
    state = torch.load(model_dir / "weights.pt", weights_only=True)
    key = next(k for k in state if "embedding_bags" in k)
    state[key] = state[key][:-1]
    torch.save(state, model_dir / "weights.pt")
    write_manifest(model_dir)
    with pytest.raises(CheckpointError, match=rf"{key} has shape .*, the model expects"):
        load_model(model_dir)


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PAYLOAD_MARK'], 'w').write('ran')",))


def test_a_pickled_payload_in_the_weights_never_runs(model_dir, tmp_path, monkeypatch):
    mark = tmp_path / "ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    (model_dir / "weights.pt").write_bytes(pickle.dumps({"x": _Payload()}))
    write_manifest(model_dir)  # a forger rewrites the manifest too
    with pytest.raises(CheckpointError, match="not a tensors-only state dict"):
        load_model(model_dir)
    assert not mark.exists()
