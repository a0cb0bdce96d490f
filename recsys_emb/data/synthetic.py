"""Criteo-like synthetic data with known ground truth: the real Kaggle TSV schema, heavy-tailed ids and
counts, and labels drawn from a planted model whose click probability is written beside every row.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from recsys_emb.data.criteo import CAT_COLUMNS, CRITEO_KAGGLE_CARDINALITIES, INT_COLUMNS, LABEL_COLUMN, true_prob_path
from recsys_emb.data.outdir import atomic_output_dir
from recsys_emb.errors import DataError
from recsys_emb.hashing import hash64, seed_from_name

__all__ = [
    "CriteoLikeConfig",
    "CriteoLikeWorld",
    "GeneratedCriteoLike",
    "scaled_cardinalities",
    "generate_criteo_like",
]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]

# Approximate missing rates of the real Kaggle data (fraction of empty values per column).
_INT_MISSING = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22]
_CAT_MISSING = {"C3": 0.03, "C4": 0.03, "C12": 0.03, "C16": 0.03, "C21": 0.03, "C24": 0.03, "C22": 0.76}
# C19, C20, C25, C26 are empty together in ~44% of real rows; C25/C26 are the last columns, so such lines
# end in empty fields ("...\t\t"), a quirk the reader must handle.
_CAT_BLOCK_MISSING = (("C19", "C20", "C25", "C26"), 0.44)
# Log-normal parameters (mu, sigma) of the counts I1..I13 (heavy tails, like the real columns).
_INT_LOGNORMAL = [(0.8, 1.2), (1.5, 2.0), (2.3, 1.5), (1.6, 1.1), (7.5, 2.0), (3.8, 1.8), (1.8, 1.4),
                  (2.6, 1.0), (3.6, 1.4), (0.3, 0.6), (1.0, 1.0), (0.3, 0.9), (1.7, 1.1)]
# Field pairs whose ids interact through rank-r factors (dot products, which DLRM's interaction layer
# models and a linear model cannot): mid-sized fields, so the factors of frequent ids are learnable.
_INTERACTION_PAIRS = (("C1", "C2"), ("C5", "C8"), ("C6", "C14"), ("C7", "C19"), ("C10", "C13"),
                      ("C15", "C25"), ("C17", "C23"), ("C11", "C18"))
_INT_EFFECT_COLUMNS = ("I1", "I3", "I6", "I7", "I11", "I13")
_BLOCK_ROWS = 1 << 16  # rows per generation block: the output does not depend on the write chunk
GENERATOR_FILE = "generator.json"
GENERATED_FILES = ("criteo_like.tsv", "criteo_like.tsv.gz", "criteo_like.true_prob.npy", "criteo_like.labels.npy",
                   GENERATOR_FILE)
"""The files of a generated Criteo-like directory (the TSV plain or gzipped)."""


def scaled_cardinalities(scale: float, min_cardinality: int = 16) -> List[int]:
    """Criteo Kaggle's cardinalities times ``scale``, at least ``min(real, min_cardinality)``.

    Example:
        >>> scaled_cardinalities(0.01)[:3]
        [16, 16, 101312]
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return [max(int(round(c * scale)), min(c, min_cardinality)) for c in CRITEO_KAGGLE_CARDINALITIES]


@dataclass(frozen=True)
class CriteoLikeConfig:
    """The planted world of the Criteo-like generator.

    Attributes:
        scale: per-field cardinality = Criteo Kaggle's real one times ``scale`` (1.0 = real sizes; ids are
            drawn by inverse CDF and effects by hashing, so no per-id table is ever built).
        seed: one seed for the world (exponents, effects) and the rows.
        positive_rate: target mean click probability (Criteo Kaggle: ~0.256).
        interaction_rank: rank of the factor interactions between field pairs.
        id_effect_sd, interaction_sd, int_effect_sd: standard deviations of the three logit components.
        zipf_range: per-field Zipf exponents are drawn uniformly from this range.
    """

    scale: float = 0.01
    seed: int = 0
    positive_rate: float = 0.25
    interaction_rank: int = 4
    id_effect_sd: float = 1.0
    interaction_sd: float = 1.0
    int_effect_sd: float = 0.5
    zipf_range: Tuple[float, float] = (1.05, 1.4)

    def __post_init__(self) -> None:
        if not 0.0 < self.positive_rate < 1.0:
            raise ValueError(f"positive_rate must be in (0, 1), got {self.positive_rate}")
        if self.interaction_rank < 1:
            raise ValueError(f"interaction_rank must be >= 1, got {self.interaction_rank}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


def _gauss(ids: np.ndarray, seed: int) -> np.ndarray:
    """A standard normal per id, from a stable hash of (id, seed): a table of any size without storing it."""
    h = hash64(torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)), seed)
    u = ((h >> 11) & ((1 << 53) - 1)).to(torch.float64).add_(0.5).mul_(2.0 ** -53)
    return torch.special.ndtri(u).numpy()


def _mix32(rank: np.ndarray, key: int) -> np.ndarray:
    """A bijection of [0, 2**32) keyed per field: distinct ranks give distinct 8-hex-digit values."""
    m = np.uint64(0xFFFFFFFF)
    v = (rank.astype(np.uint64) + np.uint64(key & 0xFFFFFFFF)) & m
    v = (v * np.uint64(0x9E3779B1)) & m
    v ^= v >> np.uint64(15)
    v = (v * np.uint64(0x85EBCA77)) & m
    v ^= v >> np.uint64(13)
    return v ^ np.uint64((key >> 32) & 0xFFFFFFFF)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(28, -1, -4, dtype=np.uint64)


def _hex_array(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    """uint32 values -> Arrow strings of 8 lowercase hex digits, null where missing (zero-copy build)."""
    n = len(values)
    chars = _HEX_DIGITS[((values[:, None] >> _SHIFTS[None, :]) & np.uint64(15)).astype(np.intp)]
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    validity = np.packbits(~missing, bitorder="little")
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()),
                                       pa.py_buffer(validity.tobytes()), null_count=int(missing.sum()))


class CriteoLikeWorld:
    """The planted model: how rows are drawn and their true click probability.

    ``logit = b + sum_f a_f e_f(id_f) + sum_{(f,g)} c <U_f(id_f), V_g(id_g)> + sum_j w_j z(I_j)``

    where ``e``, ``U``, ``V`` are standard normals hashed from (field, id), the ``a_f`` are per-field
    weights, ``z`` standardizes ``log(1 + max(I, 0))`` and one count enters through a bump (nonlinear).
    Component scales follow the config; ``b`` is calibrated so the mean probability is ``positive_rate``.
    Everything is a pure function of the config, so any block of rows can be regenerated alone.

    Example:
        >>> w = CriteoLikeWorld(CriteoLikeConfig(scale=0.001, seed=1))
        >>> rows = w.sample_block(0, 1000)
        >>> rows["true_prob"].shape
        (1000,)
    """

    def __init__(self, config: CriteoLikeConfig) -> None:
        self.config = config
        self.cardinalities = scaled_cardinalities(config.scale)
        rng = np.random.default_rng(seed_from_name("criteo-like/world", config.seed))
        lo, hi = config.zipf_range
        self.zipf_exponents = rng.uniform(lo, hi, size=len(CAT_COLUMNS))
        self.field_weights = rng.uniform(0.1, 1.0, size=len(CAT_COLUMNS))
        self.int_weights = rng.choice([-1.0, 1.0], size=len(_INT_EFFECT_COLUMNS)) * rng.uniform(0.5, 1.0, len(_INT_EFFECT_COLUMNS))
        self.hex_keys = [seed_from_name("criteo-like/hex", config.seed, c) for c in CAT_COLUMNS]
        self.effect_seeds = [seed_from_name("criteo-like/effect", config.seed, c) for c in CAT_COLUMNS]
        self._scales: Tuple[float, ...] = (1.0, 1.0, 1.0)
        self.bias = 0.0
        self._int_stats = np.zeros((len(_INT_EFFECT_COLUMNS), 2))
        self._int_stats[:, 1] = 1.0
        self._calibrate()

    # -- rows ---------------------------------------------------------------------------------------
    def _ranks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        ranks = np.empty((len(CAT_COLUMNS), n), dtype=np.int64)
        block_missing = rng.random(n) < _CAT_BLOCK_MISSING[1]
        for j, (c, card, s) in enumerate(zip(CAT_COLUMNS, self.cardinalities, self.zipf_exponents)):
            u = rng.random(n)
            # Inverse CDF of a bounded continuous power law on [1, card + 1): Zipf-like ranks, no table.
            t = 1.0 - s
            x = (1.0 - u * (1.0 - (card + 1.0) ** t)) ** (1.0 / t)
            r = np.minimum(np.floor(x).astype(np.int64) - 1, card - 1)
            miss = rng.random(n) < _CAT_MISSING.get(c, 0.0)
            if c in _CAT_BLOCK_MISSING[0]:
                miss |= block_missing
            r[miss] = -1
            ranks[j] = r
        return ranks

    def _ints(self, rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
        ints = np.empty((n, len(INT_COLUMNS)), dtype=np.int64)
        missing = np.empty((n, len(INT_COLUMNS)), dtype=bool)
        for j, ((mu, sigma), p_miss) in enumerate(zip(_INT_LOGNORMAL, _INT_MISSING)):
            ints[:, j] = np.floor(rng.lognormal(mu, sigma, n)).astype(np.int64)
            missing[:, j] = rng.random(n) < p_miss
        # I2 of the real data holds small negative values (-1 most often, down to -3).
        neg = rng.random(n) < 0.12
        ints[neg, 1] = -rng.choice([1, 1, 1, 2, 3], size=int(neg.sum()))
        ints[missing] = 0
        return ints, missing

    def _components(self, ranks: np.ndarray, ints: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Unscaled logit components ``(3, n)``: id effects, interactions, count effects."""
        n = ranks.shape[1]
        ids = np.zeros(n)
        for j in range(len(CAT_COLUMNS)):
            ids += self.field_weights[j] * _gauss(ranks[j], self.effect_seeds[j])
        inter = np.zeros(n)
        r = self.config.interaction_rank
        for f, g in _INTERACTION_PAIRS:
            jf, jg = CAT_COLUMNS.index(f), CAT_COLUMNS.index(g)
            for k in range(r):
                u = _gauss(ranks[jf], seed_from_name("criteo-like/U", self.config.seed, f, g, k))
                v = _gauss(ranks[jg], seed_from_name("criteo-like/V", self.config.seed, f, g, k))
                inter += u * v
        cnt = np.zeros(n)
        for i, c in enumerate(_INT_EFFECT_COLUMNS):
            j = INT_COLUMNS.index(c)
            z = (np.log1p(np.maximum(ints[:, j], 0)) - self._int_stats[i, 0]) / self._int_stats[i, 1]
            z = np.where(missing[:, j], 0.0, z)
            if i == len(_INT_EFFECT_COLUMNS) - 1:  # a bump: only mid-range counts matter
                z = 2.0 * np.exp(-z * z) - 1.0
            cnt += self.int_weights[i] * z
        return np.stack([ids, inter, cnt])

    def _logit(self, comps: np.ndarray) -> np.ndarray:
        return self.bias + np.tensordot(np.asarray(self._scales), comps, axes=1)

    def _calibrate(self, rows: int = 1 << 17) -> None:
        rng = np.random.default_rng(seed_from_name("criteo-like/calibration", self.config.seed))
        ranks = self._ranks(rng, rows)
        ints, missing = self._ints(rng, rows)
        for i, c in enumerate(_INT_EFFECT_COLUMNS):
            j = INT_COLUMNS.index(c)
            x = np.log1p(np.maximum(ints[~missing[:, j], j], 0))
            self._int_stats[i] = (x.mean(), max(x.std(), 1e-6))
        comps = self._components(ranks, ints, missing)
        cfg = self.config
        self._scales = tuple(t / max(float(c.std()), 1e-12)
                             for t, c in zip((cfg.id_effect_sd, cfg.interaction_sd, cfg.int_effect_sd), comps))
        base = self._logit(comps) - self.bias
        lo, hi = -20.0, 20.0
        for _ in range(60):  # bisection: mean sigmoid is monotone in the bias
            mid = 0.5 * (lo + hi)
            if (1.0 / (1.0 + np.exp(-(base + mid)))).mean() < cfg.positive_rate:
                lo = mid
            else:
                hi = mid
        self.bias = 0.5 * (lo + hi)

    def sample_block(self, block: int, n: int) -> Dict[str, np.ndarray]:
        """Rows of generation block ``block`` (its own seeded stream), ``n`` of them.

        Returns:
            ``labels`` int8 ``(n,)``, ``ints`` int64 ``(n, 13)`` (0 where missing), ``int_missing`` bool
            ``(n, 13)``, ``ranks`` int64 ``(26, n)`` (-1 = missing), ``true_prob`` float64 ``(n,)``.
        """
        rng = np.random.default_rng(seed_from_name("criteo-like/rows", self.config.seed, block))
        ranks = self._ranks(rng, n)
        ints, missing = self._ints(rng, n)
        p = 1.0 / (1.0 + np.exp(-self._logit(self._components(ranks, ints, missing))))
        labels = (rng.random(n) < p).astype(np.int8)
        return {"labels": labels, "ints": ints, "int_missing": missing, "ranks": ranks, "true_prob": p}

    def to_table(self, rows: Dict[str, np.ndarray]) -> pa.Table:
        """Rows as the TSV's Arrow table: label, I1..I13 (null = empty), C1..C26 hex strings (null = empty)."""
        cols: Dict[str, pa.Array] = {LABEL_COLUMN: pa.array(rows["labels"], pa.int8())}
        for j, c in enumerate(INT_COLUMNS):
            cols[c] = pa.array(rows["ints"][:, j], pa.int64(), mask=rows["int_missing"][:, j])
        for j, c in enumerate(CAT_COLUMNS):
            r = rows["ranks"][j]
            miss = r < 0
            cols[c] = _hex_array(_mix32(np.maximum(r, 0), self.hex_keys[j]), miss)
        return pa.table(cols)

    def describe(self) -> Dict[str, Any]:
        return {
            "config": asdict(self.config),
            "cardinalities": dict(zip(CAT_COLUMNS, self.cardinalities)),
            "zipf_exponents": dict(zip(CAT_COLUMNS, np.round(self.zipf_exponents, 4).tolist())),
            "field_weights": dict(zip(CAT_COLUMNS, np.round(self.field_weights, 4).tolist())),
            "interaction_pairs": [list(p) for p in _INTERACTION_PAIRS],
            "int_effect_columns": list(_INT_EFFECT_COLUMNS),
            "component_scales": list(self._scales),
            "bias": self.bias,
        }


@dataclass
class GeneratedCriteoLike:
    """Paths and summary of a generated set."""

    tsv: Path
    true_prob: Path
    labels: Path
    info: Path
    rows: int
    positive_rate: float
    seconds: float


def _check_disk_space(out: Path, rows: int, bytes_per_row: int, what: str) -> None:
    """Refuse ``rows`` whose output cannot fit the free space of ``out``'s filesystem (a lower bound: the
    ``bytes_per_row`` of its fixed-width files), before anything is written."""
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is None:
        return
    free = shutil.disk_usage(existing).free
    if rows * bytes_per_row > free:
        raise DataError(f"rows={rows:,}: {what} writes at least {bytes_per_row} bytes a row ({rows * bytes_per_row:,} "
                        f"bytes), more than the {free:,} bytes free where {out} goes; lower --rows or free space")


def generate_criteo_like(out_dir: PathLike, rows: int, *, scale: float = 0.01, seed: int = 0,
                         gzip: bool = False, config: Optional[CriteoLikeConfig] = None,
                         progress: Optional[Callable[[int], None]] = None,
                         overwrite: bool = False) -> GeneratedCriteoLike:
    """Write ``rows`` Criteo-like rows to ``out_dir/criteo_like.tsv[.gz]`` with their ground truth.

    Files: the TSV (Criteo Kaggle schema: label, I1..I13, C1..C26 as 8 hex digits; empty = missing,
    negative I2 values and trailing empty categoricals included), ``criteo_like.true_prob.npy`` (float32
    ``(rows,)``: the true click probability of each line, which preprocessing carries into a ``true_prob``
    column that batch readers return only on request), ``criteo_like.labels.npy`` (int8) and
    ``generator.json`` (the world: cardinalities, exponents, weights, bias). The same seed gives the same
    bytes; rows come in independently seeded blocks of 65,536, so a larger set starts with the full blocks
    of a smaller one.

    The directory appears whole or not at all (written into a temporary sibling, then renamed); a
    non-empty ``out_dir`` is refused unless ``overwrite``, which replaces it whole (only a directory that
    holds nothing but these files).

    Args:
        out_dir: directory (created; absent or empty unless ``overwrite``).
        rows: number of rows.
        scale: cardinality scale relative to Criteo Kaggle (ignored if ``config`` is given).
        seed: seed (ignored if ``config`` is given).
        gzip: write ``criteo_like.tsv.gz``.
        progress: optional callback with the rows written so far.
        overwrite: replace an existing generated directory whole.

    Example (``tmp``: any writable directory):
        >>> g = generate_criteo_like(tmp / "cl", rows=10_000, scale=0.001, seed=3)
        >>> g.rows, g.tsv.name, sorted(p.name for p in (tmp / "cl").iterdir())
        (10000, 'criteo_like.tsv', ['criteo_like.labels.npy', 'criteo_like.true_prob.npy', 'criteo_like.tsv', 'generator.json'])
        >>> len(g.tsv.read_text().splitlines()[0].split("\\t"))  # label, I1..I13, C1..C26
        40
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    _check_disk_space(Path(out_dir), rows, bytes_per_row=5, what="generate criteo-like")
    cfg = config or CriteoLikeConfig(scale=scale, seed=seed)
    with atomic_output_dir(out_dir, overwrite=overwrite, owned=GENERATED_FILES, command="generate criteo-like") as tmp:
        t0 = time.perf_counter()
        world = CriteoLikeWorld(cfg)
        tsv = tmp / ("criteo_like.tsv.gz" if gzip else "criteo_like.tsv")
        truth_path, labels_path = true_prob_path(tsv), tmp / "criteo_like.labels.npy"
        truth = np.lib.format.open_memmap(truth_path, mode="w+", dtype=np.float32, shape=(rows,))
        labels = np.lib.format.open_memmap(labels_path, mode="w+", dtype=np.int8, shape=(rows,))
        options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
        sink = pa.output_stream(str(tsv), compression="gzip" if gzip else None)
        writer: Optional[pacsv.CSVWriter] = None
        done, positives = 0, 0
        try:
            for block in range(math.ceil(rows / _BLOCK_ROWS)):
                n = min(_BLOCK_ROWS, rows - done)
                data = world.sample_block(block, n)
                table = world.to_table(data)
                if writer is None:
                    writer = pacsv.CSVWriter(sink, table.schema, write_options=options)
                writer.write_table(table)
                truth[done:done + n] = data["true_prob"]
                labels[done:done + n] = data["labels"]
                positives += int(data["labels"].sum())
                done += n
                if progress is not None:
                    progress(done)
        finally:
            if writer is not None:
                writer.close()
            sink.close()
        truth.flush()
        labels.flush()
        del truth, labels
        seconds = time.perf_counter() - t0
        desc = world.describe()
        desc.update({"dataset": "criteo-like", "rows": rows, "tsv": tsv.name, "true_prob": truth_path.name,
                     "labels": labels_path.name, "positive_rate": positives / rows, "seconds": round(seconds, 3)})
        (tmp / GENERATOR_FILE).write_text(json.dumps(desc, indent=2, sort_keys=True) + "\n")  # last
    logger.info("generated %d Criteo-like rows in %.1fs (%.0f rows/s), positives %.3f", rows, seconds,
                rows / seconds, positives / rows)
    out = Path(out_dir)
    return GeneratedCriteoLike(out / tsv.name, out / truth_path.name, out / labels_path.name, out / GENERATOR_FILE,
                               rows, positives / rows, seconds)
