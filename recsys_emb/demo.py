"""The main demo: every variant on Criteo-shaped features -- memory table, then one fused
forward/backward step each on a random skewed batch."""

from __future__ import annotations

import logging
import time
from typing import List, Tuple, TypedDict

import torch

from recsys_emb.benchmarks.embedding_throughput import criteo_shaped_cardinalities, skewed_batch, variant_specs
from recsys_emb.layer import EmbeddingLayer
from recsys_emb.memory import memory_from_specs
from recsys_emb.sharding import init_single_process_group, shard_model
from recsys_emb.tables import EmbeddingOptimizer

__all__ = ["DemoRow", "run_demo"]

logger = logging.getLogger(__name__)


class DemoRow(TypedDict):
    """One variant's row of :func:`run_demo`."""

    variant: str
    params: int
    bytes: int
    ratio_to_full: float
    loss_before: float
    loss_after: float
    step_s: float
    output_shape: Tuple[int, ...]


def run_demo(cap: int = 1_000_000, dim: int = 16, batch: int = 2048, compression: int = 4,
             seed: int = 0) -> List[DemoRow]:
    """Build each variant, account its memory from specs, and train one fused step.

    Returns one row per variant: params, bytes, ratio to full, loss before/after the step, step seconds.
    """
    torch.manual_seed(seed)
    init_single_process_group()
    cards = criteo_shaped_cardinalities(cap)
    variants = variant_specs(cards, dim, compression)
    full_bytes = memory_from_specs(variants["full"]).bytes
    gen = torch.Generator().manual_seed(seed)
    kjt = skewed_batch(cards, batch, gen)
    target = torch.randn(batch, len(cards) * dim, generator=gen)
    rows: List[DemoRow] = []
    for name, specs in variants.items():
        mem = memory_from_specs(specs)
        # Tables are allocated by DistributedModelParallel, with the optimizer fused into backward.
        model = shard_model(EmbeddingLayer(specs, device=torch.device("meta")), EmbeddingOptimizer("sgd", lr=1.0))
        t0 = time.perf_counter()
        out = model(kjt).values()
        loss = torch.nn.functional.mse_loss(out, target)
        loss.backward()
        step_s = time.perf_counter() - t0
        with torch.no_grad():
            after = torch.nn.functional.mse_loss(model(kjt).values(), target).item()
        rows.append({"variant": name, "params": mem.params, "bytes": mem.bytes, "ratio_to_full": mem.bytes / full_bytes,
                     "loss_before": loss.item(), "loss_after": after, "step_s": step_s,
                     "output_shape": tuple(out.shape)})
        del model
    return rows
