"""Criteo TSV -> frequency-categorified, time-split Parquet shards + ``metadata.json``: three passes
(validate and count, count the rows after the training split, write) over the work units of
:mod:`recsys_emb.data.criteo.units`, in a pool of worker processes or as Ray tasks
(:mod:`recsys_emb.data.engine`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from recsys_emb.data.criteo.reader import CHUNK_BYTES, MAX_LINE_BYTES, ReadReport, expand_inputs, true_prob_path
from recsys_emb.data.criteo.schema import CAT_COLUMNS, criteo_schema
from recsys_emb.data.criteo.blocks import is_compressed
from recsys_emb.data.criteo.units import (
    CACHE_BYTES_PER_INPUT_BYTE,
    UNIT_BYTES,
    Unit,
    UnitOutput,
    UnitScan,
    ValueCounts,
    chunk_table,
    count_unit,
    merge_scans,
    plan_units,
    save_vocab_arrays,
    scan_unit,
    write_unit,
)
from recsys_emb.data.engine import MapUnits, map_ordered, unit_engine
from recsys_emb.data.outdir import atomic_output_dir
from recsys_emb.data.parquet import DATASET_ENTRIES, SPLITS, time_split_sizes, write_metadata
from recsys_emb.data.vocabulary import (COUNTS_FILE, VOCAB_FILE, MinCount, Vocabulary, load_vocabulary,
                                        resolve_min_count, save_vocabularies)
from recsys_emb.errors import DataError, RecsysEmbError

__all__ = ["preprocess", "load_counts", "default_workers", "MapUnits", "chunk_table", "criteo_metadata"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
PROCESSED_ENTRIES = DATASET_ENTRIES + (COUNTS_FILE, VOCAB_FILE)
_map_ordered = map_ordered  # also importable from here


def preprocess(
    inputs: Union[PathLike, Sequence[PathLike]],
    out_dir: PathLike,
    *,
    min_count: MinCount = "auto",
    test_fraction: float = 0.1,
    valid_fraction: Optional[float] = None,
    on_bad_line: str = "error",
    chunk_bytes: int = CHUNK_BYTES,
    rows_per_shard: int = 1 << 21,
    row_group_rows: int = 1 << 17,
    vocab_from: str = "train",
    missing_flags: bool = False,
    max_reported_bad_lines: int = 1000,
    progress: Optional[Callable[[str, int], None]] = None,
    overwrite: bool = False,
    vocab: Optional[PathLike] = None,
    workers: Optional[int] = None,
    unit_bytes: int = UNIT_BYTES,
    map_units: Optional[MapUnits] = None,
    parse_cache: Optional[bool] = None,
    engine: str = "process",
    address: Optional[str] = None,
) -> Dict[str, Any]:
    """Criteo TSV -> frequency-categorified, time-split Parquet shards + ``metadata.json``.

    The inputs are cut into work units (:func:`~recsys_emb.data.criteo.units.plan_units`: a compressed
    file whole, a plain file in pieces of ``unit_bytes`` at line starts) that ``workers`` processes read
    independently; their results merge exactly, so the output (vocabulary, counts, Parquet files, byte for
    byte) depends on the inputs and settings only, never on ``workers``. Memory per worker: a few times
    ``chunk_bytes`` plus one unit's distinct values; in this process: the distinct values per field
    (exact counts; never the number of rows).

    1. every unit: validate and count rows (malformed lines per ``on_bad_line``, always counted with line
       numbers), and count each field's values over all rows;
    2. ``vocab_from="train"`` (default; valid/test ids unseen in training become OOV, so no future leaks
       into the vocabulary): the units holding rows after the training split count those rows, and their
       counts are subtracted (only the validation and test rows are read again); ``"all"`` skips this;
    3. every unit: write its rows to ``out_dir/{train,valid,test}/part-*.parquet`` (shards of at most
       ``rows_per_shard`` rows, never across units; numbered in time order): ``label`` int8, ``I1..I13``
       float32 ``log(1 + max(x, 0))`` (missing = 0; ``M1..M13`` int8 flags if ``missing_flags``, dense
       inputs of the model after ``I1..I13``: they tell a missing count from a count of 0),
       ``C1..C26`` int64 ids (0 = most frequent; the empty value is its own category; values seen <
       ``min_count`` times in the counted rows map to the field's OOV id = vocab size - 1; ``auto``, the
       default, is :func:`~recsys_emb.data.vocabulary.auto_min_count` of the training rows: 2 below
       10,000, else 1; ``metadata.json`` records the number used), and ``true_prob`` if a
       ``X.true_prob.npy`` side file from the generator lies beside the input ``X.tsv[.gz]``.

    Rows keep file order; the last ``test_fraction`` form the test split and the ``valid_fraction``
    (default: ``test_fraction``) before them the validation split.

    The output appears whole or not at all: everything is written into a temporary sibling of ``out_dir``
    that is renamed into place at the end (a failed or killed run leaves ``out_dir`` as it was). A
    non-empty ``out_dir`` is refused unless ``overwrite``, which replaces it whole.

    Args:
        inputs: TSV paths, glob patterns (matches sorted, numbers by value: ``day_2`` before ``day_10``)
            or a directory of Criteo 1TB days (``day_0`` .. ``day_23``, plain or .gz), plain or .gz,
            read in the order given.
        out_dir: output directory (created; must be absent or empty unless ``overwrite``).
        progress: optional callback ``(phase, rows_done)`` after every unit (the CLI draws a bar).
        overwrite: replace an existing output directory whole (only one holding nothing but what
            preprocess writes).
        vocab: map with an existing vocabulary instead of counting one (``min_count`` and ``vocab_from``
            are then unused, and pass 2 is skipped): a model directory (``recsys-emb export``,
            ``<run>/model``) or a processed dataset directory. A new day then gets the ids the model was
            trained with; values the vocabulary lacks map to the OOV id, counted per field in ``oov_rows``.
        workers: processes that read the units (default :func:`default_workers`: every core this
            process may use; 1 reads them here, in order); with ``engine="ray"``, the CPUs of the local
            cluster started when there is no ``address`` and no Ray connection yet.
        unit_bytes: bytes of a plain file per work unit (it sets the shard layout, not ``workers``).
        map_units: runs the passes' per-unit work on an engine of your own: ``map_units(fn, items)``
            returns ``fn(item)`` for every item, in order (``fn`` is picklable: a ``functools.partial`` of
            a module-level function). E.g. ``concurrent.futures.ProcessPoolExecutor(8).map``, or
            :func:`~recsys_emb.data.engine.ray_map_units` after your own ``ray.init``. ``workers``,
            ``engine`` and ``address`` are then unused.
        engine: ``"process"`` (a pool of ``workers`` processes) or ``"ray"`` (Ray tasks, each unit's
            task re-run if its worker dies: :func:`~recsys_emb.data.engine.unit_engine`; needs
            ``pip install 'recsys_emb[ray]'``); the output is the same byte for byte.
        address: with ``engine="ray"``, an existing cluster's head (``host:port``, ``auto``), where every
            machine sees the inputs and ``out_dir``'s parent at the same paths (datasets/criteo.md).
        parse_cache: keep pass 1's parsed rows on disk (inside the output's temporary directory, about
            0.67 bytes per byte of Criteo text; each unit's part deleted once written) so that passes 2 and 3
            read them instead of parsing the text again (about 1.7x faster in all). None (default): on
            when the output's file system has room for twice that, else off (logged). The output is
            the same either way.
    Returns:
        The metadata dict also written to ``out_dir/metadata.json``: ``rows`` per split, ``vocab_sizes``,
        ``oov_ids``, ``oov_rows`` (rows per field whose value mapped to the OOV id), ``bad_lines`` report, ``schema``, counts file names.

    Example (``tmp``: any writable directory):
        >>> from recsys_emb.data.synthetic import generate_criteo_like
        >>> g = generate_criteo_like(tmp / "raw", rows=5000, scale=0.001, seed=0)
        >>> meta = preprocess(g.tsv, tmp / "processed", min_count=2)
        >>> meta["rows"], meta["vocab_sizes"]["C9"], meta["bad_lines"]["bad_lines"]
        ({'total': 5000, 'train': 4000, 'valid': 500, 'test': 500}, 4, 0)

        On the real Kaggle file (not in the repository, so not run here; C9 has 3 values, plus OOV):

        >>> meta = preprocess("train.txt.gz", "data/criteo", min_count=4, on_bad_line="skip")  # doctest: +SKIP
        >>> meta["vocab_sizes"]["C9"]  # doctest: +SKIP
        4
    """
    resolve_min_count(min_count, 0)  # refuses a bad setting before any work
    if vocab_from not in ("train", "all"):
        raise ValueError(f"vocab_from must be 'train' or 'all', got {vocab_from!r}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    paths = expand_inputs(inputs)
    given = _given_vocabulary(vocab) if vocab is not None else None
    with atomic_output_dir(out_dir, overwrite=overwrite, owned=PROCESSED_ENTRIES, command="preprocess",
                           inputs=[*paths, *([vocab] if vocab is not None else [])]) as tmp, \
            _engine(map_units, engine, workers, address) as mapper:  # closed first: no task outlives tmp
        meta = _preprocess_into(paths, tmp, min_count=min_count, test_fraction=test_fraction,
                                valid_fraction=valid_fraction, on_bad_line=on_bad_line, chunk_bytes=chunk_bytes,
                                rows_per_shard=rows_per_shard, row_group_rows=row_group_rows, vocab_from=vocab_from,
                                missing_flags=missing_flags, max_reported_bad_lines=max_reported_bad_lines,
                                progress=progress, unit_bytes=unit_bytes, given=given,
                                vocab_source=None if vocab is None else str(Path(vocab).resolve()),
                                mapper=mapper, parse_cache=parse_cache)
    logger.info("preprocessed %d rows into %s in %.1fs", meta["rows"]["total"], out_dir, meta["seconds"])
    return meta


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


@contextmanager
def _engine(map_units: Optional[MapUnits], engine: str, workers: int, address: Optional[str]) -> Iterator[MapUnits]:
    """``map_units`` when given, else the engine's (:func:`~recsys_emb.data.engine.unit_engine`)."""
    if map_units is not None:
        yield map_units
        return
    with unit_engine(engine, workers, address) as mapper:
        yield mapper


def _scan_all(units: List[Unit], mapper: MapUnits, count_values: bool, on_bad_line: str, chunk_bytes: int,
              max_line_bytes: int, max_examples: int, tick: Callable[[str, int], None],
              cache_dir: Optional[str] = None) -> Tuple[List[UnitScan], ValueCounts]:
    """Pass 1 over every unit; value counts merged as they arrive. A unit that raises is read again here
    with its true first line, so the error names the same line a one-process run names."""
    scan = partial(scan_unit, count_values=count_values, on_bad_line=on_bad_line, chunk_bytes=chunk_bytes,
                   max_line_bytes=max_line_bytes, max_examples=max_examples, cache_dir=cache_dir)
    scans: List[UnitScan] = []
    total = ValueCounts()
    results = iter(mapper(scan, units))
    for unit in units:
        try:
            s = next(results)
        except RecsysEmbError:
            _, first_lines, _ = merge_scans(scans + [UnitScan(unit, 1, 0, 0, ReadReport())], max_examples)
            scan(unit, first_line=first_lines[-1], cache_dir=None)
            raise
        if s.counts is not None:
            total.add(s.counts)
            s.counts = None
        scans.append(s)
        tick("validate", sum(x.rows for x in scans))
    return scans, total.compact()


def _preprocess_into(paths: List[Path], out: Path, *, min_count: MinCount, test_fraction: float,
                     valid_fraction: Optional[float], on_bad_line: str, chunk_bytes: int, rows_per_shard: int,
                     row_group_rows: int, vocab_from: str, missing_flags: bool, max_reported_bad_lines: int,
                     progress: Optional[Callable[[str, int], None]], mapper: MapUnits, unit_bytes: int,
                     given: Optional[Dict[str, Vocabulary]] = None, vocab_source: Optional[str] = None,
                     parse_cache: Optional[bool] = None) -> Dict[str, Any]:
    """The three passes of :func:`preprocess` over the units of the inputs, writing into ``out``."""
    t0 = time.perf_counter()
    tick = progress or (lambda phase, rows: None)
    units = plan_units(paths, unit_bytes=unit_bytes, chunk_bytes=chunk_bytes)
    logger.info("%d input file(s) in %d unit(s)", len(paths), len(units))
    cache_dir = str(out / ".parse-cache") if _use_parse_cache(parse_cache, paths, out) else None

    # Pass 1: validation, row and line counts, and the value counts of all rows (none with a given vocabulary).
    scans, counts = _scan_all(units, mapper, given is None, on_bad_line, chunk_bytes, MAX_LINE_BYTES,
                              max_reported_bad_lines, tick, cache_dir)
    report, first_lines, first_rows = merge_scans(scans, max_reported_bad_lines)
    n_rows = report.rows
    if report.bad_lines:
        logger.warning("skipped %d malformed lines (%s); first: %s", report.bad_lines, report.by_reason,
                       ", ".join(f"{b.path}:{b.line}" for b in report.examples[:5]))
    for t in report.truncated:
        logger.warning("%s: %s: the rest of the file after line %d is lost", t["path"], t["error"], t["last_good_line"])
    if n_rows == 0:
        raise DataError(f"no valid rows in {[str(p) for p in paths]} ({report.bad_lines} malformed lines: "
                        f"{report.by_reason}); is it a Criteo TSV (label, 13 counts, 26 hex fields, tab-separated)?")
    n_train, n_valid, n_test = time_split_sizes(n_rows, test_fraction, valid_fraction)
    min_count_rule = min_count
    min_count = resolve_min_count(min_count, n_train)
    logger.info("pass 1: %d rows (%d bad lines) in %.1fs; split %d/%d/%d", n_rows, report.bad_lines,
                time.perf_counter() - t0, n_train, n_valid, n_test)

    # Pass 2: training counts = all counts - the counts of the rows after the training split, so only the
    # validation and test rows are read again.
    if given is None and vocab_from == "train" and n_train < n_rows:
        tail = [(u, max(n_train - r0, 0), fl, _shifted(s.resume_at(max(n_train - r0, 0)), fl - s.first_line), s.cache)
                for u, r0, fl, s in zip(units, first_rows, first_lines, scans) if r0 + s.rows > n_train]
        count = partial(_count_tail, chunk_bytes=chunk_bytes)
        later = ValueCounts()
        done = 0
        for (u, skip, _, _, _), part in zip(tail, mapper(count, tail)):
            later.add(part)
            done += scans[u.index].rows - skip
            tick("count", done)
        counts = counts.subtract(later)
    if given is None:
        vocabs = [Vocabulary.from_counts(counts.keys[j], counts.counts[j], min_count)
                  for j in range(len(CAT_COLUMNS))]
    else:
        vocabs = [given[c] for c in CAT_COLUMNS]
    del counts

    # Pass 3: map and write, each unit into its own shards, renamed in order at the end.
    side = [true_prob_path(p) for p in paths]
    with_truth = all(p.exists() for p in side)
    if any(p.exists() for p in side) and not with_truth:
        logger.warning("true_prob side files found for only some inputs; ignoring them")
    truth_of = {str(p): str(t) for p, t in zip(paths, side)} if with_truth else {}
    scratch = out / ".vocab-arrays"
    save_vocab_arrays(scratch, vocabs)
    write = partial(_write_one, bounds=(n_train, n_train + n_valid, n_rows), vocab_dir=str(scratch),
                    out_dir=str(out), missing_flags=missing_flags, rows_per_shard=rows_per_shard,
                    row_group_rows=row_group_rows, chunk_bytes=chunk_bytes)
    jobs = [(u, fl, r0, truth_of.get(u.path), s.cache) for u, fl, r0, s in zip(units, first_lines, first_rows, scans)]
    files: Dict[str, List[Tuple[str, int]]] = {s: [] for s in SPLITS}
    written = 0
    oov_rows = [0] * len(CAT_COLUMNS)
    for job, part in zip(jobs, mapper(write, jobs)):
        for s, shards in part.shards.items():
            files[s].extend(shards)
        oov_rows = [a + b for a, b in zip(oov_rows, part.oov_rows)]
        written += scans[job[0].index].rows
        tick("write", written)
    shutil.rmtree(scratch)
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)
    files = {s: _rename_in_order(out, s, shards) for s, shards in files.items()}

    save_vocabularies(out, dict(zip(CAT_COLUMNS, vocabs)))
    meta = criteo_metadata(
        inputs=[str(p) for p in paths], split_rows=(n_train, n_valid, n_test), files=files, min_count=min_count,
        min_count_rule=min_count_rule, vocab_from=vocab_from, test_fraction=test_fraction, valid_fraction=valid_fraction,
        vocabs=dict(zip(CAT_COLUMNS, vocabs)), oov_rows=oov_rows, vocab_source=vocab_source,
        missing_flags=missing_flags, with_truth=with_truth, bad_lines=report.to_dict(),
        seconds=time.perf_counter() - t0)
    write_metadata(out, meta)  # last: a directory without it is not a dataset
    return meta


def criteo_metadata(*, inputs: List[str], split_rows: Tuple[int, int, int], files: Dict[str, List[Tuple[str, int]]],
                    min_count: int, min_count_rule: MinCount, vocab_from: str, test_fraction: float, valid_fraction: Optional[float],
                    vocabs: Dict[str, Vocabulary], oov_rows: Sequence[int], vocab_source: Optional[str],
                    missing_flags: bool, with_truth: bool, bad_lines: Dict[str, Any], seconds: float) -> Dict[str, Any]:
    """The ``metadata.json`` of processed Criteo data, the same keys whichever reader wrote it (this one,
    or the schema reader under ``--schema criteo``).

    Args:
        inputs: the input files as given; split_rows: ``(train, valid, test)`` rows; files: each split's
            ``(shard name, rows)``; vocabs: the vocabulary of each of C1..C26; oov_rows: per field, the
            values mapped to its OOV id; min_count: the number used, min_count_rule: the setting it came from
            (``auto`` or that number); bad_lines: the read report as a dict; seconds: the run's time.
    """
    n_train, n_valid, n_test = split_rows
    vocab_sizes = {c: v.size for c, v in vocabs.items()}
    schema = criteo_schema(vocab_sizes, with_true_prob=with_truth, missing_flags=missing_flags)
    return {
        "dataset": "criteo",
        "format_version": 1,
        "inputs": list(inputs),
        "rows": {"total": n_train + n_valid + n_test, "train": n_train, "valid": n_valid, "test": n_test},
        "files": {s: [{"name": n, "rows": r} for n, r in files[s]] for s in SPLITS},
        "min_count": min_count,
        "min_count_rule": str(min_count_rule),
        "vocab_from": vocab_from,
        "test_fraction": test_fraction,
        "valid_fraction": test_fraction if valid_fraction is None else valid_fraction,
        "vocab_sizes": vocab_sizes,
        "oov_ids": {c: v.oov_id for c, v in vocabs.items()},
        "oov_rows_train": {c: int(v.counts[-1]) for c, v in vocabs.items()},
        "oov_rows": dict(zip(vocabs, (int(n) for n in oov_rows))),
        "vocab_source": vocab_source,
        "counts_file": "counts.npz",
        "vocab_file": "vocab.npz",
        "missing_value": "empty categorical = raw value -1, ranked like any other value",
        "dense_transform": "log(1 + max(x, 0)); missing = 0",
        "missing_flags": missing_flags,
        "bad_lines": bad_lines,
        "schema": schema.to_dict(),
        "seconds": round(seconds, 3),
    }


def _shifted(resume: Tuple[int, int], by: int) -> Tuple[int, int]:
    return resume[0] + by, resume[1]


def _count_tail(job: Tuple[Unit, int, int, Tuple[int, int], Optional[str]], chunk_bytes: int) -> ValueCounts:
    unit, skip, first_line, resume, cache = job
    return count_unit(unit, skip, first_line=first_line, resume=resume, chunk_bytes=chunk_bytes, cache=cache)


def _write_one(job: Tuple[Unit, int, int, Optional[str], Optional[str]], **kwargs: Any) -> UnitOutput:
    unit, first_line, first_row, truth, cache = job
    return write_unit(unit, first_line=first_line, first_row=first_row, true_prob=truth, cache=cache, **kwargs)


_GZIP_RATIO = 4.0
"""Bytes of text per byte of a compressed input, for planning the parse cache: on the high side of what
gzip achieves on tab-separated text, so that the plan errs towards leaving the cache off."""


def _use_parse_cache(parse_cache: Optional[bool], paths: Sequence[Path], out: Path) -> bool:
    """``parse_cache`` when given; else whether ``out``'s file system has room for twice the cache."""
    if parse_cache is not None:
        return parse_cache
    text = sum(p.stat().st_size * (_GZIP_RATIO if is_compressed(p) else 1.0) for p in paths)
    need = CACHE_BYTES_PER_INPUT_BYTE * text
    free = shutil.disk_usage(out).free
    if free < 2 * need:
        logger.info("parse cache off: %.1f GB free in %s, the cache needs about %.1f GB (twice that kept free); "
                    "passes 2 and 3 parse the text again", free / 1e9, out, need / 1e9)
        return False
    return True


def _rename_in_order(out: Path, split: str, shards: List[Tuple[str, int]]) -> List[Tuple[str, int]]:
    """Move the units' shards of a split to ``part-00000.parquet``, ``part-00001...`` in unit order."""
    (out / split).mkdir(parents=True, exist_ok=True)
    named = []
    for k, (rel, rows) in enumerate(shards):
        name = f"part-{k:05d}.parquet"
        os.replace(out / rel, out / split / name)
        named.append((name, rows))
    for d in (out / split).glob(".unit-*"):
        d.rmdir()
    return named


def _given_vocabulary(directory: PathLike) -> Dict[str, Vocabulary]:
    """The vocabulary of a model directory or processed dataset, checked to cover every Criteo field."""
    vocabs = load_vocabulary(directory)
    missing = [c for c in CAT_COLUMNS if c not in vocabs]
    if missing:
        raise DataError(f"{directory}: its vocabulary lacks fields {missing}; pass the model directory or the "
                        "processed Criteo dataset the model was trained on")
    return vocabs


def load_counts(directory: PathLike) -> Dict[str, np.ndarray]:
    """Per-field counts by id rank (last entry = OOV rows) of a preprocessed Criteo directory."""
    with np.load(Path(directory) / COUNTS_FILE) as z:
        return {k: z[k] for k in z.files}
