"""Sizing on paper: TorchRec's plan for every variant on Criteo Kaggle (33.8M ids) and Criteo 1TB (882.8M
ids) at several GPU counts, from the published cardinalities (no data, no GPU: the planner runs on
``meta`` tensors with a CUDA topology). Writes the table into docs/sharding.md.

    .venv/bin/python bench/plan_sizes.py                      # 8, 16, 64 GPUs of 80 GB, every variant
    .venv/bin/python bench/plan_sizes.py --world-sizes 2 --variants full qr --datasets kaggle --no-readme
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["DATASETS", "run", "format_table", "main"]

logger = logging.getLogger(__name__)

DATASETS: Dict[str, Dict[str, Any]] = {
    "kaggle": {"dim": 16, "note": "dim 16 as in configs/dlrm_criteo_kaggle.yaml, the DLRM reference model for Kaggle"},
    "1tb": {"dim": 128, "note": "dim 128 as in the DLRM reference model for Criteo 1TB (MLPerf)"},
}
"""Each dataset's embedding dim in the table: its DLRM reference model's."""

CUDA_TYPES = "[table_wise,row_wise,column_wise,table_row_wise]"


def run(config: Path, datasets: Sequence[str] = ("kaggle", "1tb"), world_sizes: Sequence[int] = (8, 16, 64),
        variants: Optional[Sequence[str]] = None, hbm_gb: float = 80.0) -> List[Dict[str, Any]]:
    """One row per (dataset, variant, world size): total table bytes, the largest rank's, whether it fits
    (``recsys_emb.training.plan_run`` with ``--cardinalities``), with the config's other settings."""
    from recsys_emb.config import load_config
    from recsys_emb.presets import VARIANTS
    from recsys_emb.training import plan_run

    rows: List[Dict[str, Any]] = []
    for ds in datasets:
        for variant in variants or VARIANTS:
            for world in world_sizes:
                cfg = load_config(config, [f"embeddings.variant={variant}", f"embeddings.dim={DATASETS[ds]['dim']}",
                                           f"train.sharding_types={CUDA_TYPES}"])
                out = plan_run(cfg, world, "cuda", cardinalities=ds, hbm_gb=hbm_gb)
                types = sorted({t["sharding_type"] for t in out["tables"]})
                rows.append({"dataset": ds, "variant": variant, "dim": DATASETS[ds]["dim"],
                             "compression": cfg.embeddings.compression if variant != "full" else 1,
                             "world_size": world, "hbm_gb": hbm_gb, "fits": out["fits"],
                             "total_bytes": sum(out["rank_bytes"]),
                             "max_rank_bytes": max(out["rank_bytes"]) if out["rank_bytes"] else None,
                             "sharding_types": types, "error": out["error"]})
                logger.info("%s %s %d GPUs: %s", ds, variant, world, "fits" if out["fits"] else "does not fit")
    return rows


def _gb(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e9:,.1f}"


def format_table(rows: Sequence[Dict[str, Any]], command: str = "") -> str:
    """The rows of :func:`run` as markdown: per dataset, one line per variant with the largest rank's GB
    at each world size (and whether the tables fit), then the command."""
    worlds = sorted({r["world_size"] for r in rows})
    hbm = rows[0]["hbm_gb"] if rows else 80.0
    out: List[str] = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == ds]
        out.append(f"**{ds}** ({DATASETS[ds]['note']}; GPUs of {hbm:g} GB, {hbm * 0.85:g} GB of it for tables):")
        out.append("")
        out.append("| variant | tables (GB) | " + " | ".join(f"{w} GPUs: largest rank (GB)" for w in worlds)
                   + " | sharding types chosen |")
        out.append("|---|---:|" + "---:|" * len(worlds) + "---|")
        for variant in dict.fromkeys(r["variant"] for r in mine):
            by_world = {r["world_size"]: r for r in mine if r["variant"] == variant}
            total = next((r["total_bytes"] for r in by_world.values() if r["fits"]), None)
            cells = [(_gb(r["max_rank_bytes"]) if r["fits"] else "does not fit") for r in
                     (by_world[w] for w in worlds)]
            types = sorted({t for r in by_world.values() for t in r["sharding_types"]})
            name = variant if variant == "full" else f"{variant} (1/{by_world[worlds[0]]['compression']:g})"
            out.append(f"| {name} | {_gb(total)} | " + " | ".join(cells) + f" | {', '.join(types)} |")
        out.append("")
    out.append("Bytes: float32 weights + row-wise Adagrad state, as `recsys-emb plan` counts them (GB = 10^9 bytes).")
    if command:
        out.append("")
        out.append(f"Command: `{command}`")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Parse arguments, plan, write the table into docs/sharding.md (unless ``--no-readme``); returns it."""
    from recsys_emb.benchmarks.common import REPO, command_line, publish, quiet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "dlrm_criteo_kaggle.yaml"),
                   help="the model and optimizer (its data is not read)")
    p.add_argument("--datasets", nargs="+", default=["kaggle", "1tb"], choices=sorted(DATASETS))
    p.add_argument("--world-sizes", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--variants", nargs="+", default=None, help="default: every variant")
    p.add_argument("--hbm-gb", type=float, default=80.0)
    p.add_argument("--no-readme", action="store_true", help="print only; leave docs/sharding.md as it is")
    args = p.parse_args(argv)
    quiet()
    rows = run(Path(args.config), args.datasets, args.world_sizes, args.variants, args.hbm_gb)
    text = format_table(rows, command_line("bench/plan_sizes.py", argv))
    return publish(text, None if args.no_readme else REPO / "docs" / "sharding.md", "sizing",
                   "## Sizing on paper: GPUs per variant")
