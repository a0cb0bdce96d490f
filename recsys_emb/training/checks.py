"""A run's settings checked against its data before the first step: a batch size that gives no training
step is refused, and a setting that would silently do nothing (a validation cadence longer than the run, a
compression that compresses no field, an epoch of one or two steps) gets one warning line naming the
setting, its value and the fix."""

from __future__ import annotations

import logging
import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from recsys_emb.config import RunConfig
from recsys_emb.errors import ConfigError
from recsys_emb.families import compressing_variants

__all__ = ["TINY_EPOCH_STEPS", "SUGGESTED_EPOCH_STEPS", "COMPRESSING_VARIANTS", "check_steps_per_epoch",
           "settings_warnings", "suggested_batch_size", "warn_settings"]

logger = logging.getLogger(__name__)

TINY_EPOCH_STEPS = 2
"""An epoch of at most this many training steps (per process) is warned about: the batch size is of the
order of the whole training split."""

SUGGESTED_EPOCH_STEPS = 20
"""The batch size a warning or refusal suggests gives at least this many steps per epoch."""

def __getattr__(name: str) -> Any:
    if name == "COMPRESSING_VARIANTS":  # read from the family registry when accessed
        return compressing_variants()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


COMPRESSING_VARIANTS: Tuple[str, ...]
"""The variants whose tables ``embeddings.compression`` sizes (:func:`recsys_emb.families.compressing_variants`:
``full`` and ``mixed`` ignore it)."""


def suggested_batch_size(rows: int, steps: int = SUGGESTED_EPOCH_STEPS) -> int:
    """The largest power of two that gives at least ``steps`` batches over ``rows`` rows (at least 1).

    Example:
        >>> suggested_batch_size(6400), suggested_batch_size(5000), suggested_batch_size(10)
        (256, 128, 1)
    """
    return 2 ** max(0, int(math.floor(math.log2(max(1.0, rows / steps)))))


def check_steps_per_epoch(cfg: RunConfig, steps_per_epoch: int, shard_rows: Sequence[int], world_size: int = 1,
                          where: str = "the training split") -> None:
    """Refuse a run whose epoch has no training step: ``data.batch_size`` larger than every training shard
    (batches never span shards, and training drops each shard's last partial batch) or fewer full batches
    than processes. Raises :class:`~recsys_emb.errors.ConfigError` naming ``data.batch_size``, the split's
    rows and a batch size that trains.

    Example:
        >>> try:
        ...     check_steps_per_epoch(RunConfig(), 0, [5000])
        ... except ConfigError as e:
        ...     print(e)
        data.batch_size=4096 gives no training step: the training split has 5,000 rows, and training uses full batches only; set data.batch_size to at most 5,000 (e.g. --set data.batch_size=128)
    """
    if steps_per_epoch > 0:
        return
    rows, largest = int(sum(shard_rows)), int(max(shard_rows, default=0))
    shards = f" in {len(shard_rows)} shards (the largest {largest:,} rows; batches never span shards)" \
        if len(shard_rows) > 1 else ""
    procs = f", shared by {world_size} processes" if world_size > 1 else ""
    fix = min(largest, suggested_batch_size(rows // max(1, world_size)))
    raise ConfigError(f"data.batch_size={cfg.data.batch_size} gives no training step: {where} has {rows:,} rows"
                      f"{shards}{procs}, and training uses full batches only; set data.batch_size to at most "
                      f"{max(1, largest if world_size == 1 else largest // world_size):,} (e.g. --set "
                      f"data.batch_size={max(1, fix)})")


def settings_warnings(cfg: RunConfig, steps_per_epoch: int, total_steps: int, train_rows: int,
                      cardinalities: Optional[Mapping[str, int]] = None, world_size: int = 1) -> List[str]:
    """One line for each setting of ``cfg`` that would do nothing on this data (empty when none does).

    Args:
        cfg: the run config.
        steps_per_epoch: training steps per epoch (per process).
        total_steps: the run's steps (``epochs x steps_per_epoch``, at most ``train.max_steps``).
        train_rows: rows of the training split.
        cardinalities: ``{field: vocabulary size}`` of the fields that own tables (for the compression
            check; ``None`` skips it).
        world_size: training processes.

    Example:
        >>> cfg = RunConfig()
        >>> cfg.train.eval_every = 2000
        >>> settings_warnings(cfg, steps_per_epoch=25, total_steps=250, train_rows=6400)[0][:60]
        'train.eval_every=2000 but the run trains 250 steps: it never'
    """
    out: List[str] = []
    t, e = cfg.train, cfg.embeddings
    if 0 < steps_per_epoch <= TINY_EPOCH_STEPS:
        per = f" per process ({world_size} processes)" if world_size > 1 else ""
        fix = suggested_batch_size(train_rows // max(1, world_size))
        out.append(f"data.batch_size={cfg.data.batch_size} makes {steps_per_epoch} training step(s) per epoch{per} over "
                   f"{train_rows:,} training rows: the model gets {total_steps} update(s) in all; lower "
                   f"data.batch_size (e.g. --set data.batch_size={fix}: about {train_rows // max(1, world_size) // fix} "
                   f"steps per epoch)")
    if not isinstance(t.eval_every, str) and t.eval_every > total_steps:
        acts = "so early stopping and keep-best do nothing" if t.early_stopping is not None \
            else "so no validation is logged before it"
        out.append(f"train.eval_every={t.eval_every} but the run trains {total_steps} steps: it never validates "
                   f"before its end, {acts}; set train.eval_every: auto (each epoch) or at most {total_steps}")
    if cardinalities and e.variant in compressing_variants() and e.compression > 1:
        sized = {f: c for f, c in cardinalities.items() if f not in e.overrides}
        if sized and max(sized.values()) < e.min_rows:
            name = max(sized, key=lambda f: sized[f])
            out.append(f"embeddings.compression={e.compression:g} changes nothing: every field has fewer ids than "
                       f"embeddings.min_rows={e.min_rows} (the largest, {name}, has {sized[name]:,}), so each "
                       f"keeps a full table; lower embeddings.min_rows (e.g. --set embeddings.min_rows="
                       f"{2 ** int(math.log2(max(1, sized[name])))}) to compress the larger fields, or set "
                       f"embeddings.compression: 1")
    return out


def warn_settings(cfg: RunConfig, steps_per_epoch: int, total_steps: int, train_rows: int,
                  cardinalities: Optional[Mapping[str, int]] = None, world_size: int = 1) -> List[str]:
    """Log each line of :func:`settings_warnings` as a warning; returns them."""
    lines = settings_warnings(cfg, steps_per_epoch, total_steps, train_rows, cardinalities, world_size)
    for line in lines:
        logger.warning("%s", line)
    return lines
