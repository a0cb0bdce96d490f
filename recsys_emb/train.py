"""Training and evaluation of CTR models on any embedding variant, with TorchRec's fused optimizers.

``recsys-emb train --config configs/NAME.yaml [--set key=value ...] [--resume] [--nproc N]``, or
``torchrun --nproc-per-node N -m recsys_emb.train --config ...``. In Python: :func:`train`,
:func:`evaluate_checkpoint`, :func:`load_model`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recsys_emb.concat import ConcatenatedEmbeddingBags
from recsys_emb.config import ConfigError, RunConfig, config_from_dict, config_to_dict, load_config
from recsys_emb.memory import memory_from_specs
from recsys_emb.presets import feature_specs
from recsys_emb.specs import FeatureSpec, MixedDimension, resolve_frequencies

__all__ = ["build_features", "build_model", "prepare_data", "train", "plan_run", "evaluate_checkpoint", "load_model",
           "ctr_metrics", "main"]

logger = logging.getLogger(__name__)

FAULT_KILL_ENV = "RECSYS_EMB_FAULT_KILL_AT_STEP"
"""Fault injection for resume tests: the training process SIGKILLs itself after this step."""


# ----------------------------------------------------------------------------------------------- data
def prepare_data(cfg: RunConfig) -> Path:
    """The processed dataset directory, generated first when missing and ``data.generate`` says how."""
    path = Path(cfg.data.path)
    if (path / "metadata.json").exists():
        return path
    gen = cfg.data.generate
    if gen is None:
        raise FileNotFoundError(f"data.path={str(path)!r} has no metadata.json; preprocess a dataset there "
                                f"(recsys-emb preprocess / generate) or set data.generate")
    kind = gen["kind"]
    opts = {k: v for k, v in gen.items() if k != "kind"}
    logger.info("generating %s data into %s (%s)", kind, path, opts)
    if kind == "criteo-like":
        from recsys_emb.data.criteo import preprocess
        from recsys_emb.data.synthetic import generate_criteo_like

        raw = path.with_name(path.name + "-raw")
        g = generate_criteo_like(raw, rows=int(opts.get("rows", 100_000)), scale=float(opts.get("scale", 0.01)),
                                 seed=int(opts.get("seed", 0)))
        preprocess(g.tsv if hasattr(g, "tsv") else raw / "criteo_like.tsv", path,
                   min_count=int(opts.get("min_count", 1)), test_fraction=float(opts.get("test_fraction", 0.1)))
    elif kind == "sequences":
        from recsys_emb.data.sequences import generate_sequences

        generate_sequences(path, rows=int(opts.get("rows", 100_000)), seed=int(opts.get("seed", 0)),
                           max_len=int(opts.get("max_len", 50)))
    else:
        from recsys_emb.data.movielens import prepare_movielens

        prepare_movielens(path, **opts)
    return path


# ----------------------------------------------------------------------------------------------- model
def build_features(cfg: RunConfig, schema: Any) -> Tuple[List[FeatureSpec], List[Tuple[str, str]]]:
    """Feature specs for the dataset's sparse and jagged keys, and the DIN item pairs."""
    cards = {k: int(schema.vocab_sizes[k]) for k in (*schema.sparse, *schema.jagged)}
    pairs = [(c, h) for c, h in cfg.model.item_pairs]
    for c, h in pairs:
        for name in (c, h):
            if name not in cards:
                raise ValueError(f"model.item_pairs names field {name!r}, which the data does not have; "
                                 f"fields: {list(cards)}")
    poolings = {k: cfg.model.jagged_pooling for k in schema.jagged}
    shared: Dict[str, str] = {}
    if cfg.model.kind == "din":
        for c, h in pairs:
            poolings[c] = poolings[h] = "none"
            shared[h] = c
            cards[h] = cards[c] = max(cards[c], cards[h])
    specs = feature_specs(cards, cfg.embeddings.preset(), poolings=poolings, shared=shared)
    if any(isinstance(s.embedding, MixedDimension) for s in specs):
        # mixed-dimension blocks follow the data's real id frequencies (the counts written by the
        # preprocessing), not Zipf's-law defaults, when the dataset has them
        counts_path = Path(cfg.data.path) / "counts.npz"
        if counts_path.exists():
            from recsys_emb.data.criteo import load_counts

            counts = load_counts(cfg.data.path)
            specs = resolve_frequencies(specs, {s.name: counts[s.shared_with or s.name] for s in specs
                                                if len(counts.get(s.shared_with or s.name, ())) == s.cardinality})
    return specs, pairs


def build_model(cfg: RunConfig, schema: Any, embedding_device: Optional[torch.device] = None,
                kernel: str = "torchrec") -> nn.Module:
    """The DLRM or DIN of the config for a dataset schema (tables on ``embedding_device``).

    ``kernel="concat"`` builds DLRM's tables as plain-PyTorch concatenated tables with the config's
    embedding optimizer fused into backward (``embeddings.kernel: concat``); serving loads either kind
    into the default TorchRec kernel (the state-dict keys are the same)."""
    specs, pairs = build_features(cfg, schema)
    dense_in = len(schema.dense)
    m = cfg.model
    if m.kind == "dlrm":
        from recsys_emb.concat import FusedOptimizer
        from recsys_emb.models.dlrm import DLRM

        fused = FusedOptimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr) if kernel == "concat" else None
        return DLRM(specs, dense_in=dense_in, bottom_mlp=m.bottom_mlp, top_mlp=m.top_mlp, interaction=m.interaction,
                    embedding_device=embedding_device, embedding_kernel=kernel, embedding_optimizer=fused)
    from recsys_emb.models.din import DIN

    by_name = {s.name: s for s in specs}
    item_names = {n for p in pairs for n in p}
    return DIN([s for s in specs if s.name not in item_names], [(by_name[c], by_name[h]) for c, h in pairs],
               dense_in=dense_in, attention_mlp=m.attention_mlp, mlp=m.mlp, use_attention=m.use_attention,
               activation=m.activation, mba_lambda=m.mba_lambda, embedding_device=embedding_device)


def _forward(model: nn.Module, batch: Any, device: Optional[torch.device] = None) -> torch.Tensor:
    if device is not None and device.type != "cpu":
        return model(batch.dense.to(device, non_blocking=True), batch.sparse.to(device, non_blocking=True))
    return model(batch.dense, batch.sparse)


# ----------------------------------------------------------------------------------------------- metrics
def ctr_metrics(labels: np.ndarray, logits: np.ndarray) -> Dict[str, float]:
    """AUC, log loss and normalised entropy (log loss / entropy of the evaluated set's positive rate).

    Example:
        >>> m = ctr_metrics(np.array([0, 1, 1, 0]), np.array([-2.0, 1.0, 0.5, 0.1]))
        >>> m["auc"]
        1.0
    """
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(labels, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    p = np.clip(p, 1e-7, 1 - 1e-7)
    ll = float(log_loss(y, p, labels=[0, 1]))
    rate = float(np.clip(y.mean(), 1e-7, 1 - 1e-7))
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else float("nan")
    return {"auc": auc, "logloss": ll, "ne": ll / entropy, "rows": int(y.size), "positive_rate": rate}


# ----------------------------------------------------------------------------------------------- distributed
def _init_distributed() -> Tuple[int, int]:
    """(rank, world size): from torchrun's environment, else a one-process group."""
    from recsys_emb.sharding import init_single_process_group

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    init_single_process_group()
    return 0, 1


def _gather(arr: np.ndarray) -> np.ndarray:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return arr
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, arr)
    return np.concatenate(parts)


def _rng_state() -> Dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ----------------------------------------------------------------------------------------------- trainer
@dataclass
class _Position:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


class Trainer:
    """One training run (any world size): model, optimizers, data, checkpoints, metrics."""

    def __init__(self, cfg: RunConfig, on_eval: Optional[Callable[[int, Dict[str, Any]], None]] = None) -> None:
        from recsys_emb.data.parquet import TableSchema, read_metadata
        from recsys_emb.sharding import EmbeddingOptimizer, shard_model

        self.cfg = cfg
        self.on_eval = on_eval
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.rank, self.world = _init_distributed()
        self.out = cfg.out_dir
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        self.data_dir = prepare_data(cfg) if self.rank == 0 else Path(cfg.data.path)
        if self.world > 1:
            dist.barrier()
        self.metadata = read_metadata(self.data_dir)
        self.schema = TableSchema.from_dict(self.metadata["schema"])
        _seed_everything(cfg.seed)
        self.device = torch.device(cfg.train.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("train.device='cuda' but PyTorch sees no CUDA device; set train.device: cpu")
        self.concat = cfg.embeddings.kernel == "concat"
        if self.concat:
            from recsys_emb.sharding import init_tables

            if self.world > 1:
                raise RuntimeError(f"embeddings.kernel='concat' trains in one process (world size {self.world} "
                                   f"asked); use embeddings.kernel: torchrec to shard across processes")
            # tables built on meta and filled by init_tables: the same start as TorchRec's kernel under DMP
            model = build_model(cfg, self.schema, embedding_device=torch.device("meta"), kernel="concat")
            for m in model.modules():
                if isinstance(m, ConcatenatedEmbeddingBags):
                    m.materialize(self.device)
            model.to(self.device)
            init_tables(model, cfg.seed, scale=cfg.embeddings.init_scale)
            self.model = model
        else:
            model = build_model(cfg, self.schema, embedding_device=torch.device("meta"))
            self.model = shard_model(model, EmbeddingOptimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr),
                                     sharding_types=cfg.train.sharding_types, init_seed=cfg.seed,
                                     init_scale=cfg.embeddings.init_scale)
        self.specs = [f for layer in _embedding_layers(model) for f in layer.features]
        from torchrec.optim.optimizers import in_backward_optimizer_filter

        dense = [p for _, p in in_backward_optimizer_filter(self.model.named_parameters()) if p.requires_grad]
        opt_cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[cfg.optim.dense]
        self.dense_optimizer = opt_cls(dense, lr=cfg.optim.dense_lr, weight_decay=cfg.optim.weight_decay)
        self.dense_params = sum(p.numel() for p in dense)
        self.pos = _Position()
        self.metrics_path = self.out / "metrics.jsonl"

    # -- data
    def _batches(self, split: str, train: bool, start_batch: int = 0):
        from recsys_emb.data.batches import ParquetBatches, make_dataloader

        ds = ParquetBatches(self.data_dir, split, batch_size=self.cfg.data.batch_size if train else
                            self.cfg.data.eval_batch_size, shuffle=train, seed=self.cfg.seed, rank=self.rank,
                            world_size=self.world, start_batch=start_batch,
                            with_true_prob=not train and bool(self.schema.true_prob))
        return ds, make_dataloader(ds, num_workers=self.cfg.data.num_workers)

    # -- metrics
    def _log(self, record: Dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def evaluate(self, split: str) -> Dict[str, Any]:
        """Metrics of ``split`` over all ranks' predictions (gathered, not averaged).

        No row is dropped: rank ``r`` scores batches ``r, r + W, ...`` of the whole split, and ranks
        short of a batch run a dummy forward (discarded), since sharded forwards are collective."""
        from recsys_emb.data.batches import ParquetBatches

        self.model.eval()
        ds = ParquetBatches(self.data_dir, split, batch_size=self.cfg.data.eval_batch_size,
                            with_true_prob=bool(self.schema.true_prob))
        slots = -(-len(ds) // self.world)
        logits, labels, truth = [], [], []
        first = None
        mine = 0
        for i, batch in enumerate(ds):
            first = first if first is not None else batch
            if i % self.world != self.rank:
                continue
            mine += 1
            logits.append(_forward(self.model, batch, self.device).float().cpu().numpy())
            labels.append(batch.labels.numpy())
            if batch.true_prob is not None:
                truth.append(batch.true_prob.numpy())
        for _ in range(slots - mine):
            _forward(self.model, first, self.device)
        self.model.train()
        y = _gather(np.concatenate(labels) if labels else np.zeros(0, dtype=np.float32))
        z = _gather(np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32))
        out: Dict[str, Any] = {"split": split, **ctr_metrics(y, z)}
        if self.schema.true_prob:
            from recsys_emb.data.metrics import ceiling

            c = ceiling(y, _gather(np.concatenate(truth) if truth else np.zeros(0, dtype=np.float32)))
            out["ceiling_auc"], out["ceiling_logloss"] = c.auc, c.logloss
        return out

    # -- checkpoints
    def checkpoint_dir(self, step: int) -> Path:
        return self.out / "checkpoints" / f"step_{step:08d}"

    def _state(self) -> Dict[str, Any]:
        # The dense optimizer is saved beside (torch.save): a fresh Adam's state_dict has no entries
        # yet, and DCP only loads keys the target already has.
        if self.concat:  # the tables' optimizer state lives in the concat modules
            return {"model": self.model.state_dict(), "fused": {
                name: m.fused_optimizer_state_dict() for name, m in self.model.named_modules()
                if isinstance(m, ConcatenatedEmbeddingBags)}}
        return {"model": self.model.state_dict(), "fused": self.model.fused_optimizer.state_dict()}

    def save_checkpoint(self) -> Path:
        import torch.distributed.checkpoint as dcp

        path = self.checkpoint_dir(self.pos.step)
        dcp.save(self._state(), checkpoint_id=str(path))
        torch.save(_rng_state(), path / f"rng_rank{self.rank}.pt")
        if self.rank == 0:  # dense parameters are replicated: one copy of their optimizer state
            torch.save(self.dense_optimizer.state_dict(), path / "dense_optimizer.pt")
        if self.world > 1:
            dist.barrier()
        if self.rank == 0:
            meta = {"step": self.pos.step, "epoch": self.pos.epoch, "batch_in_epoch": self.pos.batch_in_epoch,
                    "world_size": self.world, "config": config_to_dict(self.cfg),
                    "features": [f.to_dict() for f in self.specs]}
            (path / "trainer.json").write_text(json.dumps(meta, indent=1))
            (self.out / "checkpoints" / "latest").write_text(path.name)  # written last: the checkpoint is whole
        return path

    def load_checkpoint(self, path: Path) -> None:
        import torch.distributed.checkpoint as dcp

        meta = json.loads((path / "trainer.json").read_text())
        _check_same_features(meta.get("features"), [f.to_dict() for f in self.specs], path)
        state = self._state()
        dcp.load(state, checkpoint_id=str(path))
        self.model.load_state_dict(state["model"])
        if self.concat:
            modules = dict(self.model.named_modules())
            for name, fused in state["fused"].items():
                modules[name].load_fused_optimizer_state_dict(fused)
        else:
            self.model.fused_optimizer.load_state_dict(state["fused"])
        self.dense_optimizer.load_state_dict(torch.load(path / "dense_optimizer.pt", weights_only=False))
        self.pos = _Position(meta["step"], meta["epoch"], meta["batch_in_epoch"])
        rng = path / f"rng_rank{self.rank}.pt"
        if meta["world_size"] == self.world and rng.exists():
            _set_rng_state(torch.load(rng, weights_only=False))
        logger.info("resumed from %s at step %d", path, self.pos.step)

    # -- loop
    def fit(self) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        train_ds, _ = self._batches("train", train=True)
        steps_per_epoch = len(train_ds)
        total = steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        kill_at = int(os.environ.get(FAULT_KILL_ENV, "0"))
        loss_fn = nn.BCEWithLogitsLoss()
        show = cfg.train.progress and self.rank == 0 and sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.pos.step, disable=not show, desc=cfg.name, unit="step")
        samples, t_train, last_loss = 0, 0.0, float("nan")
        self.model.train()
        while self.pos.step < total:
            ds, loader = self._batches("train", train=True, start_batch=self.pos.batch_in_epoch)
            ds.set_epoch(self.pos.epoch)
            t0 = time.perf_counter()
            for batch in loader:
                logits = _forward(self.model, batch, self.device)
                loss = loss_fn(logits, batch.labels.to(self.device, non_blocking=True))
                reg = getattr(_unwrap(self.model), "regularization", None)
                total_loss = loss + reg() if reg is not None and cfg.model.mba_lambda > 0 else loss
                self.dense_optimizer.zero_grad(set_to_none=True)
                total_loss.backward()  # the fused optimizer updates the tables inside this call
                self.dense_optimizer.step()
                self.pos.step += 1
                self.pos.batch_in_epoch += 1
                samples += batch.batch_size * self.world
                last_loss = float(loss.detach())
                bar.update(1)
                if cfg.train.log_every and self.pos.step % cfg.train.log_every == 0:
                    elapsed = t_train + time.perf_counter() - t0
                    bar.set_postfix(loss=f"{last_loss:.4f}", samples_per_s=f"{samples / max(elapsed, 1e-9):,.0f}")
                    self._log({"step": self.pos.step, "split": "train", "loss": last_loss})
                if cfg.train.eval_every and self.pos.step % cfg.train.eval_every == 0:
                    t_train += time.perf_counter() - t0
                    rec = {"step": self.pos.step, **self.evaluate("valid")}
                    self._log(rec)
                    logger.info("step %d valid auc %.4f", self.pos.step, rec["auc"])
                    if self.on_eval is not None:
                        self.on_eval(self.pos.step, rec)  # may raise (e.g. optuna.TrialPruned) to stop the run
                    t0 = time.perf_counter()
                if cfg.train.checkpoint_every and self.pos.step % cfg.train.checkpoint_every == 0:
                    t_train += time.perf_counter() - t0
                    self.save_checkpoint()
                    t0 = time.perf_counter()
                if kill_at and self.pos.step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.pos.step >= total:
                    break
            t_train += time.perf_counter() - t0
            if self.pos.step < total or self.pos.batch_in_epoch >= steps_per_epoch:
                self.pos.epoch += 1
                self.pos.batch_in_epoch = 0
        bar.close()
        self.save_checkpoint()
        valid = self.evaluate("valid")
        test = self.evaluate("test")
        mem = memory_from_specs(self.specs)
        summary = {
            "name": cfg.name, "steps": self.pos.step, "world_size": self.world, "device": str(self.device),
            "kernel": cfg.embeddings.kernel,
            "embedding_params": mem.params, "embedding_bytes": mem.bytes, "dense_params": self.dense_params,
            "full_table_bytes": memory_from_specs(_full_specs(self.specs)).bytes,
            "valid": valid, "test": test, "train_loss": last_loss,
            "samples_per_s": samples / t_train if t_train > 0 else None,
        }
        self._log({"step": self.pos.step, **valid})
        self._log({"step": self.pos.step, **test})
        if self.rank == 0:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _embedding_layers(model: nn.Module) -> List[Any]:
    from recsys_emb.layer import EmbeddingLayer, SequenceEmbeddingLayer

    return [m for m in model.modules() if isinstance(m, (EmbeddingLayer, SequenceEmbeddingLayer))]


def _full_specs(specs: Sequence[FeatureSpec]) -> List[FeatureSpec]:
    """The same features with full tables at their output dims (the memory baseline)."""
    from recsys_emb.specs import Full

    out = []
    for f in specs:
        out.append(FeatureSpec(f.name, Full(f.output_dim), cardinality=f.cardinality, pooling=f.pooling,
                               shared_with=f.shared_with) if f.cardinality else f)
    return out


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    marker = Path(out_dir) / "checkpoints" / "latest"
    return marker.parent / marker.read_text().strip() if marker.exists() else None


def _check_same_features(saved: Optional[List[Dict[str, Any]]], current: List[Dict[str, Any]], path: Path) -> None:
    """Refuse to resume a checkpoint into other tables: a changed embedding setting (or a default that
    changed between versions) would otherwise surface as a shape error deep inside the checkpoint load."""
    if saved is None or saved == current:
        return
    was = {f["name"]: f for f in saved}
    now = {f["name"]: f for f in current}
    if list(was) != list(now):
        detail = f"the checkpoint has features {list(was)}, this config {list(now)}"
    else:
        name = next(n for n in now if was[n] != now[n])
        detail = f"feature {name!r} was {was[name]}, this config builds {now[name]}"
    raise ConfigError(
        f"--resume: checkpoint {path} holds other embedding tables than this config builds: {detail}. Set the "
        f"embeddings settings the run was trained with (its whole config is in {path / 'trainer.json'}; settings "
        f"left out take the current defaults, e.g. embeddings.qr_op and embeddings.num_blocks), or train into a new "
        f"train.out_dir.")


def train(cfg: RunConfig, resume: bool = False,
          on_eval: Optional[Callable[[int, Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Train the config's model; returns the summary (also written to ``<out_dir>/summary.json``).

    Args:
        cfg: the run config.
        resume: continue from the run's latest checkpoint (data position, optimizers, RNG).
        on_eval: called as ``on_eval(step, valid_metrics)`` after every ``train.eval_every`` steps;
            an exception it raises ends the run (a search prunes trials this way).
    """
    trainer = Trainer(cfg, on_eval=on_eval)
    if resume:
        ckpt = latest_checkpoint(trainer.out)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {trainer.out}/checkpoints")
        trainer.load_checkpoint(ckpt)
    elif trainer.rank == 0 and trainer.metrics_path.exists():
        trainer.metrics_path.unlink()
    return trainer.fit()


def plan_run(cfg: RunConfig, world_size: int, device_type: str = "cpu") -> Dict[str, Any]:
    """The sharding plan a run of the config gets on ``world_size`` ranks, without training.

    Prepares the data like :func:`train` (the vocabularies size the tables), builds the model on
    ``meta`` and asks TorchRec's planner (:func:`recsys_emb.sharding.plan_model`).

    Returns:
        ``{"world_size", "tables": plan_report rows, "rank_bytes": [bytes per rank], "text": table}``;
        bytes count float32 weights plus the fused optimizer's state.
    """
    from recsys_emb.data.parquet import TableSchema, read_metadata
    from recsys_emb.sharding import EmbeddingOptimizer, format_plan, plan_model, plan_report, rank_bytes, table_shapes

    if cfg.embeddings.kernel == "concat":
        raise ValueError("embeddings.kernel='concat' keeps every table on one device: there is no sharding plan; "
                         "plan with embeddings.kernel: torchrec")
    schema = TableSchema.from_dict(read_metadata(prepare_data(cfg))["schema"])
    model = build_model(cfg, schema, embedding_device=torch.device("meta"))
    opt = EmbeddingOptimizer(cfg.optim.embedding, lr=cfg.optim.embedding_lr)
    plan = plan_model(model, world_size, device_type, opt, sharding_types=cfg.train.sharding_types)
    report = plan_report(plan, table_shapes(model), optimizer=cfg.optim.embedding)
    return {"world_size": world_size, "device": device_type, "tables": report,
            "rank_bytes": rank_bytes(report, world_size), "text": format_plan(report, world_size)}


def load_model(checkpoint: os.PathLike) -> Tuple[nn.Module, List[FeatureSpec], Dict[str, Any]]:
    """An unsharded model with a checkpoint's weights, for scoring in a ranking pipeline.

    Args:
        checkpoint: a checkpoint directory (``.../checkpoints/step_N``) or a run directory (its latest).
    Returns:
        ``(model, features, schema_dict)``: the model in eval mode (``model(dense, kjt) -> logits (B,)``),
        the feature specs it expects (KJT keys and vocabularies), and the dataset schema (dense columns).
        No process group is needed; any world size that saved it works.
    """
    import torch.distributed.checkpoint as dcp

    from recsys_emb.data.parquet import TableSchema, read_metadata

    path = Path(checkpoint)
    if not (path / "trainer.json").exists():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{path} is neither a checkpoint nor a run directory with checkpoints")
        path = latest
    meta = json.loads((path / "trainer.json").read_text())
    cfg = config_from_dict(meta["config"])
    schema = TableSchema.from_dict(read_metadata(Path(cfg.data.path))["schema"])
    model = build_model(cfg, schema)
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(path), no_dist=True)
    model.load_state_dict(state["model"])
    model.eval()
    features = [f for layer in _embedding_layers(model) for f in layer.features]
    return model, features, meta["config"]["data"]


def evaluate_checkpoint(checkpoint: os.PathLike, split: str = "test", batch_size: int = 16384) -> Dict[str, Any]:
    """Metrics of a saved model on a split (unsharded, one process)."""
    from recsys_emb.data.batches import ParquetBatches

    model, _, data = load_model(checkpoint)
    ds = ParquetBatches(data["path"], split, batch_size=batch_size)
    with_truth = bool(ds.schema.true_prob)
    ds = ParquetBatches(data["path"], split, batch_size=batch_size, with_true_prob=with_truth)
    logits, labels, truth = [], [], []
    with torch.no_grad():
        for batch in ds:
            logits.append(_forward(model, batch).numpy())
            labels.append(batch.labels.numpy())
            if batch.true_prob is not None:
                truth.append(batch.true_prob.numpy())
    out: Dict[str, Any] = {"split": split, **ctr_metrics(np.concatenate(labels), np.concatenate(logits))}
    if truth:
        from recsys_emb.data.metrics import ceiling

        c = ceiling(np.concatenate(labels), np.concatenate(truth))
        out["ceiling_auc"], out["ceiling_logloss"] = c.auc, c.logloss
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``torchrun -m recsys_emb.train`` (same arguments as ``recsys-emb train``)."""
    p = argparse.ArgumentParser(prog="recsys_emb.train")
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    summary = train(load_config(a.config, a.overrides), resume=a.resume)
    if not dist.is_initialized() or dist.get_rank() == 0:
        from recsys_emb.cli import emit

        emit(json.dumps(summary, indent=1))
    if dist.is_initialized():  # every rank done before gloo is torn down
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun / --nproc worker
        from recsys_emb.launch import exit_worker

        exit_worker(main())
    raise SystemExit(main())
