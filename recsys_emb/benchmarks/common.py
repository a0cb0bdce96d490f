"""What the benchmarks share: interleaved timing, the README blocks they write, the command lines under
their tables, process settings of the scripts, and the Criteo-shaped workload (cardinalities, skewed
batches, the specs of every variant at the preset defaults)."""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from recsys_emb.presets import VARIANTS, VariantPreset, feature_specs
from recsys_emb.specs import FeatureSpec

if TYPE_CHECKING:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

__all__ = ["REPO", "quiet", "preset_parser", "interleaved_seconds", "command_line", "publish", "write_section", "format_mb",
           "criteo_shaped_cardinalities", "field_cardinalities", "variant_specs", "skewed_ids", "skewed_batch",
           "size_groups"]

REPO = Path(__file__).resolve().parents[2]
"""The checkout this package lives in: the default home of the READMEs the benchmarks write and of
their work directories (``bench/out/``), whatever the current directory."""


def preset_parser(doc: Optional[str], default: Mapping[str, Any], quick: Mapping[str, Any], name: str,
                  quick_help: str = "CI-sized run (tiny data)") -> argparse.ArgumentParser:
    """The arguments of a benchmark with a full and a ``--quick`` preset: ``--quick``, one ``--KEY`` per key of
    ``default`` (None when not given: the preset's value applies), ``--out-dir`` (default
    ``bench/out/NAME[_quick]``), ``--data-dir``, ``--readme`` (models/dlrm/README.md) and ``--no-readme``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    for k, v in default.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=None, help=f"default {v} (quick: {quick[k]})")
    p.add_argument("--out-dir", default=None, help=f"work directory (default bench/out/{name}[_quick])")
    p.add_argument("--data-dir", default=None, help="processed data directory (default: generated in --out-dir)")
    p.add_argument("--readme", default=str(REPO / "models" / "dlrm" / "README.md"))
    p.add_argument("--no-readme", action="store_true", help="print the table only")
    return p


def quiet() -> None:
    """Benchmark scripts: warnings and TorchRec's planner chatter off, library warnings on stderr, and
    the benchmarks' progress lines (``recsys_emb.benchmarks`` at INFO) on stderr as plain text."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress = logging.getLogger("recsys_emb.benchmarks")
    progress.handlers = [handler]
    progress.setLevel(logging.INFO)
    progress.propagate = False
    warnings.filterwarnings("ignore")


def interleaved_seconds(steps_of: Sequence[Callable[[int], None]], steps: int, rounds: int, warmup: int,
                        sync: Optional[Callable[[], None]] = None) -> List[float]:
    """Median seconds of ``steps`` steps for each run, the runs interleaved round by round so that
    machine noise hits them alike. ``steps_of[r](i)`` performs step ``i`` of run ``r``; ``sync``
    (e.g. ``torch.cuda.synchronize``) is called around every timed round.

    Example:
        >>> calls = []
        >>> secs = interleaved_seconds([lambda i: calls.append(("a", i)), lambda i: calls.append(("b", i))],
        ...                            steps=2, rounds=1, warmup=1)
        >>> calls, len(secs)
        ([('a', 0), ('b', 0), ('a', 0), ('a', 1), ('b', 0), ('b', 1)], 2)
    """
    sync = sync or (lambda: None)
    for step in steps_of:
        for i in range(warmup):
            step(i)
    sync()
    times: List[List[float]] = [[] for _ in steps_of]
    for _ in range(rounds):
        for r, step in enumerate(steps_of):
            sync()
            t0 = time.perf_counter()
            for i in range(steps):
                step(i)
            sync()
            times[r].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    """The command that reproduces a run, as written under its table (``argv`` None: this process's).

    Example:
        >>> command_line("bench/din.py", ["--quick", "--set", "seed=1 2"])
        ".venv/bin/python bench/din.py --quick --set 'seed=1 2'"
    """
    return " ".join([f".venv/bin/python {script}", *map(shlex.quote, list(sys.argv[1:] if argv is None else argv))])


def publish(text: str, readme: Optional[Path], marker: str, title: str) -> str:
    """Write a result table into ``readme``'s block (unless ``readme`` is None); returns the table for the
    caller (a script or the CLI) to print."""
    if readme is not None:
        write_section(readme, marker, text, title)
    return text


def write_section(readme: Path, marker: str, body: str, title: str) -> None:
    """Write a benchmark's result block into ``readme`` between ``<!-- marker:begin -->`` and
    ``<!-- marker:end -->``, replacing the old block (the file is re-read first: several scripts
    write into one README); append ``title`` and a new block at the end when the markers are absent.

    Example:
        >>> import tempfile
        >>> doc = Path(tempfile.mkdtemp()) / "README.md"
        >>> write_section(doc, "din", "old", "## DIN")
        >>> write_section(doc, "din", "new", "## DIN")
        >>> print(doc.read_text(), end="")
        ## DIN
        <BLANKLINE>
        <!-- din:begin -->
        new
        <!-- din:end -->
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = readme.read_text() if readme.exists() else ""
    if begin in text and end in text and text.index(begin) < text.index(end):
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    else:
        text = (text.rstrip() + "\n\n" if text else "") + f"{title}\n\n{block}\n"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(text)


def format_mb(n: float) -> str:
    """Bytes as the result tables write them: MB from 100 kB up, kB below (decimal units).

    Example:
        >>> format_mb(2_500_000), format_mb(51_200)
        ('2.50 MB', '51.2 kB')
    """
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def criteo_shaped_cardinalities(cap: int) -> List[int]:
    """Criteo Kaggle's 26 real categorical cardinalities, each capped at ``cap``.

    Example:
        >>> cards = criteo_shaped_cardinalities(1000)
        >>> len(cards), max(cards), min(cards)
        (26, 1000, 3)
    """
    from recsys_emb.data.criteo import CRITEO_KAGGLE_CARDINALITIES

    return [min(c, cap) for c in CRITEO_KAGGLE_CARDINALITIES]


def field_cardinalities(cards: Sequence[int]) -> Dict[str, int]:
    """``{C1: cards[0], C2: cards[1], ...}``: the field names of the Criteo-shaped workload."""
    return {f"C{i + 1}": c for i, c in enumerate(cards)}


def variant_specs(cards: Sequence[int], dim: int, compression: float = 4) -> Dict[str, List[FeatureSpec]]:
    """Feature specs per variant at the benchmark's default settings (:mod:`recsys_emb.presets`).

    These are the preset defaults (:class:`~recsys_emb.presets.VariantPreset`). The compressed
    variants keep about ``1/compression`` of the bytes of every field with at least
    ``16 * compression`` ids (smaller fields stay full tables, as in practice); the unified variant
    multiplexes every field into one shared table with the same total rows; mixed dimension is the
    field-level form (one table per large field, its dim by DLRM's ``md_solver`` rule with alpha 0.3,
    projected to ``dim``); multi-hash uses 2 probes, QR the ``concat`` op (twice the quotient rows at
    half width). ``recsys-emb bench embeddings --preset`` measures other knobs.

    Example:
        >>> specs = variant_specs(criteo_shaped_cardinalities(10_000), dim=16)
        >>> list(specs) == list(VARIANTS), len(specs["qr"])
        (True, 26)
    """
    cardinalities = field_cardinalities(cards)
    return {v: feature_specs(cardinalities, VariantPreset(v, dim=dim, compression=compression,
                                                          min_rows=int(16 * compression)))
            for v in VARIANTS}


def skewed_ids(cards: Sequence[int], batch: int, generator: torch.Generator, skew: float = 3.0) -> List[torch.Tensor]:
    """One id per field and sample, power-law skewed towards small ids (id = floor(N * u**skew)): one
    int64 ``(batch,)`` tensor per field (plain PyTorch; every bag holds one id).

    Example:
        >>> ids = skewed_ids([10, 1000], batch=4, generator=torch.Generator().manual_seed(0))
        >>> len(ids), ids[0].shape, ids[0].dtype
        (2, torch.Size([4]), torch.int64)
    """
    cols = []
    for c in cards:
        u = torch.rand(batch, generator=generator, dtype=torch.float64)
        cols.append((u.pow(skew) * c).long().clamp_(max=c - 1))
    return cols


def skewed_batch(cards: Sequence[int], batch: int, generator: torch.Generator, skew: float = 3.0) -> "KeyedJaggedTensor":
    """:func:`skewed_ids` as a KeyedJaggedTensor with keys ``C1..C<len(cards)>``, stride ``batch`` and
    ``batch`` ids per key (needs TorchRec).

    Example:
        >>> kjt = skewed_batch([10, 1000], batch=4, generator=torch.Generator().manual_seed(0))
        >>> kjt.keys(), kjt.stride(), kjt.values().shape
        (['C1', 'C2'], 4, torch.Size([8]))
    """
    from recsys_emb.torch_stack import require_torch_stack

    require_torch_stack()
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    cols = skewed_ids(cards, batch, generator, skew)
    return KeyedJaggedTensor(
        keys=[f"C{i + 1}" for i in range(len(cards))],
        values=torch.cat(cols),
        lengths=torch.ones(batch * len(cards), dtype=torch.int32),
        stride=batch,
        length_per_key=[batch] * len(cards),
    )


def size_groups(vocab: Dict[str, int]) -> Dict[str, List[str]]:
    """Fields grouped by vocabulary size, one decade each (<100, <1k, <10k, <100k, >=100k ids): the
    groups the benchmarks' searches choose one dim (and variant) for.

    Example:
        >>> size_groups({"a": 5, "b": 99, "c": 5000, "d": 10**7})
        {'vocab_1e2': ['a', 'b'], 'vocab_1e4': ['c'], 'vocab_1e5': ['d']}
    """
    groups: Dict[str, List[str]] = {}
    for f, n in vocab.items():
        tier = min(5, max(2, int(math.log10(max(n, 1))) + 1))
        groups.setdefault(f"vocab_1e{tier}", []).append(f)
    return groups
