"""Single-device embedding train step in plain PyTorch (the GPU path): the table-batched kernel
(``TableBatched(EmbeddingLayer(...))``, SGD fused into backward) against one
``nn.EmbeddingBag(sparse=True)`` per field with ``torch.optim.SGD``, measured in the same run.

The step is forward + backward + SGD update of the 26 Criteo Kaggle fields (their real
cardinalities, optionally capped), one id per field and sample, power-law skewed ids. Runs of all
models are interleaved round by round; the figure per model is the median round. On CUDA each round
is timed between two synchronisations.

Plain PyTorch end to end (the inputs are ids and bag lengths per field, fed to
:meth:`~recsys_emb.layer.EmbeddingLayer.embed`), so it runs where TorchRec and FBGEMM are not installed.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from recsys_emb.benchmarks.common import (command_line, criteo_shaped_cardinalities, interleaved_seconds,
                                         skewed_ids, variant_specs, write_section)
from recsys_emb.layer import EmbeddingLayer
from recsys_emb.memory import memory_from_specs
from recsys_emb.tables import EmbeddingOptimizer, TableBatched

__all__ = ["VARIANTS", "PerFieldEmbeddingBags", "run", "format_table", "main"]

logger = logging.getLogger(__name__)

VARIANTS = ("full", "unified", "hashed")


class PerFieldEmbeddingBags(nn.Module):
    """The baseline: one ``nn.EmbeddingBag(mode="sum", sparse=True)`` per field.

    Input: one int64 ``(B,)`` id tensor per field (one id per bag). Output: ``(B, fields * dim)``.

    Example:
        >>> m = PerFieldEmbeddingBags([10, 20], dim=4, device=torch.device("cpu"))
        >>> m([torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])]).shape
        torch.Size([3, 8])
    """

    def __init__(self, cards: Sequence[int], dim: int, device: torch.device) -> None:
        super().__init__()
        self.bags = nn.ModuleList(nn.EmbeddingBag(c, dim, mode="sum", sparse=True, device=device) for c in cards)

    def forward(self, ids: Sequence[torch.Tensor]) -> torch.Tensor:
        offsets = torch.arange(ids[0].numel(), device=ids[0].device)  # one id per bag
        return torch.cat([bag(v, offsets) for bag, v in zip(self.bags, ids)], dim=1)


@dataclass
class _Batch:
    """One batch as plain tensors: per field the ids ``(B,)`` and the bag lengths (all 1)."""

    ids: List[torch.Tensor]
    lengths: List[torch.Tensor]


@dataclass
class _Run:
    name: str
    step: Callable[[_Batch], None]
    params: int


def _batch(cards: Sequence[int], batch: int, generator: torch.Generator, device: torch.device) -> _Batch:
    ids = [v.to(device) for v in skewed_ids(cards, batch, generator)]
    ones = torch.ones(batch, dtype=torch.int64, device=device)
    return _Batch(ids, [ones] * len(ids))


def run(device: str = "cpu", cap: Optional[int] = 1_000_000, dim: int = 64, batch: int = 4096, steps: int = 20,
        warmup: int = 3, rounds: int = 5, lr: float = 0.01, variants: Sequence[str] = VARIANTS, compression: int = 4,
        seed: int = 0) -> Dict[str, Any]:
    """Measure the baseline and each variant with the table-batched kernel; returns settings and results."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    cards = criteo_shaped_cardinalities(cap if cap else 10**12)
    all_specs = variant_specs(cards, dim, compression=compression)
    unknown = [v for v in variants if v not in all_specs]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(all_specs)}")
    runs: List[_Run] = []
    base = PerFieldEmbeddingBags(cards, dim, dev)
    sgd = torch.optim.SGD(base.parameters(), lr=lr)
    weight = torch.randn(len(cards) * dim, generator=torch.Generator().manual_seed(seed)).to(dev)

    def base_step(b: _Batch) -> None:
        sgd.zero_grad(set_to_none=True)
        (base(b.ids) * weight).sum().backward()
        sgd.step()

    runs.append(_Run("per_field_embedding_bag", base_step, sum(p.numel() for p in base.parameters())))
    for name in variants:
        specs = all_specs[name]
        layer = EmbeddingLayer(specs, device=torch.device("meta"), validate_ids=False)
        TableBatched(layer, EmbeddingOptimizer("sgd", lr=lr), device=dev)  # the kernel replaces layer.ebc
        dense = [p for p in layer.parameters() if p.requires_grad]
        opt = torch.optim.SGD(dense, lr=lr) if dense else None

        def step(b: _Batch, layer: EmbeddingLayer = layer, opt: Optional[torch.optim.Optimizer] = opt) -> None:
            out = layer.embed(b.ids, b.lengths)
            (out * weight[: out.shape[1]]).sum().backward()
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)

        runs.append(_Run(name, step, memory_from_specs(specs).params))
        logger.info("built %s", name)
    gen = torch.Generator().manual_seed(seed)
    batches = [_batch(cards, batch, gen, dev) for _ in range(4)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    def step_of(f: Callable[[_Batch], None]) -> Callable[[int], None]:
        return lambda i: f(batches[i % len(batches)])

    seconds = interleaved_seconds([step_of(r.step) for r in runs], steps, rounds, warmup, sync)
    base_sps = batch * steps / seconds[0]
    results = []
    for r, sec in zip(runs, seconds):
        sps = batch * steps / sec
        results.append({"model": r.name, "samples_per_s": round(sps, 1), "ratio_to_baseline": round(sps / base_sps, 3),
                        "params": r.params})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return {"settings": {"device": name, "cap": cap, "dim": dim, "batch": batch, "steps": steps, "rounds": rounds,
                         "lr": lr, "compression": compression, "torch": torch.__version__},
            "results": results}


def format_table(res: Dict[str, Any]) -> str:
    """The results as a text table."""
    s = res["settings"]
    cap = "full cardinalities" if not s["cap"] else f"cardinalities capped at {s['cap']:,}"
    lines = [f"embedding train step (fwd + bwd + SGD), 26 Criteo Kaggle fields ({cap}), dim {s['dim']}, "
             f"batch {s['batch']}, {s['device']}, torch {s['torch']}, median of {s['rounds']} rounds of {s['steps']} steps",
             f"{'model':<26}{'samples/s':>14}{'ratio':>8}{'params':>16}"]
    for r in res["results"]:
        lines.append(f"{r['model']:<26}{r['samples_per_s']:>14,.0f}{r['ratio_to_baseline']:>8.2f}{r['params']:>16,}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``--json`` / ``--readme``; returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--cap", type=int, default=None,
                   help="cap on each field's cardinality (default: none on CUDA, 1,000,000 on CPU; 0 = none)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=None, help="default 65536 on CUDA, 4096 on CPU")
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--quick", action="store_true", help="small tables and few steps (format check)")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--readme", default=None, help="also write the table into this README (models/dlrm/README.md)")
    a = p.parse_args(argv)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to PyTorch; use --device cpu")
    cap = a.cap if a.cap is not None else (None if device.startswith("cuda") else 1_000_000)
    batch = a.batch or (65536 if device.startswith("cuda") else 4096)
    steps, rounds, warmup = a.steps, a.rounds, 3
    if a.quick:
        cap, batch, steps, rounds, warmup = 10_000, 256, 2, 1, 1
    res = run(device=device, cap=cap or None, dim=a.dim, batch=batch, steps=steps, warmup=warmup, rounds=rounds,
              variants=a.variants)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    table = format_table(res)
    if a.readme:
        body = f"```text\n{table}\n```\n\nCommand: `{command_line('bench/lookup_throughput.py', argv)}`"
        key = "lookup_cuda" if device.startswith("cuda") else "lookup_cpu"
        title = "### On CUDA" if key == "lookup_cuda" else "### On CPU"
        write_section(Path(a.readme), key, body, title)
    return table
