from pathlib import Path

import pytest

from recsys_emb.config import apply_overrides, config_from_dict, load_config
from recsys_emb.errors import ConfigError

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
    ({"train": {"epochs": "two"}}, r"train.epochs='two' has the wrong type; expected an integer"),
    ({"train": {"epochs": 0}}, r"train.epochs=0 must be > 0"),
    ({"model": {"kind": "din"}}, r"model.item_pairs is required for kind 'din'"),
    ({"model": {"interaction": "sum"}}, r"model.interaction='sum' is not allowed; choose one of \['dot', 'cat', 'dcn'\]"),
    ({"model": {"interaction": "dcn", "cross_layers": 0}}, r"^model.cross_layers=0 must be an int >= 1 \(DCN-v2 cross"),
    ({"model": {"interaction": "dcn", "cross_rank": -8}}, r"^model.cross_rank=-8 must be an int >= 0 \(.*0 or null = full"),
    ({"model": {"cross_rank": 6.5}}, r"model.cross_rank=6.5 has the wrong type; expected an integer or null"),
    ({"model": {"kind": "din", "item_pairs": [["a", "b"]], "decoupled_embeddings": True, "use_attention": False}},
     r"model.decoupled_embeddings=true needs kind 'din' with use_attention: true \(got kind 'din', use_attention False\)"),
    ({"model": {"decoupled_embeddings": True}}, r"model.decoupled_embeddings=true needs kind 'din'"),
    ({"model": {"kind": "din", "item_pairs": [["a", "b"]], "attention_dim": 6}},
     r"model.attention_dim=6 must be a positive multiple of 4"),
    ({"optim": {"embedding": "lamb"}}, r"optim.embedding='lamb' is not allowed"),
    ({"data": {"path": ""}}, r"data.path is required"),
    ({"data": {"path": "x", "id_dropout": {"user_id": 1.0}}}, r"data.id_dropout.user_id=1.0 must be a probability in \[0, 1\)"),
    ({"data": {"path": "x", "id_dropout": {"user_id": "a"}}}, r"data.id_dropout=\{'user_id': 'a'\} has the wrong type; expected a mapping of names to numbers"),
    ({"train": {"embedding_backend": "fbgemm"}},
     r"train.embedding_backend='fbgemm' is not allowed; choose one of \['torchrec', 'table_batched'\]"),
    ({"embeddings": {"kernel": "concat"}}, r"embeddings.kernel is now train.embedding_backend \(with 'concat' renamed"),
    ({"train": {"device": "tpu"}}, r"train.device='tpu' is not allowed; choose one of \['cpu', 'cuda'\]"),
    ({"train": {"mixed_precision": "fp16"}}, r"train.mixed_precision='fp16' is not allowed; choose one of \['none', 'bf16'\]"),
    ({"train": {"embedding_backend": "table_batched"}, "model": {"kind": "din", "item_pairs": [["a", "b"]]}},
     r"train.embedding_backend='table_batched' serves model.kind 'dlrm' only \(got 'din'\)"),
    ({"train": {"embedding_backend": "table_batched"}, "optim": {"embedding": "adam"}},
     r"optim.embedding \(with train.embedding_backend: table_batched\)='adam' is not allowed; choose one of "
     r"\['sgd', 'rowwise_adagrad'\]"),
    ({"train": {"max_steps": 4.5}}, r"train.max_steps=4.5 has the wrong type; expected an integer or null"),
    ({"train": {"eval_every": "epoch"}}, r"train.eval_every='epoch' is not allowed; use auto \(at least once per epoch\)"),
    ({"train": {"eval_every": -5}}, r"train.eval_every=-5 must be >= 0"),
    ({"train": {"eval_every": 2.5}}, r"train.eval_every=2.5 has the wrong type; expected an integer or a string"),
    ({"model": {"top_mlp": [8, "x"]}}, r"model.top_mlp=\[8, 'x'\] has the wrong type; expected a list of integers"),
    ({"optim": {"embedding_l2": "rows"}}, r"optim.embedding_l2='rows' is not allowed; use auto \(from the number of "),
    ({"optim": {"embedding_l2": -0.1}}, r"optim.embedding_l2=-0.1 must be >= 0"),
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


def test_the_embeddings_section_is_the_preset():
    """One definition: a config's embeddings section is a VariantPreset, defaults included."""
    from recsys_emb.presets import VariantPreset

    assert config_from_dict({"data": {"path": "x"}}).embeddings == VariantPreset()


def test_a_config_file_extends_its_base_and_errors_name_the_file(tmp_path):
    (tmp_path / "base.yaml").write_text("name: b\ndata: {path: d, batch_size: 64}\ntrain: {epochs: 3}\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\nname: r\ndata: {batch_size: 32}\n")
    cfg = load_config(tmp_path / "run.yaml")
    assert (cfg.name, cfg.data.path, cfg.data.batch_size, cfg.train.epochs) == ("r", "d", 32, 3)
    (tmp_path / "bad.yaml").write_text("base: base.yaml\ntrain: {epochs: two}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs='two' has the wrong type; expected an integer"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "syntax.yaml").write_text("train: {epochs: 2\n")
    with pytest.raises(ConfigError, match=r"syntax.yaml: not valid YAML at line \d+, column \d+"):
        load_config(tmp_path / "syntax.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match=r"loop.yaml: the base: chain loops"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"missing.yaml: base='nope.yaml': no such file"):
        load_config(tmp_path / "missing.yaml")


def test_a_saved_config_of_the_earlier_layout_migrates():
    from recsys_emb.config import migrate_config_dict

    old = {"data": {"path": "x"}, "embeddings": {"variant": "full", "kernel": "concat"}, "train": {}}
    assert config_from_dict(migrate_config_dict(old)).train.embedding_backend == "table_batched"


@pytest.mark.parametrize("eval_every, early_stopping, steps_per_epoch, cadence", [
    ("auto", True, 25, (0, True)),        # a small sample: each epoch's end
    ("auto", True, 2000, (0, True)),      # up to AUTO_EVAL_MAX_STEPS: still once per epoch
    ("auto", True, 8950, (2000, True)),   # Criteo Kaggle at batch 4096: every 2,000 steps and each epoch's end
    ("auto", False, 25, (0, True)),       # without early stopping too (the validation curve, a search's pruning)
    (2000, True, 25, (2000, False)),      # an explicit integer is kept as it is (the trainer warns when too long)
    (7, False, 10, (7, False)),
    (0, True, 25, (0, True)),             # the earlier default: each epoch's end with early stopping only
    (0, False, 25, (0, False)),
])
def test_eval_every_cadence_rule(eval_every, early_stopping, steps_per_epoch, cadence):
    from recsys_emb.config import AUTO_EVAL_MAX_STEPS

    assert AUTO_EVAL_MAX_STEPS == 2000
    cfg = config_from_dict({"data": {"path": "x"}, "train": {"eval_every": eval_every,
                                                             **({} if early_stopping else {"early_stopping": None})}})
    assert cfg.train.eval_cadence(steps_per_epoch) == cadence


def test_eval_every_defaults_to_auto_and_old_saved_configs_keep_theirs():
    from recsys_emb.config import migrate_config_dict

    assert config_from_dict({"data": {"path": "x"}}).train.eval_every == "auto"
    assert load_config(ROOT / "configs" / "dlrm_criteo_kaggle.yaml").train.eval_every == "auto"
    assert config_from_dict(migrate_config_dict({"data": {"path": "x"}, "train": {}})).train.eval_every == 0
    saved = {"data": {"path": "x"}, "train": {"eval_every": 30}}
    assert config_from_dict(migrate_config_dict(saved)).train.eval_every == 30


@pytest.mark.parametrize("train_rows, l2", [(4_000, 0.01), (16_000, 0.000625), (40_000, 0.0001),
                                             (49_999, (400 / 49_999) ** 2), (50_000, 0.0), (80_668, 0.0),
                                             (1_600_000, 0.0), (None, 0.0)])
def test_embedding_l2_auto_follows_the_training_rows(train_rows, l2):
    """``optim.embedding_l2: auto`` (the default) is (400 / training rows) ** 2 below 50,000 rows, off from there
    on (the quality tables' 80,000 and 1.6M rows train without it, as before); a number is kept as given."""
    cfg = config_from_dict({"data": {"path": "x"}})
    assert cfg.optim.embedding_l2 == "auto"
    assert cfg.optim.embedding_l2_for(train_rows) == pytest.approx(l2, rel=1e-12, abs=0)
    given = config_from_dict({"data": {"path": "x"}, "optim": {"embedding_l2": 0.0}})
    assert given.optim.embedding_l2_for(train_rows) == 0.0


@pytest.mark.parametrize("train_rows, on", [(4_000, True), (16_000, True), (49_999, True), (50_000, False),
                                             (80_668, False), (1_600_000, False), (None, False)])
def test_model_linear_auto_follows_the_training_rows(train_rows, on):
    """``model.linear: auto`` (the default) is DLRM's first-order term below 50,000 training rows, off from there
    on (the quality tables' 80,000 and 1.6M rows train without it, as before) and for DIN; true / false are
    kept as given."""
    cfg = config_from_dict({"data": {"path": "x"}})
    assert cfg.model.linear == "auto"
    assert cfg.model.linear_for(train_rows) is on
    for given in (True, False):
        explicit = config_from_dict({"data": {"path": "x"}, "model": {"linear": given}})
        assert explicit.model.linear_for(train_rows) is given
    din = config_from_dict({"data": {"path": "x"}, "model": {"kind": "din", "item_pairs": [["a", "b"]]}})
    assert din.model.linear_for(train_rows) is False
    with pytest.raises(ConfigError, match="model.linear=true is DLRM's"):
        config_from_dict({"data": {"path": "x"}, "model": {"kind": "din", "item_pairs": [["a", "b"]], "linear": True}})
    with pytest.raises(ConfigError, match="model.linear='yes' must be true, false or auto"):
        config_from_dict({"data": {"path": "x"}, "model": {"linear": "yes"}})


def test_a_saved_config_from_before_model_linear_builds_without_it():
    """A saved model section without ``linear`` trained without the first-order term: it migrates to false (its
    checkpoint has no such weights to resume or load), not to today's ``auto``; a saved value is kept."""
    from recsys_emb.config import migrate_config_dict

    old = {"data": {"path": "x"}, "model": {"kind": "dlrm"}}
    assert config_from_dict(migrate_config_dict(old)).model.linear is False
    saved = {"data": {"path": "x"}, "model": {"linear": "auto"}}
    assert config_from_dict(migrate_config_dict(saved)).model.linear == "auto"


def test_a_saved_config_from_before_embedding_l2_trains_without_it():
    """A saved optim section without ``embedding_l2`` trained without the penalty: it migrates to 0.0, not
    to today's ``auto``; a saved value is kept."""
    from recsys_emb.config import migrate_config_dict

    old = {"data": {"path": "x"}, "optim": {"embedding": "rowwise_adagrad"}}
    assert config_from_dict(migrate_config_dict(old)).optim.embedding_l2 == 0.0
    saved = {"data": {"path": "x"}, "optim": {"embedding_l2": "auto"}}
    assert config_from_dict(migrate_config_dict(saved)).optim.embedding_l2 == "auto"


def test_a_saved_config_from_before_oov_rows_keeps_its_layout():
    """A saved embeddings section without ``oov_row`` hashed OOV ids like any id: it loads with oov_row false;
    a section that names it, and a user's config (no saved section), keep theirs."""
    from recsys_emb.config import migrate_config_dict

    old = {"data": {"path": "x"}, "embeddings": {"variant": "hashed", "dim": 8}}
    assert config_from_dict(migrate_config_dict(old)).embeddings.oov_row is False
    new = {"data": {"path": "x"}, "embeddings": {"variant": "hashed", "dim": 8, "oov_row": True}}
    assert config_from_dict(migrate_config_dict(new)).embeddings.oov_row is True
    assert config_from_dict({"data": {"path": "x"}, "embeddings": {"variant": "hashed"}}).embeddings.oov_row is True


def test_exponent_notation_is_a_number(tmp_path):
    """PyYAML reads ``1e-4`` as a string; a number field takes it as the number it reads as, a string
    field keeps it, and text that is no number is still refused."""
    path = tmp_path / "c.yaml"
    path.write_text("name: 1e-4\ndata: {path: d}\noptim: {embedding_l2: 1e-4, dense_lr: 2E3}\n")
    cfg = load_config(path)
    assert cfg.optim.embedding_l2 == pytest.approx(1e-4) and cfg.optim.dense_lr == 2000.0
    assert cfg.name == "1e-4"
    path.write_text("data: {path: d}\noptim: {dense_lr: 1e-x}\n")
    with pytest.raises(ConfigError, match=r"optim.dense_lr='1e-x' has the wrong type; expected a number"):
        load_config(path)
    path.write_text("data: {path: d}\noptim: {embedding_l2: 1e-x}\n")  # a number or auto
    with pytest.raises(ConfigError, match=r"optim.embedding_l2='1e-x' is not allowed; use auto"):
        load_config(path)


def test_a_cuda_config_validates_anywhere_and_is_checked_against_the_install_when_it_runs():
    """TorchRec on CUDA is a valid config (a CUDA run's saved config loads on a CPU machine); whether this
    machine can run it is :meth:`RunConfig.check_device`, which checks the real installed stack."""
    import fbgemm_gpu
    import torch

    cfg = config_from_dict({"data": {"path": "x"}, "train": {"device": "cuda", "mixed_precision": "bf16"}})
    assert (cfg.train.embedding_backend, cfg.train.mixed_precision) == ("torchrec", "bf16")
    assert config_from_dict({"data": {"path": "x"}}).check_device().train.device == "cpu"
    if fbgemm_gpu.__variant__ != "cpu" and torch.cuda.is_available():
        pytest.skip("this machine has FBGEMM's CUDA build and a GPU: the check passes")
    with pytest.raises(ConfigError) as err:
        cfg.check_device()
    message = str(err.value)
    assert "\n" not in message and message.startswith("train.device='cuda' with train.embedding_backend='torchrec': ")
    if fbgemm_gpu.__variant__ == "cpu":
        assert "FBGEMM's CPU build (fbgemm-gpu-cpu)" in message
        cu = "cu" + (torch.version.cuda or "12.8").replace(".", "")
        assert (f"pip uninstall -y fbgemm-gpu-cpu && pip install torch==2.13.0 fbgemm-gpu==1.8.0 --index-url "
                f"https://download.pytorch.org/whl/{cu} && pip install torchrec==1.8.0") in message
        assert "or set train.embedding_backend: table_batched" in message


def test_every_packaged_config_resolves_by_name_and_shows_as_a_standalone_copy(tmp_path, monkeypatch):
    """`recsys-emb config show NAME > my.yaml` gives a file that loads, from a directory without the
    base files, as the packaged config does; `--config NAME` and `configs/NAME.yaml` resolve to it."""
    import yaml as _yaml

    from recsys_emb.config import packaged_configs, resolve_config, show_config
    from recsys_emb.search import load_search_config

    monkeypatch.chdir(tmp_path)  # no configs/ here
    configs = packaged_configs()
    assert {"demo", "dlrm_criteo_like_full", "search_dlrm_criteo_like"} <= set(configs)
    for name, path in configs.items():
        assert resolve_config(name) == resolve_config(f"configs/{name}.yaml") == resolve_config(f"{name}.yaml") == path
        copy = tmp_path / f"my_{name}.yaml"
        copy.write_text(show_config(name))
        if name.startswith("search_"):
            assert load_search_config(copy).trial_run_dict() == load_search_config(name).trial_run_dict()
            continue
        assert "base" not in _yaml.safe_load(copy.read_text())
        assert load_config(copy) == load_config(name)
    with pytest.raises(ConfigError, match=r"nope.yaml: no such config file, and no packaged config of that name; "
                                          r"packaged configs: demo, "):
        load_config("configs/nope.yaml")
