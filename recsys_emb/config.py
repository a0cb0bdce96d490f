"""Run configuration: validated dataclasses loaded from YAML, with ``--set key=value`` overrides.

An unknown key or a bad value fails before any work, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml

from recsys_emb.errors import ConfigError
from recsys_emb.presets import VARIANTS, VariantPreset

__all__ = ["DataConfig", "EmbeddingsConfig", "ModelConfig", "OptimConfig", "TrainLoopConfig", "RunConfig",
           "load_config", "apply_overrides", "config_from_dict", "config_to_dict", "dataclass_from_dict", "ConfigError"]


def _choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")


def _positive(key: str, value: Any, allow_zero: bool = False) -> None:
    if value is None:
        return
    if (value < 0) if allow_zero else (value <= 0):
        raise ConfigError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass
class DataConfig:
    """Where the batches come from.

    ``path`` is a processed dataset directory (``metadata.json`` + Parquet splits). If it does not exist
    and ``generate`` is set, it is created first: ``{kind: criteo-like, rows: N, scale: S, seed: K}``,
    ``{kind: sequences, rows: N, max_len: L, seed: K}`` or ``{kind: movielens}`` (from ``../shared/data``).
    """

    path: str = ""
    generate: Optional[Dict[str, Any]] = None
    batch_size: int = 4096
    eval_batch_size: int = 16384
    num_workers: int = 0

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("data.path is required (a processed dataset directory)")
        _positive("data.batch_size", self.batch_size)
        _positive("data.eval_batch_size", self.eval_batch_size)
        _positive("data.num_workers", self.num_workers, allow_zero=True)
        if self.generate is not None:
            _choice("data.generate.kind", self.generate.get("kind"), ["criteo-like", "sequences", "movielens"])


@dataclass
class EmbeddingsConfig:
    """One variant for the dataset's fields (see :class:`recsys_emb.presets.VariantPreset`, whose
    defaults these are: one source, so a config and a preset built without arguments agree)."""

    variant: str = VariantPreset.variant
    dim: int = VariantPreset.dim
    compression: float = VariantPreset.compression
    min_rows: int = VariantPreset.min_rows
    num_hashes: int = VariantPreset.num_hashes
    qr_op: str = VariantPreset.qr_op
    alpha: float = VariantPreset.alpha
    num_blocks: int = VariantPreset.num_blocks
    chunks: int = VariantPreset.chunks
    dims: Dict[str, int] = field(default_factory=dict)
    overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    init_scale: Optional[float] = None
    """Tables start as ``U(-init_scale, init_scale)``; ``None``: TorchRec's ``1/sqrt(rows)`` per table."""
    kernel: str = "torchrec"
    """``torchrec``: TorchRec collections under DistributedModelParallel (any world size, CPU).
    ``concat``: plain-PyTorch concatenated tables on one device (:mod:`recsys_emb.concat`), the way to
    train on a GPU without FBGEMM's GPU kernels; DLRM only, one process, optimizer sgd or rowwise_adagrad."""

    def validate(self) -> None:
        _choice("embeddings.variant", self.variant, VARIANTS)
        _choice("embeddings.kernel", self.kernel, ["torchrec", "concat"])
        _positive("embeddings.init_scale", self.init_scale)
        try:
            self.preset()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def preset(self) -> VariantPreset:
        return VariantPreset(**{k: v for k, v in dataclasses.asdict(self).items() if k not in ("init_scale", "kernel")})


@dataclass
class ModelConfig:
    """``kind: dlrm`` (bottom_mlp, top_mlp, interaction) or ``kind: din`` (item_pairs, attention_mlp, mlp,
    use_attention, activation, mba_lambda). ``item_pairs`` are [candidate, history] field names whose
    tables are shared."""

    kind: str = "dlrm"
    bottom_mlp: List[int] = field(default_factory=lambda: [64, 32])
    top_mlp: List[int] = field(default_factory=lambda: [64, 32])
    interaction: str = "dot"
    item_pairs: List[List[str]] = field(default_factory=list)
    attention_mlp: List[int] = field(default_factory=lambda: [80, 40])
    mlp: List[int] = field(default_factory=lambda: [200, 80])
    use_attention: bool = True
    activation: str = "dice"
    mba_lambda: float = 0.0
    jagged_pooling: str = "mean"

    def validate(self) -> None:
        _choice("model.kind", self.kind, ["dlrm", "din"])
        _choice("model.interaction", self.interaction, ["dot", "cat"])
        _choice("model.activation", self.activation, ["dice", "prelu", "relu"])
        _choice("model.jagged_pooling", self.jagged_pooling, ["sum", "mean"])
        for key in ("bottom_mlp", "top_mlp", "attention_mlp", "mlp"):
            for w in getattr(self, key):
                _positive(f"model.{key}[]", w)
        _positive("model.mba_lambda", self.mba_lambda, allow_zero=True)
        if self.kind == "din" and not self.item_pairs:
            raise ConfigError("model.item_pairs is required for kind 'din': [[candidate, history], ...]")
        for pair in self.item_pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ConfigError(f"model.item_pairs entry {pair!r} must be [candidate field, history field]")


@dataclass
class OptimConfig:
    """Embedding tables: a fused TorchRec optimizer. Dense parameters: a torch optimizer."""

    embedding: str = "rowwise_adagrad"
    embedding_lr: float = 0.05
    dense: str = "adam"
    dense_lr: float = 1e-3
    weight_decay: float = 0.0

    def validate(self) -> None:
        from recsys_emb.sharding import EMBEDDING_OPTIMIZERS

        _choice("optim.embedding", self.embedding, sorted(EMBEDDING_OPTIMIZERS))
        _choice("optim.dense", self.dense, ["adam", "adagrad", "sgd"])
        _positive("optim.embedding_lr", self.embedding_lr)
        _positive("optim.dense_lr", self.dense_lr)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)


@dataclass
class TrainLoopConfig:
    """Epochs, steps, evaluation and checkpoint cadence, output directory (default ``runs/<name>``)."""

    epochs: int = 1
    max_steps: Optional[int] = None
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 50
    out_dir: str = ""
    progress: bool = True
    threads: Optional[int] = None
    sharding_types: List[str] = field(default_factory=lambda: ["table_wise"])
    device: str = "cpu"
    """``cpu``, or ``cuda`` (needs ``embeddings.kernel: concat``)."""

    def validate(self) -> None:
        _choice("train.device", self.device, ["cpu", "cuda"])
        _positive("train.epochs", self.epochs)
        _positive("train.max_steps", self.max_steps)
        for key in ("eval_every", "checkpoint_every", "log_every"):
            _positive(f"train.{key}", getattr(self, key), allow_zero=True)
        _positive("train.threads", self.threads)


@dataclass
class RunConfig:
    """A whole training run."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def validate(self) -> "RunConfig":
        for part in (self.data, self.model, self.embeddings, self.optim, self.train):
            part.validate()
        if self.train.device == "cuda" and self.embeddings.kernel != "concat":
            raise ConfigError("train.device='cuda' needs embeddings.kernel='concat': TorchRec's sharded kernels need "
                              "FBGEMM's GPU build, which this install lacks; set embeddings.kernel: concat")
        if self.embeddings.kernel == "concat":
            if self.model.kind != "dlrm":
                raise ConfigError(f"embeddings.kernel='concat' serves model.kind 'dlrm' only (got "
                                  f"{self.model.kind!r}); use embeddings.kernel: torchrec")
            _choice("optim.embedding (with embeddings.kernel: concat)", self.optim.embedding,
                    ["sgd", "rowwise_adagrad"])
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out_dir or f"runs/{self.name}")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Union:
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, List):
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin in (dict, Dict):
        k, v = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(_type_ok(x, v) for x in value.values())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def dataclass_from_dict(cls: Any, data: Any, prefix: str = "") -> Any:
    """An instance of the (config) dataclass ``cls`` from a plain mapping, nested dataclasses included.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the dotted key
    (``prefix`` + field), the value and what is allowed; values are deep-copied. Validation beyond
    types is the dataclass's own ``validate()``.

    Example:
        >>> dataclass_from_dict(DataConfig, {"path": "d", "batch_size": 8}).batch_size
        8
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key(s) {[where + u for u in unknown]}; allowed in {prefix or 'the top level'}: "
                          f"{sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = dataclass_from_dict(tp, value, key)
            continue
        if isinstance(value, int) and tp is float:
            value = float(value)
        if not _type_ok(value, tp):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected {getattr(tp, '__name__', tp)}")
        kwargs[name] = copy.deepcopy(value)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """A validated :class:`RunConfig` from a plain dict (as loaded from YAML)."""
    return dataclass_from_dict(RunConfig, data).validate()


def config_to_dict(config: RunConfig) -> Dict[str, Any]:
    return dataclasses.asdict(config)


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a config dict.

    Example:
        >>> apply_overrides({"train": {"epochs": 1}}, ["train.epochs=3", "embeddings.variant=qr"])
        {'train': {'epochs': 3}, 'embeddings': {'variant': 'qr'}}
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(path: Union[str, Path], overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config, apply ``--set`` overrides, validate."""
    text = Path(path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a mapping")
    return config_from_dict(apply_overrides(data, overrides))
