"""CTR metrics of a model on a split: AUC, log loss, normalised entropy, and the Bayes ceiling where the
data knows its true click probabilities. Every rank scores its share; the predictions are gathered,
not the metrics averaged."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recsys_emb.data.batches import ParquetBatches
from recsys_emb.data.metrics import ceiling, log_loss, roc_auc

__all__ = ["ctr_metrics", "gather", "forward", "score_split"]


def ctr_metrics(labels: np.ndarray, logits: np.ndarray) -> Dict[str, float]:
    """AUC, log loss and normalised entropy (log loss / entropy of the evaluated set's positive rate).

    Example:
        >>> m = ctr_metrics(np.array([0, 1, 1, 0]), np.array([-2.0, 1.0, 0.5, 0.1]))
        >>> m["auc"]
        1.0
    """
    y = np.asarray(labels, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    p = np.clip(p, 1e-7, 1 - 1e-7)
    ll = log_loss(y, p)
    rate = float(np.clip(y.mean(), 1e-7, 1 - 1e-7))
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    auc = roc_auc(y, p) if 0 < y.sum() < y.size else float("nan")
    return {"auc": auc, "logloss": ll, "ne": ll / entropy, "rows": int(y.size), "positive_rate": rate}


def gather(arr: np.ndarray) -> np.ndarray:
    """Every rank's array concatenated in rank order (the array itself in one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return arr
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, arr)
    return np.concatenate(parts)


def forward(model: nn.Module, batch: Any, device: Optional[torch.device] = None) -> torch.Tensor:
    """``model(dense, sparse)`` on a batch, moved to ``device`` first when it is not the CPU."""
    if device is not None and device.type != "cpu":
        return model(batch.dense.to(device, non_blocking=True), batch.sparse.to(device, non_blocking=True))
    return model(batch.dense, batch.sparse)


@torch.no_grad()
def score_split(model: nn.Module, directory: Any, split: str, batch_size: int, rank: int = 0, world_size: int = 1,
                device: Optional[torch.device] = None) -> Dict[str, Any]:
    """Metrics of ``split`` over all ranks' predictions (gathered, not averaged).

    No row is dropped: rank ``r`` scores batches ``r, r + W, ...`` of the whole split, and ranks short of a
    batch run a dummy forward (discarded), since sharded forwards are collective. The model is put in
    eval mode and back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    ds = ParquetBatches(directory, split, batch_size=batch_size)
    with_truth = bool(ds.schema.true_prob)
    if with_truth:
        ds = ParquetBatches(directory, split, batch_size=batch_size, with_true_prob=True)
    slots = -(-len(ds) // world_size)
    logits, labels, truth = [], [], []
    first = None
    mine = 0
    for i, batch in enumerate(ds):
        first = first if first is not None else batch
        if i % world_size != rank:
            continue
        mine += 1
        logits.append(forward(model, batch, device).float().cpu().numpy())
        labels.append(batch.labels.numpy())
        if batch.true_prob is not None:
            truth.append(batch.true_prob.numpy())
    for _ in range(slots - mine):
        forward(model, first, device)
    model.train(was_training)
    empty = np.zeros(0, dtype=np.float32)
    y = gather(np.concatenate(labels) if labels else empty)
    z = gather(np.concatenate(logits) if logits else empty)
    out: Dict[str, Any] = {"split": split, **ctr_metrics(y, z)}
    if with_truth:
        c = ceiling(y, gather(np.concatenate(truth) if truth else empty))
        out["ceiling_auc"], out["ceiling_logloss"] = c.auc, c.logloss
    return out
