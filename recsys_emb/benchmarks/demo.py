"""The main demo: every variant on Criteo-shaped features -- memory table, then one fused
forward/backward step each on a random skewed batch (``recsys-emb demo``)."""

from __future__ import annotations

import logging
import time
from typing import List, Sequence, Tuple, TypedDict

import torch

from recsys_emb.benchmarks.common import criteo_shaped_cardinalities, skewed_batch, variant_specs
from recsys_emb.layer import EmbeddingLayer
from recsys_emb.memory import format_bytes, memory_from_specs
from recsys_emb.sharding import init_single_process_group, shard_model
from recsys_emb.tables import EmbeddingOptimizer

__all__ = ["DemoRow", "run_demo", "format_table"]

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

    Returns one row per variant: params, bytes, ratio to full, loss before/after the step, step seconds,
    and the output shape ``(batch, 26 * dim)``.

    Example:
        >>> rows = run_demo(cap=1000, dim=8, batch=8)
        >>> [r["variant"] for r in rows][:2], rows[0]["ratio_to_full"], rows[0]["output_shape"]
        (['full', 'hashed'], 1.0, (8, 208))
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


def format_table(rows: Sequence[DemoRow], cap: int, dim: int, batch: int, compression: int) -> str:
    """The demo's rows (:func:`run_demo` with these settings) as the text table ``recsys-emb demo`` shows."""
    lines = [f"recsys_emb demo: 26 Criteo-shaped fields (real Kaggle cardinalities capped at {cap:,}), "
             f"dim {dim}, compressed variants at about 1/{compression} of the bytes per large field",
             f"{'variant':<16}{'params':>14}{'memory':>12}{'vs full':>9}   one fused SGD step on batch {batch}"]
    for r in rows:
        lines.append(f"{r['variant']:<16}{r['params']:>14,}{format_bytes(r['bytes']):>12}{r['ratio_to_full']:>8.1%}   "
                     f"output {r['output_shape']}, mse {r['loss_before']:.4f} -> {r['loss_after']:.4f} "
                     f"({r['step_s'] * 1000:.0f} ms)")
    return "\n".join(lines)
