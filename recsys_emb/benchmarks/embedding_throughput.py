"""Embeddings-only train-step throughput of every variant against TorchRec's own fused path.

Each variant is an :class:`~recsys_emb.layer.EmbeddingLayer` sharded by DistributedModelParallel
(world size 1, gloo, table-wise, FBGEMM fused optimizer); the baseline is a plain TorchRec
EmbeddingBagCollection of full tables under the same DMP and optimizer. Steps of all runs are
interleaved round by round so that machine noise hits them alike; the figure per run is the median.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from recsys_emb.torch_stack import require_torch_stack

require_torch_stack()  # before TorchRec: a missing or mismatched stack fails here, with the install commands

from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_emb.benchmarks.common import (command_line, criteo_shaped_cardinalities, field_cardinalities,
                                         interleaved_seconds, skewed_batch, variant_specs, write_section)
from recsys_emb.layer import EmbeddingLayer
from recsys_emb.memory import memory_from_specs
from recsys_emb.families import option_defaults, variant_names
from recsys_emb.presets import VariantPreset, feature_specs
from recsys_emb.sharding import init_single_process_group, shard_model
from recsys_emb.tables import EmbeddingOptimizer

__all__ = ["PRESET_KNOBS", "preset_knobs", "parse_preset", "run", "format_table", "main"]

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    if name == "PRESET_KNOBS":
        return preset_knobs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def preset_knobs() -> Tuple[str, ...]:
    """The knobs a ``--preset`` may set: ``compression``, ``min_rows`` and every registered family's
    options (:func:`recsys_emb.families.option_defaults`)."""
    return ("compression", "min_rows", *option_defaults())


PRESET_KNOBS: Tuple[str, ...]
"""The :class:`~recsys_emb.presets.VariantPreset` knobs a ``--preset`` may set (:func:`preset_knobs`)."""


def parse_preset(text: str, dim: int, compression: float = 4) -> Tuple[str, VariantPreset]:
    """``NAME=VARIANT[:knob=value,...]`` (the ``--preset`` option) as a named preset at the
    benchmark's dim, compression and ``min_rows = 16 * compression`` unless the knobs say otherwise.

    Example:
        >>> name, preset = parse_preset("qr_big=qr:min_rows=10000", dim=64)
        >>> name, preset.variant, preset.min_rows, preset.compression
        ('qr_big', 'qr', 10000, 4)
    """
    import yaml

    name, eq, rest = text.partition("=")
    variant, _, knobs = rest.partition(":")
    if not eq or not name or not variant:
        raise ValueError(f"--preset {text!r}: write NAME=VARIANT[:knob=value,...], e.g. qr_big=qr:min_rows=10000")
    kwargs: Dict[str, object] = {"variant": variant, "dim": dim, "compression": compression}
    options: Dict[str, object] = {}
    allowed = preset_knobs()
    for item in filter(None, knobs.split(",")):
        knob, eq, value = item.partition("=")
        if not eq or knob not in allowed:
            raise ValueError(f"--preset {text!r}: {item!r} is not knob=value with a knob in {allowed}")
        (kwargs if knob in ("compression", "min_rows") else options)[knob] = yaml.safe_load(value)
    kwargs.setdefault("min_rows", int(16 * float(kwargs["compression"])))  # type: ignore[arg-type]
    return name, VariantPreset(options=options, **kwargs)  # type: ignore[arg-type]


@dataclass
class _Run:
    name: str
    module: nn.Module
    params: int
    bytes: int


def _step(module: nn.Module, kjt: KeyedJaggedTensor, weight: torch.Tensor) -> None:
    out = module(kjt).values()
    (out * weight[: out.shape[1]]).sum().backward()


def run(cap: int = 1_000_000, dim: int = 64, batch: int = 4096, steps: int = 20, warmup: int = 3,
        rounds: int = 5, optimizer: str = "sgd", variants: Optional[Sequence[str]] = None,
        seed: int = 0, presets: Optional[Mapping[str, VariantPreset]] = None) -> List[Dict[str, object]]:
    """Measure every variant (and every extra named preset) and the TorchRec baseline; returns one
    result dict per run."""
    torch.manual_seed(seed)
    init_single_process_group()
    cards = criteo_shaped_cardinalities(cap)
    all_specs = variant_specs(cards, dim)
    for name, preset in (presets or {}).items():
        if name in all_specs:
            raise ValueError(f"--preset name {name!r} is a built-in variant; pick another name")
        all_specs[name] = feature_specs(field_cardinalities(cards), preset)
    chosen = list(variants or all_specs)
    unknown = [v for v in chosen if v not in all_specs]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(all_specs)}")
    opt = EmbeddingOptimizer(optimizer, lr=0.01)
    runs: List[_Run] = []
    baseline = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"t_C{i + 1}", embedding_dim=dim, num_embeddings=c,
                                   feature_names=[f"C{i + 1}"]) for i, c in enumerate(cards)],
        device=torch.device("meta"),
    )
    full_mem = memory_from_specs(all_specs["full"])
    runs.append(_Run("torchrec_baseline", shard_model(baseline, opt), full_mem.params, full_mem.bytes))
    for name in chosen:
        specs = all_specs[name]
        mem = memory_from_specs(specs)
        layer = EmbeddingLayer(specs, device=torch.device("meta"))
        runs.append(_Run(name, shard_model(layer, opt), mem.params, mem.bytes))
        logger.info("built %s: %d params", name, mem.params)
    gen = torch.Generator().manual_seed(seed)
    batches = [skewed_batch(cards, batch, gen) for _ in range(8)]
    weight = torch.randn(len(cards) * dim, generator=gen)
    def step_of(m: nn.Module) -> Callable[[int], None]:
        return lambda i: _step(m, batches[i % len(batches)], weight)

    seconds = interleaved_seconds([step_of(r.module) for r in runs], steps, rounds, warmup)
    base = batch * steps / seconds[0]
    results = []
    for r, sec in zip(runs, seconds):
        sps = batch * steps / sec
        results.append({"variant": r.name, "samples_per_s": round(sps, 1), "ratio_to_torchrec": round(sps / base, 3),
                        "params": r.params, "bytes": r.bytes})
    return results


def format_table(results: Sequence[Dict[str, object]], cap: int, dim: int, batch: int, optimizer: str) -> str:
    """The results as the text table the command line shows."""
    lines = [f"embeddings-only train step, 26 Criteo-shaped fields (cap {cap:,}), dim {dim}, batch {batch}, "
             f"optimizer {optimizer}, torch threads {torch.get_num_threads()}",
             f"{'variant':<20}{'samples/s':>12}{'ratio':>8}{'params':>14}{'MiB':>10}"]
    for r in results:
        ratio = float(r["ratio_to_torchrec"])  # type: ignore[arg-type]
        lines.append(f"{r['variant']:<20}{r['samples_per_s']:>12,.0f}{ratio:>8.{2 if ratio >= 0.1 else 3}f}"
                     f"{r['params']:>14,}{r['bytes'] / 2**20:>10.1f}")  # type: ignore[operator]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, run, write ``--json``; returns the table (the caller prints it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cap", type=int, default=1_000_000, help="cap on each field's cardinality")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median round counts")
    p.add_argument("--optimizer", default="sgd", help="fused embedding optimizer")
    p.add_argument("--variants", nargs="*", default=None, help="variants and preset names to run (default: all)")
    p.add_argument("--preset", action="append", default=[], metavar="NAME=VARIANT[:knob=value,...]",
                   help=f"also measure a variant with other knobs ({', '.join(preset_knobs())}); repeatable, "
                        f"e.g. qr_big=qr:min_rows=10000")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="small tables and few steps (format check)")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--readme", default=None, help="also write the table into this Markdown file (docs/performance.md)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quick:
        a.cap, a.batch, a.steps, a.rounds = 10_000, 256, 2, 1
    try:
        presets = dict(parse_preset(t, a.dim) for t in a.preset)
    except ValueError as e:
        p.error(str(e))
    clash = sorted(set(presets) & set(variant_names()))
    if clash:
        p.error(f"--preset name(s) {clash} are built-in variants; pick other names")
    results = run(cap=a.cap, dim=a.dim, batch=a.batch, steps=a.steps, rounds=a.rounds,
                  optimizer=a.optimizer, variants=a.variants, presets=presets)
    table = format_table(results, a.cap, a.dim, a.batch, a.optimizer)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"settings": vars(a), "results": results}, fh, indent=2)
    if a.readme:
        body = f"```text\n{table}\n```\n\nCommand: `{command_line('bench/embedding_throughput.py', argv)}`"
        write_section(Path(a.readme), "embedding_throughput", body, "## Measured")
    return table
