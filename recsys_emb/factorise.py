"""Post-training low-rank factorisation: a trained model's full tables replaced by their truncated SVD.

A full ``N x d`` table ``W`` becomes a :class:`~recsys_emb.specs.LowRank` feature: ``A = U_r S_r``
(``N x r``, a TorchRec table) and the projection ``P = V_r`` (``d x r``), so ``A P^T`` is the best rank-``r``
approximation of ``W`` (Eckart-Young). :func:`factorise_checkpoint` reports the metrics before, after the
factorisation and after a short fine-tune of the whole model (``recsys-emb factorise``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from recsys_emb.errors import ConfigError, SpecError
from recsys_emb.layer import EmbeddingLayer
from recsys_emb.models import DLRM
from recsys_emb.specs import FeatureSpec, Full, LowRank
from recsys_emb.tables.init import TABLE_STATE_KEY

__all__ = ["svd_factors", "factorise_layer", "factorise_checkpoint"]

logger = logging.getLogger(__name__)


def svd_factors(weight: torch.Tensor, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The rank-``rank`` truncated SVD of ``weight (N, d)`` as ``(A (N, rank), P (d, rank))`` with
    ``A @ P.T`` the best rank-``rank`` approximation of ``weight`` (in float64, returned in its dtype).

    Example:
        >>> w = torch.randn(50, 4) @ torch.randn(4, 8)   # a rank-4 table
        >>> a, p = svd_factors(w, 4)
        >>> torch.allclose(a @ p.T, w, atol=1e-4), tuple(a.shape), tuple(p.shape)
        (True, (50, 4), (8, 4))
    """
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    a, p = u[:, :rank] * s[:rank], vh[:rank].T
    if a.shape[1] < rank:  # fewer singular values than the rank (a table of fewer rows or columns): zeros
        a = torch.nn.functional.pad(a, (0, rank - a.shape[1]))
        p = torch.nn.functional.pad(p, (0, rank - p.shape[1]))
    return a.contiguous().to(weight.dtype), p.contiguous().to(weight.dtype)


def _targets(layer: EmbeddingLayer, rank: int, min_rows: int) -> List[str]:
    """The table owners whose full tables are factorised: ``>= min_rows`` ids, a dim above ``rank``, and
    fewer parameters once factorised (``N r + r d < N d``)."""
    return [f.name for f in layer.features if f.shared_with is None and isinstance(f.embedding, Full)
            and (n := int(f.cardinality or 0)) >= min_rows and (d := f.embedding.dim) > rank and n * rank + rank * d < n * d]


def factorise_layer(layer: EmbeddingLayer, rank: int, min_rows: int = 0) -> Tuple[EmbeddingLayer, List[str]]:
    """A copy of ``layer`` (unsharded, tables materialised) whose full tables of at least ``min_rows`` ids,
    a dim above ``rank`` and enough rows to save parameters are their truncated SVD (:class:`~recsys_emb.specs.LowRank` features; the
    features sharing them follow); every other table and dense parameter is copied.

    Returns:
        ``(new layer, factorised feature names)``.
    Raises:
        ConfigError: ``rank`` is no multiple of 4, or no table qualifies.

    Example:
        >>> layer = EmbeddingLayer([FeatureSpec("a", Full(dim=16), cardinality=100)])
        >>> new, names = factorise_layer(layer, rank=4)
        >>> names, new.features[0].embedding
        (['a'], LowRank(dim=16, rank=4, min_rows=0))
    """
    targets = _targets(layer, rank, min_rows)
    try:
        specs = [dataclasses.replace(f, embedding=LowRank(dim=f.embedding.dim, rank=rank))  # type: ignore[attr-defined]
                 if f.table_owner in targets else f for f in layer.features]
    except SpecError as e:
        raise ConfigError(f"--rank {rank}: {e}") from None
    if not targets:
        raise ConfigError(f"no full table has >= {min_rows} ids and a dim above --rank {rank}: nothing to factorise "
                          f"(full fields: {[f.name for f in layer.features if isinstance(f.embedding, Full)]})")
    new = EmbeddingLayer(specs, validate_ids=layer.validate_ids, l2=layer.l2)
    old = layer.state_dict()
    owner = {f.name: f.table_owner for f in new.features}
    factors = {name: svd_factors(old[key], rank) for key in old if (m := TABLE_STATE_KEY.search(key))
               and (name := m.group(1)) in targets}
    state = new.state_dict()
    for key in state:
        m = TABLE_STATE_KEY.search(key)
        if m is not None and m.group(1) in targets:
            state[key] = factors[m.group(1)][0]
        elif key.endswith(".projection.weight") and owner.get(key.split(".")[1]) in targets:
            state[key] = factors[owner[key.split(".")[1]]][1]  # a sharing feature's projection is its owner's
        else:
            state[key] = old[key]  # every other table and dense parameter, as trained
    new.load_state_dict(state)
    return new, targets


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _finetune(model: nn.Module, data: Any, steps: int, lr: float, batch_size: int) -> None:
    """``steps`` Adam steps of the whole model on the train split (binary cross-entropy)."""
    from recsys_emb.data.batches import ParquetBatches
    from recsys_emb.training.metrics import forward

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    done = 0
    while done < steps:
        for batch in ParquetBatches(data, "train", batch_size=batch_size):
            loss = nn.functional.binary_cross_entropy_with_logits(forward(model, batch), batch.labels.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    model.eval()


def factorise_checkpoint(checkpoint: Union[str, os.PathLike], rank: int, min_rows: int = 0, split: str = "valid",
                         finetune_steps: int = 0, lr: float = 1e-4, batch_size: int = 4096) -> Dict[str, Any]:
    """Factorise a trained DLRM's full tables by truncated SVD and measure it.

    Args:
        checkpoint: a run or checkpoint directory (:func:`recsys_emb.serving.load_model`; needs its dataset).
        rank: the rank kept, a multiple of 4 below the tables' dim.
        min_rows: only tables of at least this many ids are factorised.
        split: the split the metrics are measured on.
        finetune_steps: then this many Adam steps (``lr``) of the whole model on the train split; 0: none.
    Returns:
        ``{"rank", "fields", "params_before", "params_after", "before", "after_svd", "after_finetune"}``;
        the metrics are :func:`~recsys_emb.training.metrics.score_split`'s (AUC, log loss, ...);
        ``after_finetune`` is None without a fine-tune. The checkpoint is not changed.
    """
    from recsys_emb.serving import load_model
    from recsys_emb.training.metrics import score_split

    if finetune_steps < 0:
        raise ConfigError(f"--finetune-steps {finetune_steps} must be >= 0")
    model, _, data = load_model(checkpoint)
    if not isinstance(model, DLRM):
        raise ConfigError(f"factorise takes a DLRM run; {checkpoint} holds a {type(model).__name__}")
    before = score_split(model, data["path"], split, batch_size)
    params_before = _params(model)
    new, names = factorise_layer(model.embeddings, rank, min_rows)
    model.embeddings = new
    model.eval()
    after = score_split(model, data["path"], split, batch_size)
    logger.info("factorised %d tables to rank %d: %s AUC %.4f -> %.4f", len(names), rank, split,
                before["auc"], after["auc"])
    tuned: Optional[Dict[str, Any]] = None
    if finetune_steps:
        _finetune(model, data["path"], finetune_steps, lr, batch_size)
        tuned = score_split(model, data["path"], split, batch_size)
    return {"rank": rank, "fields": names, "params_before": params_before, "params_after": _params(model),
            "before": before, "after_svd": after, "after_finetune": tuned}
