"""Run configuration: validated dataclasses loaded from YAML, with ``--set key=value`` overrides.

A config file may start from another with ``base: other.yaml`` (a path relative to the file): the
file's own keys are merged over the base's, section by section (FuxiCTR's ``Base:`` habit), so runs
that differ in one section are a base and a few short files. An unknown key or a bad value fails before
any work, naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from recsys_emb.errors import ConfigError
from recsys_emb.presets import LEGACY_OPTION_KEYS, VariantPreset
from recsys_emb.tables.optimizer import EMBEDDING_OPTIMIZERS, TABLE_BATCHED_OPTIMIZERS

__all__ = ["DataConfig", "EmbeddingsConfig", "ModelConfig", "OptimConfig", "EarlyStoppingConfig", "TrainLoopConfig", "RunConfig",
           "EMBEDDING_BACKENDS", "TRAIN_PIPELINES", "AUTO_EVAL_MAX_STEPS", "AUTO_EMBEDDING_L2_MAX_ROWS", "AUTO_EMBEDDING_L2_ROWS",
           "AUTO_LINEAR_MAX_ROWS",
           "load_config", "load_config_dict", "apply_overrides", "config_from_dict",
           "config_to_dict", "dataclass_from_dict", "migrate_config_dict", "migrate_embedding_options", "check_plain_name", "ConfigError", "packaged_configs",
           "resolve_config", "show_config"]

EMBEDDING_BACKENDS = ("torchrec", "table_batched")
"""``train.embedding_backend`` values: where the tables live (see :class:`TrainLoopConfig`)."""

TRAIN_PIPELINES = ("sparse_dist", "none")
"""``train.pipeline`` values: how the train loop feeds batches (see :class:`TrainLoopConfig`)."""

AUTO_EVAL_MAX_STEPS = 2000
"""``train.eval_every: auto`` validates at least this often within an epoch longer than this many steps
(the DLRM Criteo Kaggle recipe's cadence), see :meth:`TrainLoopConfig.eval_cadence`."""


AUTO_EMBEDDING_L2_MAX_ROWS = 50_000
"""From this many training rows on, ``optim.embedding_l2: auto`` is 0 (off)."""

AUTO_LINEAR_MAX_ROWS = 50_000
"""From this many training rows on, ``model.linear: auto`` is off (no first-order term)."""
AUTO_EMBEDDING_L2_ROWS = 400.0
"""``optim.embedding_l2: auto`` is ``(AUTO_EMBEDDING_L2_ROWS / training rows) ** 2`` below
:data:`AUTO_EMBEDDING_L2_MAX_ROWS`: 0.01 on 4,000 rows."""


def _choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")


def _auto_or_positive(key: str, value: Any, allowed: str) -> None:
    """``value`` is the string ``auto`` or a number >= 0; anything else raises naming ``key`` and ``allowed``."""
    if isinstance(value, str):
        if value != "auto":
            raise ConfigError(f"{key}={value!r} is not allowed; use {allowed}")
    else:
        _positive(key, value, allow_zero=True)


def check_plain_name(key: str, value: str, example: str = "my-run") -> None:
    """Refuse a name that becomes a directory under ``runs/`` unless it is one plain name: not empty, not
    ``.`` or ``..``, no ``/`` or ``\\`` (``../../x`` would write outside ``runs/``).

    Raises:
        ConfigError: naming the key and the value.

    Example:
        >>> check_plain_name("name", "../../x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        recsys_emb.errors.ConfigError: name='../../x' is not a plain name: it names a directory under runs/ ...
    """
    if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise ConfigError(f"{key}={value!r} is not a plain name: it names a directory under runs/ and must not be "
                          f"empty, '.' or '..', nor hold '/' or '\\'; use e.g. {example!r}")


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
    id_dropout: Dict[str, float] = field(default_factory=dict)
    """``{field: p}``: in training batches only, each id of ``field`` is replaced by the field's OOV id
    (``metadata.json``'s ``oov_ids``) with probability ``p``, drawn anew for every batch and epoch
    (deterministic per seed, so resume is exact). The OOV row then learns "an id the model has not seen",
    which is what every id unseen in training maps to at test time (cold start: on MovieLens, 91% of the
    test rows come from users absent from the training split). Evaluation and scoring never drop ids."""

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("data.path is required (a processed dataset directory)")
        if not isinstance(self.id_dropout, dict):
            raise ConfigError(f"data.id_dropout={self.id_dropout!r} must be a mapping {{field: probability}}")
        for name, prob in self.id_dropout.items():
            if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= float(prob) < 1.0:
                raise ConfigError(f"data.id_dropout.{name}={prob!r} must be a probability in [0, 1)")
        _positive("data.batch_size", self.batch_size)
        _positive("data.eval_batch_size", self.eval_batch_size)
        _positive("data.num_workers", self.num_workers, allow_zero=True)
        if self.generate is not None:
            _choice("data.generate.kind", self.generate.get("kind"), ["criteo-like", "sequences", "movielens"])


EmbeddingsConfig = VariantPreset
"""The ``embeddings:`` section is a :class:`~recsys_emb.presets.VariantPreset`: one variant for the
dataset's fields and its knobs (one definition, used by configs, the search and the benchmarks)."""


@dataclass
class ModelConfig:
    """``kind: dlrm`` (bottom_mlp, top_mlp, interaction ``dot``/``cat``/``dcn``, cross_layers, cross_rank) or ``kind: din`` (item_pairs, attention_mlp, mlp,
    use_attention, activation, mba_lambda). ``item_pairs`` are [candidate, history] field names whose
    tables are shared."""

    kind: str = "dlrm"
    bottom_mlp: List[int] = field(default_factory=lambda: [64, 32])
    top_mlp: List[int] = field(default_factory=lambda: [64, 32])
    interaction: str = "dot"
    cross_layers: int = 3
    """``interaction: dcn``: the number of DCN-v2 cross layers (MLPerf's DLRM-DCNv2: 3)."""
    cross_rank: Optional[int] = 64
    """``interaction: dcn``: the low rank of each cross layer's ``W = U V``; 0 or null = full rank. MLPerf's
    512 on a 3,456-wide input, scaled to Criteo Kaggle's 432 (27 vectors of dim 16) at the same ratio."""
    item_pairs: List[List[str]] = field(default_factory=list)
    attention_mlp: List[int] = field(default_factory=lambda: [80, 40])
    mlp: List[int] = field(default_factory=lambda: [200, 80])
    use_attention: bool = True
    decoupled_embeddings: bool = False
    """``kind: din``: DARE's decoupled embeddings: every candidate and history feature gets an attention twin
    (its own tables, same variant, dim ``attention_dim``) that only the activation unit reads; the
    representation tables give the pooled interest and the candidate (:func:`recsys_emb.models.din.attention_specs`)."""
    attention_dim: Optional[int] = None
    """The attention twins' dim (a multiple of 4); null: half of each feature's dim
    (:func:`recsys_emb.models.din.default_attention_dim`)."""
    activation: str = "dice"
    mba_lambda: float = 0.0
    jagged_pooling: str = "mean"
    dropout: float = 0.0
    """Dropout probability after each hidden layer of DLRM's top MLP / DIN's final MLP (training only)."""
    linear: Union[bool, str] = "auto"
    """DLRM's first-order ("wide") term (:class:`recsys_emb.models.layers.LinearTerm`), started as a logistic
    regression fitted on the training split and held fixed (:mod:`recsys_emb.training.linear_start`):
    ``true``, ``false`` or ``auto`` (the default): on below :data:`AUTO_LINEAR_MAX_ROWS` training rows; see
    :meth:`linear_for`."""

    def linear_for(self, train_rows: Optional[int]) -> bool:
        """Whether a run on ``train_rows`` training rows has the first-order term: the value given, or for
        ``auto`` whether ``kind`` is ``dlrm`` and ``train_rows`` is below :data:`AUTO_LINEAR_MAX_ROWS`
        (50,000; off when the rows are unknown).

        A logistic regression's strength on a few thousand rows is its one weight per id; DLRM reads an id
        only through its embedding's dot products with the other fields' and the top MLP, which need more
        rows to learn what one weight per id learns. With the term fitted first (its ``C`` chosen on the
        validation split) the model of step 0 is that regression, and early stopping keeps it unless the
        deep part improves on it. Measured in docs/training.md ("Small data"); from 50,000 rows on it is off,
        so the large tables train as before.

        Example:
            >>> [ModelConfig().linear_for(n) for n in (4_000, 16_000, 80_000, None)]
            [True, True, False, False]
            >>> din = ModelConfig(kind="din", item_pairs=[["a", "b"]])
            >>> ModelConfig(linear=True).linear_for(80_000), din.linear_for(4_000)
            (True, False)
        """
        if self.linear != "auto":
            return bool(self.linear)
        return self.kind == "dlrm" and bool(train_rows) and int(train_rows or 0) < AUTO_LINEAR_MAX_ROWS

    def validate(self) -> None:
        if self.linear not in (True, False, "auto"):
            raise ConfigError(f"model.linear={self.linear!r} must be true, false or auto (on below "
                              f"{AUTO_LINEAR_MAX_ROWS:,} training rows)")
        if self.linear is True and self.kind != "dlrm":
            raise ConfigError(f"model.linear=true is DLRM's first-order term; kind {self.kind!r} has none: set "
                              f"model.linear: auto or false")
        _choice("model.kind", self.kind, ["dlrm", "din"])
        _choice("model.interaction", self.interaction, ["dot", "cat", "dcn"])
        if isinstance(self.cross_layers, bool) or not isinstance(self.cross_layers, int) or self.cross_layers < 1:
            raise ConfigError(f"model.cross_layers={self.cross_layers!r} must be an int >= 1 (DCN-v2 cross layers, "
                              f"e.g. 3)")
        if self.cross_rank is not None and (isinstance(self.cross_rank, bool) or not isinstance(self.cross_rank, int)
                                            or self.cross_rank < 0):
            raise ConfigError(f"model.cross_rank={self.cross_rank!r} must be an int >= 0 (the cross layers' low "
                              f"rank, e.g. 64; 0 or null = full rank)")
        _choice("model.activation", self.activation, ["dice", "prelu", "relu"])
        _choice("model.jagged_pooling", self.jagged_pooling, ["sum", "mean"])
        for key in ("bottom_mlp", "top_mlp", "attention_mlp", "mlp"):
            for w in getattr(self, key):
                _positive(f"model.{key}[]", w)
        _positive("model.mba_lambda", self.mba_lambda, allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")
        if self.attention_dim is not None and (isinstance(self.attention_dim, bool) or not isinstance(
                self.attention_dim, int) or self.attention_dim < 4 or self.attention_dim % 4):
            raise ConfigError(f"model.attention_dim={self.attention_dim!r} must be a positive multiple of 4 (the "
                              f"attention twins' dim, e.g. 8), or null for half of each feature's dim")
        if self.decoupled_embeddings and (self.kind != "din" or not self.use_attention):
            raise ConfigError(f"model.decoupled_embeddings=true needs kind 'din' with use_attention: true (got kind "
                              f"{self.kind!r}, use_attention {self.use_attention}); set decoupled_embeddings: false")
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
    dense_warmup_steps: int = 0
    """The dense learning rate rises linearly from ``dense_lr / dense_warmup_steps`` to ``dense_lr`` over
    these first steps."""
    dense_decay: str = "none"
    """After warmup: ``none`` (constant), ``linear`` or ``cosine`` down to ``dense_final_lr_ratio * dense_lr``
    at the run's last step."""
    dense_final_lr_ratio: float = 0.0
    embedding_l2: Union[float, str] = "auto"
    """L2 penalty on the table rows a training batch reads, added to the loss (every row read is
    penalised once per batch; see :meth:`recsys_emb.layer.EmbeddingLayer.regularization`); 0 = off.
    ``auto`` (the default) follows the training split's size: ``(400 / train rows) ** 2`` below 50,000
    training rows (0.01 on 4,000 rows, 0.000625 on 16,000), 0 from there on; see :meth:`embedding_l2_for`."""

    def validate(self) -> None:
        _choice("optim.embedding", self.embedding, sorted(EMBEDDING_OPTIMIZERS))
        _auto_or_positive("optim.embedding_l2", self.embedding_l2, "auto (from the number of training rows) or a "
                                                                   "number >= 0 (0 = off)")
        _choice("optim.dense", self.dense, ["adam", "adagrad", "sgd"])
        _positive("optim.embedding_lr", self.embedding_lr)
        _positive("optim.dense_lr", self.dense_lr)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _positive("optim.dense_warmup_steps", self.dense_warmup_steps, allow_zero=True)
        _choice("optim.dense_decay", self.dense_decay, ["none", "linear", "cosine"])
        if not 0.0 <= self.dense_final_lr_ratio <= 1.0:
            raise ConfigError(f"optim.dense_final_lr_ratio={self.dense_final_lr_ratio!r} must be in [0, 1]")

    def embedding_l2_for(self, train_rows: Optional[int]) -> float:
        """The L2 strength a run on ``train_rows`` training rows uses: the number given, or for ``auto``
        ``(AUTO_EMBEDDING_L2_ROWS / train_rows) ** 2`` (``(400 / rows) ** 2``) below
        ``AUTO_EMBEDDING_L2_MAX_ROWS`` (50,000) training rows and 0 from there on (and 0 when the rows
        are unknown: a model built to score).

        Each row a batch reads is penalised once per batch, so a rare id's row is pulled to 0 about as
        often as its few examples pull it elsewhere, while a frequent id's row hardly feels it. On a few
        thousand rows most rows are rare and a table memorises them within an epoch or two; with more
        rows each row has more examples and the penalty matters less. Measured (docs/training.md,
        "Small data"): on 4,000 training rows 0.01 lifted DLRM's test AUC (generated Criteo-like +0.02,
        MovieLens +0.06); on 16,000 rows 0.0025 lowered Criteo-like's by 0.0125 and lifted MovieLens's by
        0.0095, while 0.000625 moved them by -0.0018 and +0.004; on MovieLens's 80,000 rows 0.0001 and
        0.001 had lowered every variant's (an older recipe). Hence a strength falling with the square of
        the rows, and none from 50,000 rows on (the quality tables' data, 80,000 and 1.6M training rows,
        train as before).

        Example:
            >>> [OptimConfig().embedding_l2_for(n) for n in (4_000, 16_000, 80_000, None)]
            [0.01, 0.000625, 0.0, 0.0]
            >>> OptimConfig(embedding_l2=0.001).embedding_l2_for(4_000)
            0.001
        """
        if self.embedding_l2 != "auto":
            return float(self.embedding_l2)
        if not train_rows or train_rows >= AUTO_EMBEDDING_L2_MAX_ROWS:
            return 0.0
        return AUTO_EMBEDDING_L2_ROWS ** 2 / train_rows ** 2

    def dense_lr_factor(self, step: int, total: int) -> float:
        """The dense learning rate at optimizer step ``step`` (0-based) of ``total``, as a factor of
        ``dense_lr``: a function of the step alone, so a resumed run continues the same schedule.

        Example:
            >>> o = OptimConfig(dense_warmup_steps=2, dense_decay="linear")
            >>> [round(o.dense_lr_factor(s, 6), 2) for s in range(6)]
            [0.5, 1.0, 1.0, 0.67, 0.33, 0.0]
        """
        if step < self.dense_warmup_steps:
            return (step + 1) / self.dense_warmup_steps
        if self.dense_decay == "none":
            return 1.0
        span = max(1, total - 1 - self.dense_warmup_steps)
        t = min(1.0, max(0.0, (step - self.dense_warmup_steps) / span))
        shape = 1.0 - t if self.dense_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
        return self.dense_final_lr_ratio + (1.0 - self.dense_final_lr_ratio) * shape


@dataclass
class EarlyStoppingConfig:
    """Stop when the validation metric has not improved for ``patience`` evaluations, and keep the
    model of the best evaluation (its checkpoint stays, its test metrics are the run's)."""

    monitor: str = "logloss"
    """``logloss`` (lower is better) or ``auc`` (higher is better), on the validation split."""
    patience: int = 3
    """Evaluations without an improvement of more than ``min_delta`` before training stops."""
    min_delta: float = 0.0

    def validate(self) -> None:
        _choice("train.early_stopping.monitor", self.monitor, ["logloss", "auc"])
        _positive("train.early_stopping.patience", self.patience)
        _positive("train.early_stopping.min_delta", self.min_delta, allow_zero=True)

    def improved(self, value: float, best: Optional[float]) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta``.

        Example:
            >>> EarlyStoppingConfig("auc", min_delta=0.01).improved(0.705, 0.7)
            False
        """
        if best is None:
            return True
        return value < best - self.min_delta if self.monitor == "logloss" else value > best + self.min_delta


@dataclass
class TrainLoopConfig:
    """Epochs, steps, evaluation and checkpoint cadence, output directory (default ``runs/<name>``)."""

    epochs: int = 1
    max_steps: Optional[int] = None
    eval_every: Union[int, str] = "auto"
    """When the validation split is scored (early stopping, keep-best, a search's pruning): ``auto`` at the
    end of every epoch, and every ``AUTO_EVAL_MAX_STEPS`` (2,000) steps in a run whose epochs are longer;
    ``N``: every N steps of the run; ``0``: at the end of each epoch when early stopping is on, else never
    before the run's end. See :meth:`eval_cadence`."""
    checkpoint_every: int = 0
    log_every: int = 50
    out_dir: str = ""
    progress: bool = True
    threads: Optional[int] = None
    sharding_types: List[str] = field(default_factory=lambda: ["table_wise"])
    device: str = "cpu"
    """``cpu``, or ``cuda``: one process per GPU (``LOCAL_RANK`` -> ``cuda:LOCAL_RANK``), NCCL, and with
    ``embedding_backend: torchrec`` FBGEMM's CUDA build (checked by :meth:`RunConfig.check_device`)."""
    mixed_precision: str = "none"
    """``bf16``: the dense part of the model (MLPs, interaction, attention) runs under bfloat16 autocast,
    the tables and the loss in float32; ``none``: float32 throughout."""
    early_stopping: Optional[EarlyStoppingConfig] = field(default_factory=EarlyStoppingConfig)
    """Early stopping on a validation metric, evaluated when ``eval_every`` says (by default at the end of
    each epoch); on by default (validation log loss, patience 3): a run reports the model of its
    best evaluation, not the last one. ``null``: train all epochs and report the last model."""
    keep_last: Optional[int] = 2
    """Step checkpoints kept (the newest; the best one of early stopping is kept as well); ``null``: all."""
    embedding_backend: str = "torchrec"
    """Where the tables live. ``torchrec``: TorchRec collections under DistributedModelParallel (any world
    size). ``table_batched``: the single-device table-batched kernel (:class:`recsys_emb.tables.TableBatched`),
    the way to train on a GPU without FBGEMM's GPU kernels; DLRM only, one process, optimizer sgd or
    rowwise_adagrad."""
    pipeline: str = "sparse_dist"
    """How the loop feeds batches. ``sparse_dist``: TorchRec's ``TrainPipelineSparseDist`` (the next batch's
    copy to the device, remap and id all-to-all run ahead of its step) where it applies: the ``torchrec``
    backend and DLRM; other runs take the plain loop. ``none``: the plain loop, one batch at a time. Both
    give the same model."""

    def validate(self) -> None:
        _choice("train.device", self.device, ["cpu", "cuda"])
        _choice("train.pipeline", self.pipeline, list(TRAIN_PIPELINES))
        _choice("train.embedding_backend", self.embedding_backend, list(EMBEDDING_BACKENDS))
        _choice("train.mixed_precision", self.mixed_precision, ["none", "bf16"])
        _positive("train.epochs", self.epochs)
        _positive("train.max_steps", self.max_steps)
        _auto_or_positive("train.eval_every", self.eval_every, "auto (at least once per epoch) or a number of steps")
        for key in ("checkpoint_every", "log_every"):
            _positive(f"train.{key}", getattr(self, key), allow_zero=True)
        _positive("train.threads", self.threads)
        _positive("train.keep_last", self.keep_last)
        if self.early_stopping is not None:
            self.early_stopping.validate()

    def eval_cadence(self, steps_per_epoch: int) -> Tuple[int, bool]:
        """``(every, at_epoch_end)``: the run validates at each step that is a multiple of ``every`` (0:
        none) and, when ``at_epoch_end``, at the last step of each epoch.

        ``eval_every: auto`` validates at the end of every epoch and, when an epoch has more than
        ``AUTO_EVAL_MAX_STEPS`` steps, every ``AUTO_EVAL_MAX_STEPS`` steps as well, so early stopping
        and keep-best act on small data (an epoch of 25 steps: each epoch) as on large (an epoch of
        8,950 steps: steps 2,000, 4,000, 6,000, 8,000 and 8,950). An integer ``N`` validates every ``N``
        steps (counted from the start of the run), and ``0`` at each epoch's end with early stopping only.

        Example:
            >>> TrainLoopConfig().eval_cadence(25), TrainLoopConfig().eval_cadence(8950)
            ((0, True), (2000, True))
            >>> TrainLoopConfig(eval_every=2000).eval_cadence(25), TrainLoopConfig(eval_every=0).eval_cadence(25)
            ((2000, False), (0, True))
        """
        if self.eval_every == "auto":
            return (AUTO_EVAL_MAX_STEPS if steps_per_epoch > AUTO_EVAL_MAX_STEPS else 0), True
        every = int(self.eval_every)
        return every, (every == 0 and self.early_stopping is not None)


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
        if not self.train.out_dir:  # the name is the run's directory, runs/<name>
            check_plain_name("name", self.name)
        if self.train.embedding_backend == "table_batched":
            if self.model.kind != "dlrm":
                raise ConfigError(f"train.embedding_backend='table_batched' serves model.kind 'dlrm' only (got "
                                  f"{self.model.kind!r}); use train.embedding_backend: torchrec")
            _choice("optim.embedding (with train.embedding_backend: table_batched)", self.optim.embedding,
                    list(TABLE_BATCHED_OPTIMIZERS))
        return self

    def check_device(self) -> "RunConfig":
        """Check that this machine's install can run ``train.device`` (a run checks it before any process
        or data is made; :meth:`validate` does not, so a CUDA run's saved config still loads on a CPU
        machine). Raises :class:`ConfigError` with the fix: the install command of FBGEMM's CUDA build
        for ``embedding_backend: torchrec``, or a GPU that PyTorch can see."""
        if self.train.device == "cuda":
            from recsys_emb.torch_stack import cuda_problem

            problem = cuda_problem(fbgemm_kernels=self.train.embedding_backend == "torchrec")
            if problem is not None:
                alt = "; or set train.embedding_backend: table_batched (one GPU, plain PyTorch, DLRM)" \
                    if self.train.embedding_backend == "torchrec" and "CPU build (" in problem else ""
                raise ConfigError(f"train.device='cuda' with train.embedding_backend="
                                  f"{self.train.embedding_backend!r}: {problem}{alt}")
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
    if origin in (dict, Dict, Mapping, collections.abc.Mapping):
        k, v = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(_type_ok(x, v) for x in value.values())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_words(tp: Any) -> str:
    """A type in words, for error messages: ``Optional[int]`` -> "an integer or null"."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        words = [_type_words(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin in (list, List):
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_plural(_type_words(inner))}"
    if origin in (dict, Dict, Mapping, collections.abc.Mapping):
        _, v = typing.get_args(tp) or (Any, Any)
        return f"a mapping of names to {_plural(_type_words(v))}"
    if dataclasses.is_dataclass(tp):
        return "a mapping of its keys"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Any: "any value"}.get(
        tp, f"a {getattr(tp, '__name__', tp)}")


def _plural(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article):
            words = words[len(article):]
            break
    return {"integer": "integers", "number": "numbers", "string": "strings", "true or false": "booleans",
            "any value": "values"}.get(words, words + "s")


_YAML11_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
"""A number in exponent notation, which YAML 1.1 (PyYAML) leaves a string unless it has both a dot and a
signed exponent (``1e-4``, ``1.0e4``: strings; ``1.0e-4``: a number)."""


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
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is Union else []
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]) and value is not None:
            tp = inner[0]  # Optional[section]: a mapping builds it, null leaves it out
        if dataclasses.is_dataclass(tp):
            kwargs[name] = dataclass_from_dict(tp, value, key)
            continue
        if isinstance(value, int) and tp is float:
            value = float(value)
        if isinstance(value, str) and float in (tp, *inner) and _YAML11_EXPONENT.match(value):
            value = float(value)  # PyYAML (YAML 1.1) reads 1e-4 as a string: it needs 1.0e-4
        if not _type_ok(value, tp):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_words(tp)}")
        kwargs[name] = copy.deepcopy(value)
    return cls(**kwargs)


_RENAMED = {("embeddings", "kernel"): "train.embedding_backend (with 'concat' renamed 'table_batched')"}
"""Keys of earlier versions: a saved run's config is migrated (:func:`migrate_config_dict`); a config file
that still uses one gets the new name in its error."""


def migrate_embedding_options(emb: Mapping[str, Any]) -> Dict[str, Any]:
    """An ``embeddings:`` section with the families' knobs of earlier versions (``num_hashes``, ``qr_op``,
    ``alpha``, ``num_blocks``, ``chunks`` as keys of the section) moved into its ``options:`` mapping, where
    they mean the same. A knob given both ways raises :class:`ConfigError`.

    Example:
        >>> migrate_embedding_options({"variant": "qr", "qr_op": "mult"})
        {'variant': 'qr', 'options': {'qr_op': 'mult'}}
    """
    out = dict(emb)
    moved = [k for k in LEGACY_OPTION_KEYS if k in out]
    if not moved:
        return out
    options = out.get("options")
    options = dict(options) if isinstance(options, Mapping) else ({} if options is None else options)
    if not isinstance(options, dict):
        return out  # dataclass_from_dict reports the wrong type of options
    for k in moved:
        if k in options:
            raise ConfigError(f"embeddings.{k} and embeddings.options.{k} are both set; keep embeddings.options.{k} "
                              f"(embeddings.{k} is the key of earlier versions)")
        options[k] = out.pop(k)
    out["options"] = options
    return out


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """A validated :class:`RunConfig` from a plain dict (as loaded from YAML). An ``embeddings:`` section
    in the keys of earlier versions loads as today's (:func:`migrate_embedding_options`)."""
    for (section, key), new in _RENAMED.items():
        if isinstance(data.get(section), Mapping) and key in data[section]:
            raise ConfigError(f"{section}.{key} is now {new}; rename it")
    if isinstance(data.get("embeddings"), Mapping):
        data = {**data, "embeddings": migrate_embedding_options(data["embeddings"])}
    return dataclass_from_dict(RunConfig, data).validate()


def migrate_config_dict(data: Mapping[str, Any]) -> Dict[str, Any]:
    """A run config dict saved by an earlier version (a checkpoint's ``trainer.json``), in today's keys.

    A saved ``embeddings`` section (it names its ``variant``) without ``oov_row`` was written before
    OOV ids had rows of their own: it gets ``oov_row: false``, the layout its tables were trained in; its
    families' knobs move into ``options:`` (:func:`migrate_embedding_options`). A
    saved ``train`` section without ``eval_every`` was written when its default was ``0`` (validate at
    each epoch's end with early stopping): it gets ``eval_every: 0``, the cadence it trained with. A
    saved ``optim`` section without ``embedding_l2`` was written before the penalty existed: it gets
    ``embedding_l2: 0.0`` (off, as it trained), not today's ``auto``; a saved ``model`` section without
    ``linear`` gets ``linear: false`` (no first-order term, as it trained).

    Example:
        >>> migrate_config_dict({"embeddings": {"kernel": "concat"}, "train": {}})
        {'embeddings': {}, 'train': {'embedding_backend': 'table_batched', 'eval_every': 0}}
        >>> migrate_config_dict({"embeddings": {"variant": "hashed"}})
        {'embeddings': {'variant': 'hashed', 'oov_row': False}}
    """
    out = copy.deepcopy(dict(data))
    emb = out.get("embeddings")
    if isinstance(emb, dict) and "kernel" in emb:
        kernel = emb.pop("kernel")
        out.setdefault("train", {})["embedding_backend"] = "table_batched" if kernel == "concat" else kernel
    if isinstance(emb, dict) and "variant" in emb and "oov_row" not in emb:
        emb["oov_row"] = False
    if isinstance(emb, dict):
        out["embeddings"] = migrate_embedding_options(emb)
    if isinstance(out.get("train"), dict):
        out["train"].setdefault("eval_every", 0)
    if isinstance(out.get("optim"), dict):
        out["optim"].setdefault("embedding_l2", 0.0)
    if isinstance(out.get("model"), dict):
        out["model"].setdefault("linear", False)
    return out


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
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not plain YAML: {problem} (tags that build Python "
                              "objects are refused; give a number, a string, a list or a mapping)") from None
    return data


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    return data


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """``over``'s keys over ``base``'s, mappings merged key by key, everything else replaced."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


PACKAGED_CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
"""The configs shipped with the package (``recsys_emb/configs/*.yaml``; ``configs/`` in a checkout links here)."""


def packaged_configs() -> Dict[str, Path]:
    """The configs shipped with the package: ``{name: path}``, the name being the file's stem.

    Example:
        >>> configs = packaged_configs()
        >>> configs["demo"].name, "dlrm_criteo_like_base" in configs
        ('demo.yaml', True)
    """
    return {p.stem: p for p in sorted(PACKAGED_CONFIGS_DIR.glob("*.yaml"))}


def resolve_config(path: Union[str, Path]) -> Path:
    """The config file ``path`` names: the file itself when it exists, else the packaged config of that
    name, given as ``NAME``, ``NAME.yaml`` or ``configs/NAME.yaml`` (the spelling of the docs, so their
    commands work from any directory). Nothing found: :class:`ConfigError` listing the packaged names.

    Example:
        >>> resolve_config("demo") == packaged_configs()["demo"]
        True
        >>> resolve_config("configs/demo.yaml").resolve() == packaged_configs()["demo"]  # a file, else the packaged one
        True
    """
    given = Path(path)
    if given.exists():
        return given
    parts = given.parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "configs"):
        stem = given.name[:-len(".yaml")] if given.name.endswith(".yaml") else given.name
        found = packaged_configs().get(stem)
        if found is not None:
            return found
    raise ConfigError(f"{path}: no such config file, and no packaged config of that name; packaged configs: "
                      f"{', '.join(packaged_configs())} (`recsys-emb config list`)")


def show_config(name: Union[str, Path]) -> str:
    """A config's text, ready to save as a file of one's own (``recsys-emb config show NAME > my.yaml``):
    the file as written when it has no ``base:``; otherwise its leading comments, then the config with its
    ``base:`` chain merged in (the base files would not be beside the copy).

    Example:
        >>> copy = yaml.safe_load(show_config("dlrm_criteo_like_full"))
        >>> "base" in copy, load_config_dict("dlrm_criteo_like_full") == copy
        (False, True)
    """
    path = resolve_config(name)
    text = path.read_text()
    if "base" not in (yaml.safe_load(text) or {}):
        return text
    comments = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comments.append(line)
    merged = yaml.safe_dump(load_config_dict(path), sort_keys=False, default_flow_style=None, width=110)
    return "\n".join([*comments, f"# ({path.name} with its base: files merged in)", merged.rstrip()]) + "\n"


def load_config_dict(path: Union[str, Path], _seen: Sequence[Path] = ()) -> Dict[str, Any]:
    """A config file as a plain dict, its ``base:`` chain merged in (errors name the file).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "base.yaml").write_text("train: {epochs: 3, log_every: 5}")
        >>> _ = (d / "run.yaml").write_text("{base: base.yaml, train: {epochs: 1}}")
        >>> load_config_dict(d / "run.yaml")
        {'train': {'epochs': 1, 'log_every': 5}}
    """
    path = Path(path) if _seen else resolve_config(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(f"{path}: the base: chain loops ({chain})")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base={base!r} must be the path of another config file (relative to this one)")
    base_path = path.parent / base
    if not base_path.exists():
        raise ConfigError(f"{path}: base={base!r}: no such file {base_path}")
    return _merge(load_config_dict(base_path, (*_seen, resolved)), data)


def load_config(path: Union[str, Path], overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config (and its ``base:`` files), apply ``--set`` overrides, validate; a bad key or
    value raises :class:`ConfigError` naming the file. ``path`` may name a packaged config
    (:func:`resolve_config`: ``demo``, ``configs/demo.yaml`` from any directory)."""
    data = load_config_dict(path)
    try:
        return config_from_dict(apply_overrides(data, overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
