from pathlib import Path

import pytest

from recsys_emb.config import ConfigError, apply_overrides, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("search_")),
                         ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.data.path and cfg.name


def test_overrides_apply_and_validate():
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["embeddings.variant=qr", "train.max_steps=7", "seed=3"])
    assert (cfg.embeddings.variant, cfg.train.max_steps, cfg.seed) == ("qr", 7, 3)


@pytest.mark.parametrize("data, match", [
    ({"trian": {}}, r"unknown key\(s\) \['trian'\]; allowed in the top level: \[.*'train'"),
    ({"train": {"epochz": 2}}, r"unknown key\(s\) \['train.epochz'\]; allowed in train: \[.*'epochs'"),
    ({"embeddings": {"variant": "bloom"}}, r"embeddings.variant='bloom' is not allowed; choose one of \['full'"),
    ({"embeddings": {"dim": 6}}, r"embeddings.dim=6 must be a positive multiple of 4"),
    ({"embeddings": {"init_scale": -0.1}}, r"embeddings.init_scale=-0.1 must be > 0"),
    ({"train": {"epochs": "two"}}, r"train.epochs='two' has the wrong type; expected int"),
    ({"train": {"epochs": 0}}, r"train.epochs=0 must be > 0"),
    ({"model": {"kind": "din"}}, r"model.item_pairs is required for kind 'din'"),
    ({"model": {"interaction": "sum"}}, r"model.interaction='sum' is not allowed; choose one of \['dot', 'cat'\]"),
    ({"optim": {"embedding": "lamb"}}, r"optim.embedding='lamb' is not allowed"),
    ({"data": {"path": ""}}, r"data.path is required"),
    ({"embeddings": {"kernel": "fbgemm"}}, r"embeddings.kernel='fbgemm' is not allowed; choose one of \['torchrec', 'concat'\]"),
    ({"train": {"device": "tpu"}}, r"train.device='tpu' is not allowed; choose one of \['cpu', 'cuda'\]"),
    ({"train": {"device": "cuda"}}, r"train.device='cuda' needs embeddings.kernel='concat'.*set embeddings.kernel: concat"),
    ({"embeddings": {"kernel": "concat"}, "model": {"kind": "din", "item_pairs": [["a", "b"]]}},
     r"embeddings.kernel='concat' serves model.kind 'dlrm' only \(got 'din'\)"),
    ({"embeddings": {"kernel": "concat"}, "optim": {"embedding": "adam"}},
     r"optim.embedding \(with embeddings.kernel: concat\)='adam' is not allowed; choose one of \['sgd', 'rowwise_adagrad'\]"),
])
def test_bad_configs_fail_naming_key_value_and_allowed(data, match):
    base = {"data": {"path": "x"}}
    merged = {**base, **data}
    if "data" in data:
        merged["data"] = data["data"]
    with pytest.raises(ConfigError, match=match):
        config_from_dict(merged)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_overrides({}, ["train.epochs"])


def test_embeddings_config_defaults_are_the_preset_defaults():
    """A config without an embeddings section and a bare VariantPreset describe the same tables."""
    import dataclasses

    from recsys_emb.config import EmbeddingsConfig
    from recsys_emb.presets import VariantPreset

    assert EmbeddingsConfig().preset() == VariantPreset()
    preset_fields = {f.name for f in dataclasses.fields(VariantPreset)}
    assert preset_fields <= {f.name for f in dataclasses.fields(EmbeddingsConfig)}
