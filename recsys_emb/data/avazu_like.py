"""Avazu-shaped synthetic data with known ground truth: a CSV with a header and Avazu's 24 columns (``id``,
``click``, ``hour`` as YYMMDDHH, hex-string ids such as ``site_id``, small integer codes such as
``banner_pos``), heavy-tailed values, and labels drawn from a planted model whose click probability is
written beside every row (``avazu_like.true_prob.npy``), so that a schema file, ``preprocess --schema`` and
a model can be tested end to end without downloaded data.
"""

from __future__ import annotations

import gzip as _gzip
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys_emb.data.outdir import atomic_output_dir
from recsys_emb.hashing import seed_from_name

__all__ = ["AVAZU_COLUMNS", "AVAZU_CARDINALITIES", "GeneratedAvazuLike", "generate_avazu_like"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]

AVAZU_CARDINALITIES: Dict[str, int] = {
    "C1": 7, "banner_pos": 7, "site_id": 4737, "site_domain": 7745, "site_category": 26, "app_id": 8552,
    "app_domain": 559, "app_category": 36, "device_id": 2686408, "device_ip": 6729486, "device_model": 8251,
    "device_type": 5, "device_conn_type": 4, "C14": 2626, "C15": 8, "C16": 9, "C17": 435, "C18": 4, "C19": 68,
    "C20": 172, "C21": 60,
}
"""Distinct values per feature column of the real Avazu ``train`` (40,428,967 rows over 10 days)."""
AVAZU_COLUMNS: List[str] = ["id", "click", "hour", *AVAZU_CARDINALITIES]
"""The 24 columns of Avazu's CSV, in order."""
_HEX_COLUMNS = {"site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category", "device_id",
                "device_ip", "device_model"}
_INT_BASE = {"C1": 1001, "banner_pos": 0, "device_type": 0, "device_conn_type": 0, "C14": 15000, "C15": 216,
             "C16": 36, "C17": 1700, "C18": 0, "C19": 35, "C20": 100000, "C21": 1}
_FIELD_SD = {"site_id": 0.5, "app_id": 0.5, "device_model": 0.3, "C14": 0.4, "C17": 0.3, "banner_pos": 0.3,
             "site_category": 0.3, "app_category": 0.3, "C18": 0.2, "device_conn_type": 0.2, "C21": 0.2,
             "device_ip": 0.3, "device_id": 0.2}
_INTERACTIONS = (("site_id", "device_model"), ("app_id", "C14"))
_RANK = 4
_BLOCK_ROWS = 1 << 16
GENERATED_FILES = ("avazu_like.csv", "avazu_like.csv.gz", "avazu_like.true_prob.npy", "generator.json")


@dataclass
class GeneratedAvazuLike:
    """What :func:`generate_avazu_like` wrote: the CSV, its true probabilities (one per data row, in order)."""

    csv: Path
    true_prob: Path
    rows: int
    positive_rate: float
    seconds: float
    info: Dict[str, object]


def _cardinalities(scale: float) -> Dict[str, int]:
    return {c: max(min(n, 16), int(round(n * scale))) if n > 1000 else n for c, n in AVAZU_CARDINALITIES.items()}


class _World:
    def __init__(self, seed: int, scale: float, positive_rate: float) -> None:
        self.cards = _cardinalities(scale)
        self.effects: Dict[str, np.ndarray] = {}
        self.factors: Dict[str, np.ndarray] = {}
        self.zipf = {}
        for c, n in self.cards.items():
            rng = np.random.default_rng(seed_from_name("avazu-like/field", c, seed))
            self.effects[c] = _FIELD_SD.get(c, 0.1) * rng.standard_normal(n)
            self.zipf[c] = 1.05 if n > 100 else 0.8
        for a, b in _INTERACTIONS:
            for c in (a, b):
                rng = np.random.default_rng(seed_from_name("avazu-like/factor", c, seed))
                self.factors[c] = rng.standard_normal((self.cards[c], _RANK)) * (0.7 / np.sqrt(_RANK))
        self.hour_effect = 0.3 * np.sin(np.arange(24) / 24 * 2 * np.pi)
        self.bias = 0.0
        rng = np.random.default_rng(seed_from_name("avazu-like/calibration", seed))
        base = self._logit(self._draw(rng, 1 << 15, 0, 1 << 15)[0])
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if (1 / (1 + np.exp(-(base + mid)))).mean() < positive_rate else (lo, mid)
        self.bias = 0.5 * (lo + hi)

    def _ranks(self, rng: np.random.Generator, c: str, n: int) -> np.ndarray:
        card, s = self.cards[c], self.zipf[c]
        u = rng.random(n)
        x = (1.0 - u * (1.0 - (card + 1.0) ** (1.0 - s))) ** (1.0 / (1.0 - s))
        return np.minimum(np.floor(x).astype(np.int64) - 1, card - 1)

    def _draw(self, rng: np.random.Generator, n: int, start: int, total: int) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
        ranks = {c: self._ranks(rng, c, n) for c in self.cards}
        hours = ((start + np.arange(n)) * 240 // max(total, 1)).astype(np.int64)  # 10 days, in time order
        return {**ranks, "__hour__": hours}, hours

    def _logit(self, ranks: Dict[str, np.ndarray]) -> np.ndarray:
        z = self.bias + self.hour_effect[ranks["__hour__"] % 24]
        for c in self.cards:
            z = z + self.effects[c][ranks[c]]
        for a, b in _INTERACTIONS:
            z = z + (self.factors[a][ranks[a]] * self.factors[b][ranks[b]]).sum(1)
        return z

    def block(self, k: int, n: int, start: int, total: int, seed: int) -> Tuple[pa.Table, np.ndarray]:
        rng = np.random.default_rng(seed_from_name("avazu-like/rows", seed, k))
        ranks, hours = self._draw(rng, n, start, total)
        p = 1 / (1 + np.exp(-self._logit(ranks)))
        click = (rng.random(n) < p).astype(np.int8)
        hour = 14102100 + (hours // 24) * 100 + hours % 24
        cols: Dict[str, pa.Array] = {"id": pa.array((start + np.arange(n)) * 7919 + 10_000_000_000, pa.uint64()),
                                     "click": pa.array(click), "hour": pa.array(hour)}
        for c in self.cards:
            r = ranks[c]
            if c in _HEX_COLUMNS:
                key = seed_from_name("avazu-like/hex", c) & 0xFFFFFFFF
                v = (r.astype(np.uint64) * np.uint64(2654435761) + np.uint64(key)) & np.uint64(0xFFFFFFFF)
                cols[c] = pa.array([f"{x:08x}" for x in v.tolist()])
            else:
                cols[c] = pa.array(_INT_BASE[c] + r)
        return pa.table(cols), p


def generate_avazu_like(out_dir: PathLike, rows: int, *, scale: float = 0.01, seed: int = 0,
                        positive_rate: float = 0.17, gzip: bool = False, overwrite: bool = False) -> GeneratedAvazuLike:
    """Write ``out_dir/avazu_like.csv`` (or ``.csv.gz``): Avazu's header and columns, ``rows`` rows in time
    order over 10 days of ``hour`` values, and ``avazu_like.true_prob.npy`` (float32, the planted click
    probability of each data row).

    The planted model: ``logit = bias + hour-of-day effect + sum of per-value effects of every field +
    rank-4 factor products of (site_id, device_model) and (app_id, C14)``; values are Zipf-distributed
    over the real Avazu cardinalities (those above 1000 times ``scale``); ``bias`` makes the mean click
    probability ``positive_rate`` (Avazu's is about 0.17).

    Example (``tmp``: any writable directory):
        >>> g = generate_avazu_like(tmp / "avazu", rows=1000, seed=0)
        >>> g.csv.read_text().splitlines()[0].split(",")[:6]
        ['id', 'click', 'hour', 'C1', 'banner_pos', 'site_id']
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    t0 = time.perf_counter()
    world = _World(seed, scale, positive_rate)
    name = "avazu_like.csv" + (".gz" if gzip else "")
    with atomic_output_dir(out_dir, overwrite=overwrite, owned=GENERATED_FILES, command="generate avazu-like") as out:
        probs = []
        positives = 0
        opener = _gzip.open if gzip else open
        with opener(out / name, "wb") as f:
            f.write((",".join(AVAZU_COLUMNS) + "\n").encode())  # unquoted, as Avazu's
            for k, start in enumerate(range(0, rows, _BLOCK_ROWS)):
                n = min(_BLOCK_ROWS, rows - start)
                table, p = world.block(k, n, start, rows, seed)
                sink = pa.BufferOutputStream()
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
                f.write(sink.getvalue().to_pybytes())
                probs.append(p.astype(np.float32))
                positives += int(np.asarray(table.column("click")).sum())
        np.save(out / "avazu_like.true_prob.npy", np.concatenate(probs))
        info = {"rows": rows, "seed": seed, "scale": scale, "positive_rate_target": positive_rate,
                "bias": world.bias, "cardinalities": world.cards, "interactions": [list(x) for x in _INTERACTIONS]}
        (out / "generator.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    final = Path(out_dir)
    seconds = time.perf_counter() - t0
    logger.info("generated %d Avazu-like rows in %.1fs, positive rate %.3f", rows, seconds, positives / rows)
    return GeneratedAvazuLike(final / name, final / "avazu_like.true_prob.npy", rows, positives / rows, seconds, info)
