"""The family registry: a family defined here, out of the package, registered once, is used by a run
config's preset (trained, saved and scored) and by the search space with no other edit; the registry's
checks; the families' knobs of earlier configs load as ``embeddings.options``."""

import math
from dataclasses import dataclass
from typing import ClassVar, List, Optional

import pytest
import torch
import yaml

from recsys_emb.config import config_from_dict, config_to_dict
from recsys_emb.embeddings import EmbeddingVariant, VirtualFeature
from recsys_emb.errors import ConfigError, SpecError
from recsys_emb.families import register_family, unregister_family, variant_names
from recsys_emb.presets import VariantPreset, feature_specs
from recsys_emb.specs import EmbeddingSpec, Full, Sizing, TableDef


@dataclass(frozen=True)
class Strided(EmbeddingSpec):
    """Toy family: id ``x`` reads row ``(x + shift) mod buckets`` of one ``buckets x dim`` table."""

    dim: int
    buckets: int
    shift: int = 0
    kind: ClassVar[str] = "strided"

    @property
    def output_dim(self) -> int:
        return self.dim

    def tables(self, owner: str, cardinality: Optional[int]) -> List[TableDef]:
        return [TableDef(owner, self.buckets, self.dim)]

    @classmethod
    def for_field(cls, sizing: Sizing, name: str, cardinality: int) -> EmbeddingSpec:
        return cls(sizing.dim, max(1, math.ceil(cardinality / sizing.compression)), int(sizing.options["stride_shift"]))

    @classmethod
    def check_options(cls, options, dim, key="embeddings.options") -> None:
        if options["stride_shift"] < 0:
            raise ConfigError(f"{key}.stride_shift={options['stride_shift']} must be >= 0")


class StridedEmbedding(EmbeddingVariant):
    def virtual_features(self) -> List[VirtualFeature]:
        return [VirtualFeature(self.feature.name, self.feature.table_owner)]

    def remap(self, ids: torch.Tensor, lengths: torch.Tensor):
        spec = self.feature.embedding
        return [((ids + spec.shift).remainder(spec.buckets), lengths)]


@pytest.fixture()
def strided():
    register_family(Strided, builder=StridedEmbedding, options={"stride_shift": 0})
    yield Strided
    unregister_family(Strided)
    assert "strided" not in variant_names()


def _tiny_train(tmp_path, data_path, **embeddings):
    from search_helpers import CONFIGS

    cfg = yaml.safe_load((CONFIGS / "search_tiny_train.yaml").read_text())
    cfg["data"]["path"] = str(data_path)
    cfg["train"]["out_dir"] = str(tmp_path / "run")
    cfg["embeddings"].update(embeddings)
    return cfg


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from search_helpers import make_tiny_data

    return make_tiny_data(tmp_path_factory.mktemp("families-data"))


def test_an_out_of_tree_family_trains_saves_and_scores_from_a_preset(strided, tiny_data, tmp_path):
    from recsys_emb.memory import memory_from_specs
    from recsys_emb.serving import load_model
    from recsys_emb.training import train

    cfg = config_from_dict(_tiny_train(tmp_path, tiny_data, variant="strided", compression=4.0,
                                       options={"stride_shift": 3}))
    summary = train(cfg)
    model, specs, _ = load_model(tmp_path / "run")[:3]
    large = [s for s in specs if isinstance(s.embedding, Strided)]
    assert large and all(s.embedding.shift == 3 and s.embedding.buckets == math.ceil(s.cardinality / 4)
                         for s in large)
    assert all(isinstance(s.embedding, Full) for s in specs if s not in large)
    assert summary["embedding_bytes"] == memory_from_specs(specs).bytes
    assert 0.5 < summary["valid"]["auc"] <= 1.0
    # rows read as the spec says: the trained table's row (id + 3) mod buckets
    f = large[0]
    layer = model.embeddings
    from recsys_emb.layer import kjt_from_lists

    ids = [0, 5, f.cardinality - 1]
    got = layer(kjt_from_lists({s.name: [[ids[0]], [ids[1]], [ids[2]]] if s.name == f.name else [[0], [0], [0]]
                                for s in specs})).to_dict()[f.name]
    table = dict(layer.named_parameters())
    weight = next(w for n, w in table.items() if n.endswith(f".{f.name}.weight"))
    torch.testing.assert_close(got, weight[[(i + 3) % f.embedding.buckets for i in ids]])


def test_an_out_of_tree_family_is_chosen_by_the_search(strided, tiny_data, tmp_path):
    from recsys_emb.search import load_search_config, search
    from search_helpers import write_configs

    path = write_configs(tmp_path, tiny_data, space={"dims": [8], "groups": {"large": ["C3", "C4", "C12", "C16"]},
                                                      "ungrouped": "fixed", "variants": ["strided"],
                                                      "compression": [4.0]}, n_trials=1,
                          train_overrides=["train.max_steps=4", "train.eval_every=4"])
    study = search(load_search_config(path), study_name="strided", n_trials=1)
    trial = study.get_trials()[0]
    overrides = trial.user_attrs["embeddings"]["overrides"]
    assert trial.state.name == "COMPLETE" and trial.params["variant:large"] == "strided"
    assert {o["type"] for o in overrides.values()} == {"strided"} and set(overrides) == {"C3", "C4", "C12", "C16"}
    best = config_from_dict(yaml.safe_load((tmp_path / "runs" / "strided" / "best.yaml").read_text()))
    assert best.embeddings.overrides == overrides


def test_registry_refuses_clashes_and_checks_options(strided):
    assert variant_names()[:6] == ("full", "hashed", "multi_hash", "qr", "mixed", "unified")
    assert variant_names()[-1] == "strided"

    @dataclass(frozen=True)
    class Other(Strided):
        kind: ClassVar[str] = "other"

    with pytest.raises(SpecError, match="variant name 'qr' is QuotientRemainder's"):
        register_family(Other, builder=StridedEmbedding, variants={"qr": {}})
    with pytest.raises(SpecError, match="option 'qr_op' is QuotientRemainder's"):
        register_family(Other, builder=StridedEmbedding, options={"qr_op": "x"})
    with pytest.raises(ConfigError, match=r"embeddings.options.stride_shift=-1 must be >= 0"):
        VariantPreset("strided", options={"stride_shift": -1})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['embeddings.options.nope'\]"):
        VariantPreset("hashed", options={"nope": 1})
    with pytest.raises(ConfigError, match=r"embeddings.options.num_hashes='2' has the wrong type"):
        VariantPreset("multi_hash", options={"num_hashes": "2"})
    with pytest.raises(ConfigError, match=r"embeddings.options.chunks=3 must split dim=16"):
        VariantPreset("unified", dim=16, options={"chunks": 3})
    VariantPreset("hashed", dim=16, options={"chunks": 3})  # another family's knob: checked, not against dim


def test_earlier_family_knobs_load_as_options():
    old = config_from_dict({"data": {"path": "d"}, "embeddings": {"variant": "qr", "qr_op": "mult", "num_blocks": 2}})
    new = config_from_dict({"data": {"path": "d"}, "embeddings": {"variant": "qr",
                                                                  "options": {"qr_op": "mult", "num_blocks": 2}}})
    assert old == new and config_to_dict(old)["embeddings"]["options"] == {"qr_op": "mult", "num_blocks": 2}
    cards = {"a": 10, "b": 100_000}
    assert feature_specs(cards, old.embeddings) == feature_specs(cards, new.embeddings)
    with pytest.raises(ConfigError, match=r"embeddings.qr_op and embeddings.options.qr_op are both set"):
        config_from_dict({"data": {"path": "d"}, "embeddings": {"qr_op": "add", "options": {"qr_op": "mult"}}})


def test_tensor_train_trains_from_a_preset_and_its_checkpoint_scores_the_same(tiny_data, tmp_path):
    """The family whose rows are not TorchRec rows (dense cores, trained by the dense optimizer): a run from
    ``embeddings.variant: tt`` trains, its bytes are the specs', and the saved run scores as training did."""
    from recsys_emb.memory import memory_from_specs
    from recsys_emb.serving import evaluate_checkpoint, load_model
    from recsys_emb.specs import TensorTrain
    from recsys_emb.training import train

    summary = train(config_from_dict(_tiny_train(tmp_path, tiny_data, variant="tt", compression=4.0)))
    _, specs, _ = load_model(tmp_path / "run")
    assert any(isinstance(s.embedding, TensorTrain) for s in specs)
    assert summary["embedding_bytes"] == memory_from_specs(specs).bytes
    assert evaluate_checkpoint(tmp_path / "run", split="valid")["auc"] == pytest.approx(summary["valid"]["auc"], abs=1e-6)
