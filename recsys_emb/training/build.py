"""From a run config to a model ready to train: the dataset (generated when the config says how), the
feature specs of its fields, the model, and the table backend attached (DistributedModelParallel with
TorchRec's fused kernels, or the single-device table-batched kernel)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from recsys_emb.config import RunConfig
from recsys_emb.data.criteo import load_counts, preprocess
from recsys_emb.data.movielens import prepare_movielens
from recsys_emb.data.sequences import generate_sequences
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.errors import ConfigError, DataError, SpecError
from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer
from recsys_emb.memory import available_memory, format_bytes, memory_from_specs
from recsys_emb.mixed_dims import resolve_frequencies
from recsys_emb.models.din import DIN, attention_specs
from recsys_emb.models.dlrm import DLRM
from recsys_emb.presets import feature_specs
from recsys_emb.sharding import shard_model
from recsys_emb.specs import FeatureSpec, MixedDimension
from recsys_emb.tables import EmbeddingOptimizer, TableBatched

__all__ = ["prepare_data", "build_features", "build_model", "attach_tables", "embedding_layers", "input_features",
           "check_model_fits"]

logger = logging.getLogger(__name__)


def prepare_data(cfg: RunConfig) -> Path:
    """The processed dataset directory, generated first when missing and ``data.generate`` says how."""
    path = Path(cfg.data.path)
    if (path / "metadata.json").exists():
        return path
    gen = cfg.data.generate
    if gen is None:
        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise DataError(f"data.path={str(path)!r}{where} has no metadata.json; preprocess a dataset there "
                        f"(recsys-emb preprocess / generate) or set data.generate")
    kind = gen["kind"]
    opts = {k: v for k, v in gen.items() if k != "kind"}
    logger.info("generating %s data into %s (%s)", kind, path, opts)
    # Without metadata.json the directory holds at most a leftover of a run that died while generating:
    # the writers replace it (they never delete a directory holding files they did not write).
    if kind == "criteo-like":
        raw = path.with_name(path.name + "-raw")
        g = generate_criteo_like(raw, rows=int(opts.get("rows", 100_000)), scale=float(opts.get("scale", 0.01)),
                                 seed=int(opts.get("seed", 0)), overwrite=True)
        preprocess(g.tsv, path, min_count=opts.get("min_count", "auto"),
                   test_fraction=float(opts.get("test_fraction", 0.1)), overwrite=True)
    elif kind == "sequences":
        generate_sequences(path, rows=int(opts.get("rows", 100_000)), seed=int(opts.get("seed", 0)),
                           max_len=int(opts.get("max_len", 50)), overwrite=True)
    else:
        prepare_movielens(path, overwrite=True, **opts)
    return path


def build_features(cfg: RunConfig, schema: Any, counts: Optional[Dict[str, Any]] = None
                   ) -> Tuple[List[FeatureSpec], List[Tuple[str, str]]]:
    """Feature specs for the dataset's sparse and jagged keys, and the DIN item pairs.

    Mixed-dimension blocks follow the data's real id frequencies: ``counts`` (``{field: counts by id}``),
    by default read from the dataset directory's ``counts.npz`` when it has one (Zipf's law otherwise).
    """
    cards = {k: int(schema.vocab_sizes[k]) for k in (*schema.sparse, *schema.jagged)}
    pairs = [(c, h) for c, h in cfg.model.item_pairs]
    for c, h in pairs:
        for name in (c, h):
            if name not in cards:
                raise ConfigError(f"model.item_pairs names field {name!r}, which the data does not have; "
                                  f"fields: {list(cards)}")
    poolings = {k: cfg.model.jagged_pooling for k in schema.jagged}
    shared: Dict[str, str] = {}
    if cfg.model.kind == "din":
        for c, h in pairs:
            poolings[c] = poolings[h] = "none"
            shared[h] = c
            cards[h] = cards[c] = max(cards[c], cards[h])
    specs = feature_specs(cards, cfg.embeddings, poolings=poolings, shared=shared, oov_ids=schema.oov_ids)
    if any(isinstance(s.embedding, MixedDimension) for s in specs):
        if counts is None and (Path(cfg.data.path) / "counts.npz").exists():
            counts = load_counts(cfg.data.path)
        if counts is not None:
            specs = resolve_frequencies(specs, {s.name: counts[s.shared_with or s.name] for s in specs
                                                if len(counts.get(s.shared_with or s.name, ())) == s.cardinality})
    return specs, pairs


def build_model(cfg: RunConfig, schema: Any, embedding_device: Optional[torch.device] = None,
                counts: Optional[Dict[str, Any]] = None, specs: Optional[List[FeatureSpec]] = None,
                dense_device: Optional[torch.device] = None, train_rows: Optional[int] = None,
                linear: Optional[bool] = None) -> nn.Module:
    """The DLRM or DIN of the config for a dataset schema, its tables on ``embedding_device`` (``meta``:
    allocated by the backend, :func:`attach_tables`). ``specs``: the features as already resolved (a model
    directory keeps them), instead of deriving them from the config, the schema and ``counts``.
    ``dense_device``: where the MLPs are built (``meta`` with ``embedding_device="meta"``: every parameter's
    shape, nothing allocated). ``train_rows``: the training split's rows, which ``optim.embedding_l2: auto``
    follows (None: a model built to score, no penalty), as does ``model.linear: auto``. ``linear``: whether
    DLRM has the first-order term, as a saved model records it (None: ``model.linear_for(train_rows)``)."""
    if specs is None:
        specs, pairs = build_features(cfg, schema, counts)
    else:
        pairs = [(c, h) for c, h in cfg.model.item_pairs]
    dense_in = len(schema.dense)
    m = cfg.model
    l2 = cfg.optim.embedding_l2_for(train_rows)
    autocast = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None
    dense_at = torch.device(dense_device) if dense_device is not None else contextlib.nullcontext()
    if m.kind == "dlrm":
        layer = EmbeddingLayer(specs, device=embedding_device, l2=l2)
        with dense_at:
            return DLRM(layer, dense_in=dense_in, bottom_mlp=m.bottom_mlp, top_mlp=m.top_mlp,
                        interaction=m.interaction, dropout=m.dropout, autocast=autocast,
                        cross_layers=m.cross_layers, cross_rank=m.cross_rank,
                        linear=m.linear_for(train_rows) if linear is None else linear)
    item_names = {n for p in pairs for n in p}
    profile = [s for s in specs if s.name not in item_names]
    by_name = {s.name: s for s in specs}
    sequences = SequenceEmbeddingLayer([by_name[n] for p in pairs for n in p], device=embedding_device)
    profile_layer = EmbeddingLayer(profile, device=embedding_device, l2=l2) if profile else None
    attention = None
    if m.decoupled_embeddings:  # the twins follow from the resolved specs, so a model directory rebuilds them
        try:
            twins = attention_specs(sequences.features, m.attention_dim)
        except SpecError as e:
            raise ConfigError(f"model.attention_dim={m.attention_dim!r}: {e}") from None
        attention = SequenceEmbeddingLayer(twins, device=embedding_device)
    with dense_at:
        return DIN(sequences, pairs, profile=profile_layer, dense_in=dense_in, attention_mlp=m.attention_mlp,
                   mlp=m.mlp, use_attention=m.use_attention, activation=m.activation, mba_lambda=m.mba_lambda,
                   dropout=m.dropout, autocast=autocast, attention=attention)


def attach_tables(model: nn.Module, cfg: RunConfig, device: torch.device, world_size: int = 1) -> nn.Module:
    """``model`` (tables built on ``meta``) with the config's table backend attached: the tables allocated,
    filled from the seed (:func:`recsys_emb.tables.init_tables`: the same values for any backend, world
    size and sharding) and trained by the fused embedding optimizer. The result has ``module`` (the
    model) and ``fused_optimizer`` (its state), whichever the backend."""
    optimizer = EmbeddingOptimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr)
    if cfg.train.embedding_backend == "table_batched":
        if world_size > 1:
            raise ConfigError(f"train.embedding_backend='table_batched' trains in one process (world size "
                              f"{world_size} asked); use train.embedding_backend: torchrec to shard across processes")
        return TableBatched(model, optimizer, device=device, init_seed=cfg.seed, init_scale=cfg.embeddings.init_scale)
    return shard_model(model, optimizer, device=device, sharding_types=cfg.train.sharding_types, init_seed=cfg.seed,
                       init_scale=cfg.embeddings.init_scale)


def embedding_layers(model: nn.Module) -> List[Any]:
    """The embedding layers of a model (pooled and sequence), in module order."""
    return [m for m in model.modules() if isinstance(m, (EmbeddingLayer, SequenceEmbeddingLayer))]


def input_features(model: nn.Module) -> List[FeatureSpec]:
    """The features whose ids a model reads from its input (the KJT keys it expects), in module order: every
    embedding layer's features except DIN's attention twins, which read their source features' ids."""
    twins = {id(m.attention) for m in model.modules() if isinstance(m, DIN) and m.attention is not None}
    return [f for layer in embedding_layers(model) if id(layer) not in twins for f in layer.features]


_MLP_KEYS = {"dlrm": ("bottom_mlp", "top_mlp"), "din": ("attention_mlp", "mlp")}
_DENSE_STATE = {"adam": 3, "adagrad": 2, "sgd": 1}  # gradient + optimizer state, in parameter copies


def check_model_fits(cfg: RunConfig, schema: Any, specs: List[FeatureSpec], *, training: bool, share: float = 1.0,
                     available: Optional[int] = None, where: str = "this machine's available memory",
                     linear: Optional[bool] = None) -> nn.Module:
    """Refuse, before anything is allocated, a model whose parameters cannot fit in memory.

    The model is built on the ``meta`` device (every parameter's shape, no memory); the need is its tables
    (with ``training``, and their embedding optimizer's state) times ``share`` (the part one process or host
    holds when the tables are sharded), plus its dense parameters (with ``training``, and their gradients
    and dense optimizer state).

    Args:
        available: bytes to compare with; None: :func:`~recsys_emb.memory.available_memory` (no check
            where it is unknown).
        where: what ``available`` is, for the message.
        linear: whether DLRM has the first-order term (:func:`build_model`'s).
    Returns:
        The model on ``meta`` (its ``state_dict()`` has every declared shape).
    Raises:
        ConfigError: one line naming the setting that asks for most (``embeddings.dim`` and the largest
            table, or the MLP widths and their largest parameter), both sizes and the fix.
    """
    meta = build_model(cfg, schema, embedding_device=torch.device("meta"), specs=specs,
                       dense_device=torch.device("meta"), linear=linear)
    in_layers = {id(p) for layer in embedding_layers(meta) for p in layer.parameters()}
    params = list(meta.named_parameters())
    table_bytes = sum(p.numel() * p.element_size() for _, p in params if id(p) in in_layers)
    dense = [(n, p) for n, p in params if id(p) not in in_layers]
    dense_bytes = sum(p.numel() * p.element_size() for _, p in dense)
    if training:
        table_bytes += memory_from_specs(specs, optimizer=cfg.optim.embedding).optimizer_bytes
        dense_bytes *= _DENSE_STATE.get(cfg.optim.dense, 3)
    tables = int(table_bytes * share)
    need = tables + dense_bytes
    limit = available_memory() if available is None else available
    if limit is None or need <= limit:
        return meta
    if tables >= dense_bytes:
        report = memory_from_specs(specs)
        big = max(report.tables, key=lambda t: t.bytes)
        setting = (f"embeddings.dim={cfg.embeddings.dim} (its largest table, {big.name}, is {big.rows:,} x "
                   f"{big.dim:,})")
        fix = "lower embeddings.dim or the tables' rows (a compressing variant)"
    else:
        name, p = max(dense, key=lambda np_: np_[1].numel())
        widths = ", ".join(f"model.{k}={getattr(cfg.model, k)}" for k in _MLP_KEYS.get(cfg.model.kind, ()))
        setting = f"{widths} (its largest parameter, {name}, is {' x '.join(f'{d:,}' for d in p.shape)})"
        fix = "lower the MLP widths"
    raise ConfigError(f"{setting}: the model needs at least {format_bytes(need)} for its parameters"
                      f"{' and optimizer state' if training else ''} (tables {format_bytes(tables)}, dense "
                      f"{format_bytes(dense_bytes)}), more than {where} ({format_bytes(limit)}); {fix}")
