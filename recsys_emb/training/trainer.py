"""The training loop of CTR models on any embedding variant, at any world size: TorchRec's fused optimizers
(or the table-batched kernel's) for the tables, a torch optimizer for the dense parameters, periodic
evaluation and checkpoints, exact resume."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm.auto import tqdm

from recsys_emb.config import RunConfig
from recsys_emb.data.batches import ParquetBatches, make_dataloader
from recsys_emb.data.parquet import read_metadata, schema_from_metadata
from recsys_emb.errors import CheckpointError, ConfigError, OutputDirError
from recsys_emb.memory import memory_from_specs
from recsys_emb.sharding import init_single_process_group
from recsys_emb.specs import FeatureSpec, Full
from recsys_emb.training.build import (attach_tables, build_features, build_model, check_model_fits,
                                       embedding_layers, prepare_data)
from recsys_emb.training.checks import check_steps_per_epoch, warn_settings
from recsys_emb.training.checkpoint import (
    Position,
    checkpoint_dir,
    intact_checkpoint,
    load_checkpoint,
    load_weights,
    prune_checkpoints,
    save_checkpoint,
    seed_everything,
)
from recsys_emb.training.rundir import RunDirectory, run_fingerprint
from recsys_emb.version import __version__
from recsys_emb.training.metrics import score_split
from recsys_emb.training.pipeline import make_steps

__all__ = ["Trainer", "train", "init_distributed", "train_device", "FAULT_KILL_ENV", "FAULT_HOLD_ENV"]

logger = logging.getLogger(__name__)

FAULT_KILL_ENV = "RECSYS_EMB_FAULT_KILL_AT_STEP"
"""Fault injection for resume tests: the training process SIGKILLs itself after this step."""

FAULT_HOLD_ENV = "RECSYS_EMB_FAULT_HOLD"
"""Fault injection for tests of concurrent processes: ``"STEP:PATH"`` holds the training process after step
STEP (its checkpoint, if one is due, written) until the file PATH exists (the process stays alive, holding
its run directory and its trial). On reaching the hold it writes its pid to ``PATH.held``: the handshake a
test waits for."""


def _fault_hold() -> Tuple[int, Optional[Path]]:
    value = os.environ.get(FAULT_HOLD_ENV, "")
    if not value:
        return 0, None
    step, sep, path = value.partition(":")
    if not sep or not step.isdigit() or not path:
        raise ValueError(f"{FAULT_HOLD_ENV}={value!r}: expected STEP:PATH, e.g. 30:/tmp/release")
    return int(step), Path(path)


def init_distributed(device: Optional[torch.device] = None, backend: str = "gloo") -> Tuple[int, int]:
    """(rank, world size): from torchrun's environment, else a one-process group. ``backend`` ``nccl``
    (TorchRec on GPUs) makes this process's GPU ``device`` (:func:`train_device`) current first."""
    if dist.is_initialized():
        if dist.get_backend() != backend:
            raise ConfigError(f"this process already has a {dist.get_backend()} process group; a run that needs "
                              f"{backend} (train.device, train.embedding_backend) must start in a new process")
        return dist.get_rank(), dist.get_world_size()
    if backend == "nccl" and device is not None:
        torch.cuda.set_device(device)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
        return dist.get_rank(), dist.get_world_size()
    init_single_process_group(backend)
    return 0, 1


def train_device(cfg: RunConfig) -> torch.device:
    """This process's device: the CPU, or one GPU per process, ``cuda:LOCAL_RANK`` (torchrun's local
    rank; 0 outside torchrun). Checks first that the install can run it (:meth:`RunConfig.check_device`)."""
    cfg.check_device()
    if cfg.train.device != "cuda":
        return torch.device(cfg.train.device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK={local_rank} but PyTorch sees {torch.cuda.device_count()} GPU(s) on this "
                          f"node; start at most that many processes per node (--nproc)")
    return torch.device("cuda", local_rank)


def _on_rank0(work: Callable[[], None], rank: int, world: int) -> None:
    """Run ``work`` on rank 0 while the other ranks wait; an error there is raised on every rank (not a
    hang at the next collective)."""
    error: Optional[BaseException] = None
    if rank == 0:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the other ranks learned of it
            error = e
    if world > 1:
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        if rank != 0 and box[0] is not None:
            raise RuntimeError(f"rank 0 failed before training: {box[0]}")
    if error is not None:
        raise error


def _check_memory(cfg: RunConfig, schema: Any, specs: List[FeatureSpec], device: torch.device, world: int) -> None:
    """Refuse a model whose parameters cannot fit (:func:`~recsys_emb.training.build.check_model_fits`): on
    the CPU, this host's share of the tables against its available memory; on a GPU, one rank's share
    against the GPU's memory."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        check_model_fits(cfg, schema, specs, training=True, share=1 / world, available=total,
                         where=f"the memory of {device}")
    else:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        check_model_fits(cfg, schema, specs, training=True, share=min(1.0, local / world))


class Trainer:
    """One training run (any world size): model, optimizers, data, checkpoints, metrics.

    Rank 0 holds the run directory (:class:`~recsys_emb.training.rundir.RunDirectory`) from construction
    to :meth:`close`: a used directory is refused unless ``resume`` or ``overwrite``."""

    def __init__(self, cfg: RunConfig, on_eval: Optional[Callable[[int, Dict[str, Any]], None]] = None,
                 resume: bool = False, overwrite: bool = False, write_model: bool = True) -> None:
        self.cfg = cfg
        self.on_eval = on_eval
        self.write_model = write_model
        self.resume = resume
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = train_device(cfg)
        # NCCL for TorchRec's sharded CUDA kernels; the single-device table-batched kernel needs no collective
        backend = "nccl" if self.device.type == "cuda" and cfg.train.embedding_backend == "torchrec" else "gloo"
        self.rank, self.world = init_distributed(self.device, backend)
        self.out = cfg.out_dir
        # imported here, as in _write_model_dir: model_dir reaches this package through serving
        from recsys_emb.model_dir import MODEL_DIR_ENTRIES

        self.run_dir = RunDirectory(self.out, model_files=MODEL_DIR_ENTRIES) if self.rank == 0 else None
        self.data_dir = Path(cfg.data.path)
        _on_rank0(lambda: self._open_rank0(resume, overwrite), self.rank, self.world)
        try:
            self._build(cfg, resume, overwrite)
        except BaseException:
            # a run that never started holds nothing: the lock is released, an earlier run left as it was
            self.close()
            raise

    def _build(self, cfg: RunConfig, resume: bool, overwrite: bool) -> None:
        """Everything that can fail before training (the data, the model, its tables, the optimizers),
        then, on rank 0, the earlier run replaced (``overwrite``) and this run's ``run.json`` written."""
        self.metadata = read_metadata(self.data_dir)
        self.fingerprint = run_fingerprint(cfg, self.metadata)
        self.schema = schema_from_metadata(self.metadata)
        train_ds, _ = self._batches()
        self.steps_per_epoch = len(train_ds)
        try:
            check_steps_per_epoch(cfg, self.steps_per_epoch, train_ds.shard_rows, self.world)
        except ConfigError:
            self.close()  # refused before training: the run directory is released, nothing written
            raise
        self.train_rows = train_ds.rows
        seed_everything(cfg.seed)
        # tables on meta: the backend allocates and fills them without touching the random number
        # generator, so every backend and world size starts from the same model
        specs, _ = build_features(cfg, self.schema)
        _check_memory(cfg, self.schema, specs, self.device, self.world)  # before anything is allocated
        # optim.embedding_l2: auto follows the training split's rows (all ranks', so any world size agrees)
        self.embedding_l2 = cfg.optim.embedding_l2_for(self.train_rows)
        # model.linear: auto follows the training rows too; the checkpoint records what was built
        self.linear = cfg.model.linear_for(self.train_rows)
        model = build_model(cfg, self.schema, embedding_device=torch.device("meta"), specs=specs,
                            train_rows=self.train_rows, linear=self.linear)
        if self.linear:  # started as a fitted logistic regression (fit()), then held fixed
            model.linear.requires_grad_(False)
        self.model = attach_tables(model, cfg, self.device, self.world)
        self.specs: List[FeatureSpec] = [f for layer in embedding_layers(model) for f in layer.features]
        dense = [p for _, p in in_backward_optimizer_filter(self.model.named_parameters()) if p.requires_grad]
        opt_cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[cfg.optim.dense]
        self.dense_optimizer = opt_cls(dense, lr=cfg.optim.dense_lr, weight_decay=cfg.optim.weight_decay)
        self.dense_params = sum(p.numel() for p in dense)
        self.pos = Position()
        self.pipeline = "none"  # the train loop fit() runs: "sparse_dist" or "none"
        self.early: Dict[str, Any] = {}  # early stopping: best value, its step, evaluations since
        self._saved_step: Optional[int] = None
        self.metrics_path = self.out / "metrics.jsonl"
        if not resume:
            _on_rank0(lambda: self._start_rank0(overwrite), self.rank, self.world)

    def _open_rank0(self, resume: bool, overwrite: bool) -> None:
        """Lock and check the run directory (nothing removed yet), then prepare the data; released again
        when the data cannot be prepared."""
        assert self.run_dir is not None
        self.run_dir.open(resume=resume, overwrite=overwrite)
        try:
            self.data_dir = prepare_data(self.cfg)
        except BaseException:
            self.run_dir.close()
            raise

    def _start_rank0(self, overwrite: bool) -> None:
        """The new run takes the directory: an earlier run's results removed (``overwrite``), then
        ``run.json`` written. Called only after every check that can fail before training."""
        assert self.run_dir is not None
        if overwrite:
            self.run_dir.replace_earlier_run()
        self.run_dir.write_run_json(self.cfg, self.fingerprint)

    def close(self) -> None:
        """Release the run directory."""
        if self.run_dir is not None:
            self.run_dir.close()

    # -- data
    def _batches(self, start_batch: int = 0) -> Tuple[ParquetBatches, Any]:
        ds = ParquetBatches(self.data_dir, "train", batch_size=self.cfg.data.batch_size, shuffle=True,
                            seed=self.cfg.seed, rank=self.rank, world_size=self.world, start_batch=start_batch,
                            id_dropout=self.cfg.data.id_dropout)
        return ds, make_dataloader(ds, num_workers=self.cfg.data.num_workers)

    # -- metrics
    def _log(self, record: Dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def evaluate(self, split: str) -> Dict[str, Any]:
        """Metrics of ``split`` over all ranks' predictions (gathered, not averaged)."""
        return score_split(self.model, self.data_dir, split, self.cfg.data.eval_batch_size, self.rank, self.world,
                           self.device)

    # -- checkpoints
    def save_checkpoint(self) -> Path:
        """Save this step's checkpoint (once per step), then drop the step checkpoints past
        ``train.keep_last`` (never the best one)."""
        path = checkpoint_dir(self.out, self.pos.step)
        if self._saved_step == self.pos.step:
            return path
        extra = {"fingerprint": self.fingerprint, "data_dir": str(self.data_dir.resolve()),
                 "early_stopping": dict(self.early), "linear": self.linear}
        save_checkpoint(self.model, self.dense_optimizer, self.out, self.pos, self.cfg, self.specs, self.rank,
                        self.world, extra=extra)
        self._saved_step = self.pos.step
        if self.rank == 0:
            prune_checkpoints(self.out, self.cfg.train.keep_last, keep=self.early.get("best_step"))
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a checkpoint of this run: its files verified, its tables and fingerprint equal to
        this config's; the metrics logged after it are dropped (they are logged again)."""
        self.pos = load_checkpoint(path, self.model, self.dense_optimizer, self.specs, self.rank, self.world,
                                   fingerprint=self.fingerprint)
        self._saved_step = self.pos.step  # this step's checkpoint is the one just loaded
        self.early = dict(json.loads((path / "trainer.json").read_text()).get("early_stopping") or {})
        if self.run_dir is not None:
            dropped = self.run_dir.trim_metrics(self.pos.step)
            if dropped:
                logger.info("dropped %d metrics rows logged after step %d", dropped, self.pos.step)

    # -- loop
    def _evaluate_and_track(self, epoch_end: bool, force: bool = False) -> bool:
        """Evaluate ``valid`` when the cadence says so (or ``force``); track early stopping (checkpointing a
        new best). Returns True when training should stop."""
        cfg = self.cfg
        es = cfg.train.early_stopping
        every, at_epoch_end = cfg.train.eval_cadence(self.steps_per_epoch)
        if not (force or (every and self.pos.step % every == 0) or (epoch_end and at_epoch_end)):
            return False
        rec = {"step": self.pos.step, **self.evaluate("valid")}
        self._log(rec)
        logger.info("step %d valid auc %.4f logloss %.4f", self.pos.step, rec["auc"], rec["logloss"])
        if self.on_eval is not None:
            self.on_eval(self.pos.step, rec)  # may raise (e.g. optuna.TrialPruned) to stop the run
        if es is None:
            return False
        value = float(rec[es.monitor])
        if es.improved(value, self.early.get("best")):
            self.early.update(best=value, best_step=self.pos.step, bad=0)
            self.save_checkpoint()  # the best model stays on disk, whatever the retention
            return False
        self.early["bad"] = self.early.get("bad", 0) + 1
        if self.early["bad"] >= es.patience:
            logger.info("early stopping at step %d: valid %s has not improved on %.5f (step %d) for %d evaluations",
                        self.pos.step, es.monitor, self.early["best"], self.early["best_step"], es.patience)
            return True
        return False

    def _start_linear(self) -> bool:
        """Step 0 of a run with ``model.linear``: the first-order term fitted as a logistic regression and
        the top MLP's last layer started at weight 0 with its intercept
        (:func:`~recsys_emb.training.linear_start.fit_linear_start`), identical on every rank; then the
        validation split scored (with early stopping on; without, no step can be picked), so that early
        stopping keeps this model unless a later step beats it. Returns True when training should stop."""
        from recsys_emb.models.dlrm import DLRM
        from recsys_emb.training.linear_start import fit_linear_start

        dlrm = self.model.module
        assert isinstance(dlrm, DLRM) and dlrm.linear is not None  # model.linear is DLRM's alone
        head = dlrm.top.net[-1]
        assert isinstance(head, nn.Linear)
        if self.rank == 0:
            c, ll, intercept = fit_linear_start(dlrm.linear, head, self.data_dir, dlrm.feature_names,
                                                seed=self.cfg.seed)
            logger.info("first-order term: a logistic regression with C=%g (valid log loss %.5f, intercept %.4f)",
                        c, ll, intercept)
        if self.world > 1:
            for p in [*dlrm.linear.parameters(), head.weight, head.bias]:
                buf = p.data.to(self.device)
                dist.broadcast(buf, src=0)
                p.data.copy_(buf)
        if self.cfg.train.early_stopping is None:
            return False
        return self._evaluate_and_track(epoch_end=False, force=True)

    def _segment_end(self, total: int, steps_per_epoch: int, hooks: Sequence[int]) -> int:
        """The first step after the current one at which the loop does more than train: it evaluates,
        checkpoints, ends the epoch or the run, or a fault hook fires. A pipelined segment ends empty there."""
        step, t = self.pos.step, self.cfg.train
        ends = [total, step + steps_per_epoch - self.pos.batch_in_epoch, *(h for h in hooks if h > step)]
        ends += [(step // every + 1) * every for every in (t.eval_cadence(steps_per_epoch)[0], t.checkpoint_every)
                 if every]
        return min(ends)

    def fit(self) -> Dict[str, Any]:
        cfg = self.cfg
        steps_per_epoch = self.steps_per_epoch
        total = steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        if self.rank == 0:
            warn_settings(cfg, steps_per_epoch, total, self.train_rows, world_size=self.world,
                          cardinalities={s.name: s.cardinality for s in self.specs
                                         if s.shared_with is None and s.cardinality})
        kill_at = int(os.environ.get(FAULT_KILL_ENV, "0"))
        hold_at, release = _fault_hold()
        loss_fn = nn.BCEWithLogitsLoss()
        show = cfg.train.progress and self.rank == 0 and sys.stderr.isatty()
        bar = tqdm(total=total, initial=self.pos.step, disable=not show, desc=cfg.name, unit="step")
        samples, t_train, last_loss = 0, 0.0, torch.tensor(float("nan"))
        regularization = getattr(self.model.module, "regularization", None) \
            if cfg.model.mba_lambda > 0 or self.embedding_l2 > 0 or self.linear else None
        base_lrs = [g["lr"] for g in self.dense_optimizer.param_groups]

        def step_loss(batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
            loss = loss_fn(self.model(batch.dense, batch.sparse), batch.labels)
            return (loss + regularization() if regularization is not None else loss), loss

        def schedule() -> None:
            factor = cfg.optim.dense_lr_factor(self.pos.step, total)
            for group, lr in zip(self.dense_optimizer.param_groups, base_lrs):
                group["lr"] = lr * factor

        stopped = self._start_linear() if self.linear and self.pos.step == 0 else False
        steps, self.pipeline = make_steps(self.model, self.dense_optimizer, step_loss, self.device,
                                          cfg.train.pipeline, cfg.train.embedding_backend)
        self.model.train()
        while self.pos.step < total and not stopped:
            ds, loader = self._batches(start_batch=self.pos.batch_in_epoch)
            ds.set_epoch(self.pos.epoch)
            batches = iter(loader)
            t0 = time.perf_counter()
            while self.pos.step < total and self.pos.batch_in_epoch < steps_per_epoch and not stopped:
                n = self._segment_end(total, steps_per_epoch, (kill_at, hold_at)) - self.pos.step
                done = 0
                for loss, size in steps.run(batches, n, schedule):
                    done += 1
                    self.pos.step += 1
                    self.pos.batch_in_epoch += 1
                    samples += size * self.world
                    last_loss = loss
                    bar.update(1)
                    if cfg.train.log_every and self.pos.step % cfg.train.log_every == 0:
                        elapsed = t_train + time.perf_counter() - t0
                        rate = samples / max(elapsed, 1e-9)
                        bar.set_postfix(loss=f"{float(last_loss):.4f}", samples_per_s=f"{rate:,.0f}")
                        if not show and self.rank == 0:  # a scheduler's log, not a terminal: one line per interval
                            logger.info("%s: step %d/%d, loss %.4f, %.0f samples/s", cfg.name, self.pos.step, total,
                                        float(last_loss), rate)
                        self._log({"step": self.pos.step, "split": "train", "loss": float(last_loss),
                                   "dense_lr": self.dense_optimizer.param_groups[0]["lr"]})
                    t_train += time.perf_counter() - t0
                    epoch_end = self.pos.batch_in_epoch >= steps_per_epoch
                    stopped = self._evaluate_and_track(epoch_end)
                    if cfg.train.checkpoint_every and self.pos.step % cfg.train.checkpoint_every == 0:
                        self.save_checkpoint()
                    t0 = time.perf_counter()
                    if kill_at and self.pos.step == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if release is not None and self.pos.step == hold_at:
                        held = release.with_name(release.name + ".held")
                        held.with_name(held.name + ".tmp").write_text(str(os.getpid()))
                        os.replace(held.with_name(held.name + ".tmp"), held)
                        while not release.exists():
                            time.sleep(0.05)
                    if stopped:
                        break
                if done < n and not stopped:
                    raise RuntimeError(f"the train split gave {done} of the {n} batches planned from step "
                                       f"{self.pos.step - done} (epoch {self.pos.epoch})")
            if self.pos.step < total or self.pos.batch_in_epoch >= steps_per_epoch:
                self.pos.epoch += 1
                self.pos.batch_in_epoch = 0
        bar.close()
        last_step = self.pos.step
        self.save_checkpoint()
        best_step = self.early.get("best_step")
        if best_step is not None and best_step != last_step:
            self._restore_weights(checkpoint_dir(self.out, best_step))
        valid = self.evaluate("valid")
        test = self.evaluate("test")
        mem = memory_from_specs(self.specs)
        summary = {
            "name": cfg.name, "library_version": __version__, "steps": last_step, "world_size": self.world,
            "device": str(self.device),
            "embedding_backend": cfg.train.embedding_backend,
            "embedding_params": mem.params, "embedding_bytes": mem.bytes, "dense_params": self.dense_params,
            "full_table_bytes": memory_from_specs(_full_specs(self.specs)).bytes,
            "model_step": best_step if best_step is not None else last_step,
            "stopped_early": bool(stopped),
            "train_pipeline": self.pipeline,
            "embedding_l2": self.embedding_l2, "linear": self.linear,
            "valid": valid, "test": test, "train_loss": float(last_loss),
            "samples_per_s": samples / t_train if t_train > 0 else None,
        }
        if self.run_dir is not None:  # a row already logged (the evaluation of the reported step) is not repeated
            try:
                logged = {(r.get("step"), r.get("split")) for r in self.run_dir.read_metrics()}
            except OutputDirError as e:  # edited meanwhile: the run is done, its rows are logged anyway
                logger.warning("%s", e)
                logged = set()
            for rec in (valid, test):
                if (summary["model_step"], rec["split"]) not in logged:
                    self._log({"step": summary["model_step"], **rec})
            tmp = self.out / ".summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=1))
            os.replace(tmp, self.out / "summary.json")  # whole: `evaluate` may read it at any time
            # the checkpoint the earlier summary reported was kept until now (prune_checkpoints)
            prune_checkpoints(self.out, cfg.train.keep_last, keep=self.early.get("best_step"))
        if self.write_model:
            _on_rank0(lambda: self._write_model_dir(summary["model_step"]), self.rank, self.world)
        return summary

    def _write_model_dir(self, step: int) -> None:
        """``<out_dir>/model``: the reported model as a self-contained model directory (atomic)."""
        # imported here: model_dir reaches this package through serving, so a module-level import would
        # run while recsys_emb.training is still initialising
        from recsys_emb.model_dir import model_from_checkpoint, save_model_dir

        try:
            save_model_dir(model_from_checkpoint(checkpoint_dir(self.out, step)), self.out / "model", overwrite=True)
        except Exception as e:  # noqa: BLE001 - the run itself is complete; say how to finish the export
            raise CheckpointError(f"training finished ({self.out}/summary.json and checkpoints are written), but "
                                  f"writing {self.out}/model failed: {type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:300]}; write it later with `recsys-emb export "
                                  f"--checkpoint {self.out} --out {self.out}/model --overwrite`") from e

    def _restore_weights(self, path: Path) -> None:
        """The model of an earlier checkpoint of this run (the best one of early stopping)."""
        logger.info("restoring the best model, %s", path.name)
        load_weights(path, self.model)


def _full_specs(specs: Sequence[FeatureSpec]) -> List[FeatureSpec]:
    """The same features with full tables at their output dims (the memory baseline)."""
    return [FeatureSpec(f.name, Full(f.output_dim), cardinality=f.cardinality, pooling=f.pooling,
                        shared_with=f.shared_with) if f.cardinality else f for f in specs]


def train(cfg: RunConfig, resume: bool = False,
          on_eval: Optional[Callable[[int, Dict[str, Any]], None]] = None, overwrite: bool = False,
          write_model: bool = True) -> Dict[str, Any]:
    """Train the config's model; returns the summary (also written to ``<out_dir>/summary.json``).

    Args:
        cfg: the run config.
        resume: continue from the run's newest intact checkpoint (data position, optimizers, RNG); the
            config must fingerprint like the run's.
        overwrite: replace the results an earlier run left in ``train.out_dir`` (by default a used
            directory is refused).
        on_eval: called as ``on_eval(step, valid_metrics)`` after each validation (``train.eval_every``:
            by default each epoch's end); an exception it raises ends the run (a search prunes trials this way).
        write_model: end by writing the reported model as ``<out_dir>/model`` (a model directory);
            False for runs whose model nobody serves (a search trial that keeps no checkpoints).

    Example::

        summary = train(load_config("configs/demo.yaml"))
        summary["test"]["auc"]
    """
    trainer = Trainer(cfg, on_eval=on_eval, resume=resume, overwrite=overwrite, write_model=write_model)
    try:
        if resume:
            ckpt = intact_checkpoint(trainer.out)
            if ckpt is None:
                raise CheckpointError(f"--resume: no intact checkpoint under {trainer.out}/checkpoints; train without "
                                      f"--resume (with --overwrite to replace what is there)")
            trainer.load_checkpoint(ckpt)
        return trainer.fit()
    finally:
        trainer.close()
