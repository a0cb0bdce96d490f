"""A user's table (CSV / TSV / Parquet files, or a DataFrame) -> a processed dataset in the layout every
dataset shares (``{train,valid,test}/part-*.parquet`` + ``metadata.json`` + the saved vocabulary), so that
``train``, ``export``, ``predict`` and ``baseline`` read it as they read Criteo.

Three passes over the work units of the inputs (:func:`~recsys_emb.data.criteo.units.plan_units`: a
plain text file cut at line starts, a compressed or Parquet file one unit), each a function of its
arguments, run in a process pool or as Ray tasks (:mod:`recsys_emb.data.engine`): validate and count
(values and dense statistics of the training rows), count the rows after the training split when
splitting by position, then map and write. The output depends on the inputs and ``unit_bytes``, never on
the number of workers or the engine, and appears whole or not at all.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_emb.data.criteo.inputs import expand_inputs
from recsys_emb.data.criteo.preprocess import _rename_in_order, criteo_metadata, default_workers
from recsys_emb.data.criteo.reader import ReadReport
from recsys_emb.data.criteo.units import Unit, UnitOutput, UnitScan, ValueCounts, merge_scans, plan_units
from recsys_emb.data.engine import unit_engine
from recsys_emb.data.outdir import atomic_output_dir
from recsys_emb.data.parquet import (DATASET_ENTRIES, SPLITS, ShardedParquetWriter, TableSchema, read_metadata,
                                    write_metadata)
from recsys_emb.data.tabular.reader import SPLIT_BY_POSITION, RowChunk, iter_table_chunks, ranges, read_columns
from recsys_emb.data.tabular.schema import ResolvedColumns, TableSpec, load_table_spec
from recsys_emb.data.vocabulary import (COUNTS_FILE, VOCAB_FILE, Vocabulary, load_vocabulary, resolve_min_count,
                                        save_vocabularies)
from recsys_emb.errors import ConfigError, DataError, RecsysEmbError

__all__ = ["preprocess_table", "preprocess_frame", "TableReading", "DatasetFinish", "chunk_ids_table", "DATASET_NAME", "as_spec"]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
DATASET_NAME = "table"
"""``metadata.json``'s ``dataset`` of a table processed under a schema."""
OWNED = DATASET_ENTRIES + (COUNTS_FILE, VOCAB_FILE)
_UNIT_BYTES = 256 << 20


@dataclass(frozen=True)
class DatasetFinish:
    """How a built-in reader that runs on this path ends its output: ``metadata`` maps the table metadata
    (what :func:`preprocess_table` returns) to the ``metadata.json`` the reader has always written, and
    ``save_vocabulary`` says whether ``counts.npz`` / ``vocab.npz`` are written."""

    metadata: Callable[[Dict[str, Any]], Dict[str, Any]]
    save_vocabulary: bool = True


@dataclass(frozen=True)
class TableReading:
    """What every pass needs to read a unit (picklable: handed to the pool's workers)."""

    spec: TableSpec
    cols: ResolvedColumns
    roles: Dict[str, int] = field(default_factory=dict)
    """Split of every row of a file given as ``--valid`` / ``--test`` (and its ``--input`` files: 0)."""
    shown: Dict[str, str] = field(default_factory=dict)
    """A file's name in messages, where it is not its path (a DataFrame's temporary file)."""
    chunk_bytes: int = 8 << 20
    header: bool = True

    @property
    def counted(self) -> Tuple[bool, ...]:
        """Per id field: whether its values are counted (a counted vocabulary is built from them)."""
        return tuple(self.spec.vocab_options(c).vocab == "count"
                     and not (c in self.spec.sequence and self.spec.sequence[c].counts == "candidate"
                              and self.spec.sequence[c].candidate is not None)
                     for c in self.cols.id_fields)

    def chunks(self, unit: Unit, *, first_line: int, on_bad_line: str, report: Optional[ReadReport] = None,
               skip_before_line: int = 0) -> Iterable[RowChunk]:
        return iter_table_chunks(unit.path, self.spec, self.cols, role=self.roles.get(unit.path),
                                 chunk_bytes=self.chunk_bytes, on_bad_line=on_bad_line, report=report,
                                 byte_range=unit.byte_range, first_line=first_line,
                                 skip_before_line=skip_before_line, shown=self.shown.get(unit.path))


@dataclass
class _Stats:
    """Value counts of every id field and ``(count, sum, sum of squares)`` of every dense column."""

    counts: ValueCounts
    dense: np.ndarray

    @classmethod
    def empty(cls, cols: ResolvedColumns) -> "_Stats":
        return cls(ValueCounts(len(cols.id_fields)), np.zeros((3, len(cols.dense))))

    def add(self, chunk: RowChunk, rows: np.ndarray, counted: Sequence[bool]) -> None:
        """Add the rows ``rows`` of ``chunk``; values of the id fields whose ``counted`` is False are not
        counted (their ids need no counts)."""
        if not len(rows):
            return
        k = chunk.cats.shape[0]
        for j in range(k):
            if counted[j]:
                self.counts.add_values(j, chunk.cats[j, rows])
        for b, (off, keys) in enumerate(chunk.bags):
            if counted[k + b]:
                self.counts.add_values(k + b, keys[ranges(off[:-1][rows], np.diff(off)[rows])])
        d = chunk.dense[rows]
        seen = ~np.isnan(d)
        z = np.where(seen, d, 0.0)
        self.dense += np.stack([seen.sum(0), z.sum(0), (z * z).sum(0)])

    def merge(self, other: "_Stats") -> None:
        self.counts.add(other.counts)
        self.dense += other.dense


@dataclass
class _Scan(UnitScan):
    stats: Optional[_Stats] = None
    split_rows: Tuple[int, int, int] = (0, 0, 0)


def _scan(unit: Unit, *, reading: TableReading, first_line: int = 1, on_bad_line: str = "skip",
          max_examples: int = 1000) -> _Scan:
    """Pass 1 over a unit: validate, count rows and lines, and gather the statistics of the rows known to
    be training rows (every row when splitting by position: pass 2 takes the later ones out)."""
    report = ReadReport(max_examples=max_examples)
    stats = _Stats.empty(reading.cols)
    split_rows = np.zeros(3, np.int64)
    for chunk in reading.chunks(unit, first_line=first_line, on_bad_line=on_bad_line, report=report):
        known = chunk.split != SPLIT_BY_POSITION
        split_rows += np.bincount(chunk.split[known], minlength=3)[:3]
        stats.add(chunk, np.flatnonzero((chunk.split == 0) | ~known), reading.counted)
    s = _Scan(unit, first_line, report.rows, report.lines, report)
    s.stats, s.split_rows = stats, (int(split_rows[0]), int(split_rows[1]), int(split_rows[2]))
    return s


def _tail(job: Tuple[Unit, int, int], reading: TableReading) -> _Stats:
    """Pass 2 (split by position): the statistics of a unit's rows from its row ``skip`` on."""
    unit, first_line, skip = job
    stats = _Stats.empty(reading.cols)
    seen = 0
    for chunk in reading.chunks(unit, first_line=first_line, on_bad_line="skip", report=ReadReport()):
        lo = max(skip - seen, 0)
        stats.add(chunk, np.arange(lo, len(chunk)), reading.counted)
        seen += len(chunk)
    return stats


def _dense_columns(chunk: RowChunk, spec: TableSpec, cols: ResolvedColumns, dense_stats: Dict[str, Dict[str, float]]
                   ) -> Dict[str, pa.Array]:
    """Each dense column, transformed (missing = 0), followed by its missing flag."""
    out: Dict[str, pa.Array] = {}
    missing = np.isnan(chunk.dense)
    for j, c in enumerate(cols.dense):
        x = chunk.dense[:, j]
        how = spec.dense[c]
        if how == "log1p":
            v = np.log1p(np.maximum(x, 0.0))
        elif how == "standardize":
            v = (x - dense_stats[c]["mean"]) / dense_stats[c]["std"]
        else:
            v = x
        out[c] = pa.array(np.where(missing[:, j], 0.0, v).astype(np.float32))
        if cols.dense_flags:
            out[cols.dense_flags[j]] = pa.array(missing[:, j].astype(np.float32))
    return out


def chunk_ids_table(chunk: RowChunk, spec: TableSpec, cols: ResolvedColumns, vocabs: Dict[str, Vocabulary],
                    dense_stats: Dict[str, Dict[str, float]], oov_rows: Optional[Dict[str, int]] = None,
                    true_prob: Optional[np.ndarray] = None) -> pa.Table:
    """The processed columns of a chunk, in the input's column order: the label column (int8), each dense
    column (float32, transformed, missing = 0) followed by its ``{column}_missing`` flag, each categorical
    column as int64 ids, each multi-valued / sequence column as ``list<int64>`` ids, each ``keep`` column as
    read (text as strings); then ``true_prob`` when given. Ids come from ``vocabs`` (unknown values -> the
    OOV id), or for ``vocab: hash`` columns the value's key modulo the buckets, or for ``vocab: ids``
    columns the value itself. ``oov_rows``: a dict to add each field's count of values mapped to its OOV
    id to."""
    made: Dict[str, pa.Array] = {cols.label: pa.array(chunk.labels, pa.int8())}
    made.update(_dense_columns(chunk, spec, cols, dense_stats))
    for c, arr in chunk.kept.items():
        made[c] = pc.cast(arr, pa.string()) if pa.types.is_binary(arr.type) else arr
    k = len(cols.categorical)
    for j, c in enumerate(cols.id_fields):
        keys = chunk.cats[j] if j < k else chunk.bags[j - k][1]
        o = spec.vocab_options(c)
        if o.vocab == "hash":
            assert o.buckets is not None
            ids = (keys.view(np.uint64) % np.uint64(o.buckets)).astype(np.int64)
        elif o.vocab == "ids":
            ids = keys
        else:
            ids = vocabs[c].lookup(keys)
            if oov_rows is not None:
                oov_rows[c] = oov_rows.get(c, 0) + int(np.count_nonzero(ids == vocabs[c].oov_id))
        if j < k:
            made[c] = pa.array(ids)
        else:
            off = chunk.bags[j - k][0]
            made[c] = pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), pa.array(ids, pa.int64()))
    flag_of = dict(zip(cols.dense, cols.dense_flags))
    order = [x for c in cols.file_columns if c in made for x in (c, flag_of.get(c)) if x is not None]
    cols_out = {c: made[c] for c in order}
    if true_prob is not None:
        cols_out["true_prob"] = pa.array(true_prob.astype(np.float32))
    return pa.table(cols_out)


def _write(job: Tuple[Unit, int, int, Optional[str]], *, reading: TableReading, vocab_file: str,
           dense_stats: Dict[str, Dict[str, float]], bounds: Tuple[int, int, int], out_dir: str,
           rows_per_shard: int, row_group_rows: int) -> UnitOutput:
    """Pass 3 over a unit: ids, dense transform, rows to their split's shards under
    ``out_dir/{split}/.unit-{index}/``."""
    unit, first_line, first_row, truth_file = job
    with np.load(vocab_file) as z:
        vocabs = {c: Vocabulary(z[f"{c}_keys"], z[f"{c}_ids"], z[f"{c}_counts"])
                  for c in reading.cols.id_fields if f"{c}_keys" in z.files}
    truth = np.load(truth_file, mmap_mode="r") if truth_file is not None else None
    offset = 2 if reading.header else 1
    writers: Dict[str, ShardedParquetWriter] = {}
    oov: Dict[str, int] = {}
    row = first_row
    edges = np.asarray(bounds, np.int64)
    for chunk in reading.chunks(unit, first_line=first_line, on_bad_line="skip", report=ReadReport()):
        tp = np.asarray(truth[chunk.lines - offset]) if truth is not None else None
        table = chunk_ids_table(chunk, reading.spec, reading.cols, vocabs, dense_stats, oov, tp)
        split = chunk.split.astype(np.int64)
        if (split == SPLIT_BY_POSITION).any():
            split = np.searchsorted(edges, row + np.arange(len(chunk)), side="right")
        row += len(chunk)
        for s_idx, s in enumerate(SPLITS):
            sel = np.flatnonzero(split == s_idx)
            if not len(sel):
                continue
            if s not in writers:
                sub = Path(out_dir) / s / f".unit-{unit.index:06d}"
                if sub.exists():
                    shutil.rmtree(sub)
                writers[s] = ShardedParquetWriter(sub, rows_per_shard=rows_per_shard, row_group_rows=row_group_rows)
            writers[s].write(table.take(pa.array(sel)))
    shards = {s: [(f"{s}/.unit-{unit.index:06d}/{name}", n) for name, n in w.close()] for s, w in writers.items()}
    return UnitOutput(shards, [oov.get(c, 0) for c in reading.cols.id_fields])


def as_spec(schema: Union[TableSpec, PathLike, Dict[str, Any]]) -> TableSpec:
    """A :class:`TableSpec` from a spec, a schema file or a mapping of its keys."""
    if isinstance(schema, TableSpec):
        return schema
    if isinstance(schema, dict):
        return TableSpec.from_dict(schema)
    return load_table_spec(schema)


def _side_file(path: Path) -> Path:
    """The ground-truth file of a generated table: ``X.csv[.gz]`` -> ``X.true_prob.npy``."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return path.with_name(name.rsplit(".", 1)[0] + ".true_prob.npy")


def _resolve(spec: TableSpec, paths: Sequence[Path], shown: Dict[str, str]) -> ResolvedColumns:
    first = read_columns(spec, paths[0])
    cols = spec.resolve(first, where=shown.get(str(paths[0]), str(paths[0])))
    for p in paths[1:]:
        other = read_columns(spec, p)
        if spec.format == "parquet":
            lacking = [c for c in (cols.label, *cols.dense, *cols.id_fields) if c not in other]
            if lacking:
                raise DataError(f"{shown.get(str(p), p)}: lacks the columns {lacking} that {paths[0]} has")
        elif other != first:
            raise DataError(f"{shown.get(str(p), p)}: its columns differ from {paths[0]}'s header "
                            f"({other[:6]}... against {first[:6]}...); every input needs the same columns")
    return cols


def preprocess_table(schema: Union[TableSpec, PathLike, Dict[str, Any]], inputs: Union[PathLike, Sequence[PathLike]],
                     out_dir: PathLike, *, valid: Sequence[PathLike] = (), test: Sequence[PathLike] = (),
                     on_bad_line: str = "error", chunk_bytes: int = 8 << 20, rows_per_shard: int = 1 << 21,
                     row_group_rows: int = 1 << 17, workers: Optional[int] = None, unit_bytes: int = _UNIT_BYTES,
                     max_reported_bad_lines: int = 1000, overwrite: bool = False, vocab: Optional[PathLike] = None,
                     engine: str = "process", address: Optional[str] = None,
                     finish: Optional["DatasetFinish"] = None, _shown: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Preprocess a table described by a schema into a dataset directory.

    Args:
        schema: a :class:`TableSpec`, a YAML schema file, or a mapping of its keys.
        inputs: files or glob patterns, in time order (the training rows when ``valid`` / ``test`` are given).
        out_dir: output directory (absent or empty unless ``overwrite``); written whole or not at all.
        valid, test: files of the validation / test rows: split by file (the schema's ``split`` must
            then be left at its default).
        on_bad_line: ``"error"`` (stop at the first malformed line, naming ``file:line``, the column and
            the value) or ``"skip"`` (count it, keep its line number in ``metadata.json``).
        workers: processes (default: every core); the output is the same for any.
        engine, address: ``"process"`` or ``"ray"`` and a Ray cluster's address, as for
            :func:`recsys_emb.data.criteo.preprocess`; the output is the same for either.
        unit_bytes: bytes of a plain text file per work unit.
        vocab: map with this vocabulary and these dense statistics instead of counting them: a model
            directory or a dataset processed under the same schema (a new day gets the ids a model was
            trained with; values it lacks map to the OOV id, counted in ``oov_rows``).
        finish: a built-in reader's layout of ``metadata.json`` and whether the vocabulary files are
            written (:class:`DatasetFinish`; MovieLens uses it); None: the table layout below.
    Returns:
        The metadata also written to ``out_dir/metadata.json``: ``rows`` per split, ``vocab_sizes``,
        ``oov_ids``, ``oov_rows``, ``dense_stats``, ``bad_lines``, ``schema`` (the batch schema) and
        ``table_spec`` (the schema file's keys, for reading raw files at prediction time).

    Example (``tmp``: any writable directory):
        >>> _ = (tmp / "t.csv").write_text("id,click,site\\n" + "".join(f"{i},{i % 2},s{i % 3}\\n" for i in range(20)))
        >>> meta = preprocess_table({"label": "click", "drop": ["id"]}, tmp / "t.csv", tmp / "ds")
        >>> meta["rows"], meta["vocab_sizes"]
        ({'total': 20, 'train': 16, 'valid': 2, 'test': 2}, {'site': 4})
    """
    t0 = time.perf_counter()
    spec = as_spec(schema)
    spec.check_builtin()
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    train_paths = expand_inputs(inputs)
    valid_paths = expand_inputs(list(valid)) if valid else []
    test_paths = expand_inputs(list(test)) if test else []
    by_file = bool(valid_paths or test_paths)
    if by_file and spec.dataset != "table":
        raise ConfigError(f"schema {spec.source or spec.dataset}: the {spec.dataset} dataset splits by fractions; "
                          "--valid/--test files need dataset: table")
    if by_file and (spec.split.time_column is not None or (spec.split.valid, spec.split.test) != (0.1, 0.1)):
        raise ConfigError(f"schema {spec.source or ''}: split is set and --valid/--test files are given; "
                          "split either by files or by the schema's split, not both")
    paths = train_paths + valid_paths + test_paths
    shown = dict(_shown or {})
    roles = {str(p): r for r, group in enumerate((train_paths, valid_paths, test_paths)) for p in group} if by_file else {}
    cols = _resolve(spec, paths, shown)
    reading = TableReading(spec, cols, roles, shown, chunk_bytes, spec.header and spec.format != "parquet")
    given = _given(vocab, spec, cols) if vocab is not None else None
    with atomic_output_dir(out_dir, overwrite=overwrite, owned=OWNED, command="preprocess") as tmp, \
            unit_engine(engine, workers, address) as mapper:
        meta = _run(reading, paths, tmp, mapper=mapper, on_bad_line=on_bad_line, unit_bytes=unit_bytes,
                    rows_per_shard=rows_per_shard, row_group_rows=row_group_rows,
                    max_examples=max_reported_bad_lines, t0=t0, given=given,
                    vocab_source=None if vocab is None else str(Path(vocab).resolve()), finish=finish)
    logger.info("preprocessed %d rows into %s in %.1fs", meta["rows"]["total"], out_dir, meta["seconds"])
    return meta


def _given(directory: PathLike, spec: TableSpec, cols: ResolvedColumns
           ) -> Tuple[Dict[str, Vocabulary], Dict[str, Dict[str, float]]]:
    """The vocabulary and dense statistics of a model directory or a table dataset, checked against
    the spec's fields."""
    d = Path(directory)
    if (d / "model.json").is_file():
        facts = json.loads((d / "model.json").read_text()).get("dataset", {})
    elif (d / "metadata.json").is_file():
        facts = read_metadata(d)
    else:
        raise DataError(f"--vocab {d}: neither a model directory (model.json) nor a processed dataset (metadata.json)")
    if facts.get("dataset") != spec.dataset or (spec.dataset == DATASET_NAME and "dense_stats" not in facts):
        raise DataError(f"--vocab {d}: its data is not a {spec.dataset!r} dataset (dataset "
                        f"{facts.get('dataset')!r}); pass the model or dataset of a `preprocess --schema` run "
                        "under the same schema")
    vocabs = load_vocabulary(d)
    counted = [c for c in cols.id_fields if spec.vocab_options(c).vocab == "count"]
    stats = facts.get("dense_stats", {})  # a built-in dataset's dense columns need none (log1p)
    lacking = [c for c in counted if c not in vocabs] + [c for c in cols.dense
                                                        if c not in stats and spec.dense[c] == "standardize"]
    if lacking:
        raise DataError(f"--vocab {d}: it lacks the fields {lacking} of this schema; pass the model or dataset "
                        "processed under the same schema")
    return {c: vocabs[c] for c in counted}, {c: stats.get(c, {"mean": 0.0, "std": 1.0, "count": 0}) for c in cols.dense}


def _plan(paths: Sequence[Path], reading: TableReading, unit_bytes: int) -> List[Unit]:
    if reading.spec.format == "parquet":
        return [Unit(str(p), 0, None, i) for i, p in enumerate(paths)]
    return plan_units(paths, unit_bytes=unit_bytes, chunk_bytes=reading.chunk_bytes)


def _scan_all(units: List[Unit], reading: TableReading, mapper: Any, on_bad_line: str, max_examples: int) -> List[_Scan]:
    scan = partial(_scan, reading=reading, on_bad_line=on_bad_line, max_examples=max_examples)
    scans: List[_Scan] = []
    results = iter(mapper(scan, units))
    for unit in units:
        try:
            scans.append(next(results))
        except RecsysEmbError:  # read the unit again with its true first line, to name the right line
            _, first_lines, _ = merge_scans(scans + [_Scan(unit, 1, 0, 0, ReadReport())], max_examples)
            scan(unit, first_line=first_lines[-1])
            raise
    return scans


def _run(reading: TableReading, paths: List[Path], out: Path, *, mapper: Any, on_bad_line: str, unit_bytes: int,
         rows_per_shard: int, row_group_rows: int, max_examples: int, t0: float,
         given: Optional[Tuple[Dict[str, Vocabulary], Dict[str, Dict[str, float]]]] = None,
         vocab_source: Optional[str] = None, finish: Optional["DatasetFinish"] = None) -> Dict[str, Any]:
    spec, cols = reading.spec, reading.cols
    units = _plan(paths, reading, unit_bytes)
    scans = _scan_all(units, reading, mapper, on_bad_line, max_examples)
    report, first_lines, first_rows = merge_scans(scans, max_examples)
    n_rows = report.rows
    if report.bad_lines:
        logger.warning("skipped %d malformed lines (%s); first: %s", report.bad_lines, report.by_reason,
                       ", ".join(f"{b.path}:{b.line}" for b in report.examples[:5]))
    if n_rows == 0:
        raise DataError(f"no valid rows in {[reading.shown.get(str(p), str(p)) for p in paths]} "
                        f"({report.bad_lines} malformed lines: {report.by_reason})")
    stats = _Stats.empty(cols)
    for s in scans:
        assert s.stats is not None
        stats.merge(s.stats)
    positional = all(s.split_rows == (0, 0, 0) for s in scans)
    if positional:
        n_test = int(round(n_rows * float(spec.split.test)))
        n_valid = int(round(n_rows * float(spec.split.valid)))
        n_train = n_rows - n_valid - n_test
        tail = [(u, fl, max(n_train - r0, 0)) for u, fl, r0, s in zip(units, first_lines, first_rows, scans)
                if r0 + s.rows > n_train and given is None]
        later = _Stats.empty(cols)
        for part in mapper(partial(_tail, reading=reading), tail):
            later.merge(part)
        stats = _Stats(stats.counts.subtract(later.counts), stats.dense - later.dense)
    else:
        n_train, n_valid, n_test = (sum(s.split_rows[i] for s in scans) for i in range(3))
    counts = stats.counts.compact()
    vocabs: Dict[str, Vocabulary] = {}
    pairs = cols.item_pairs(spec)
    shared = {h: c for c, h in pairs} if given is None else {}
    for j, c in enumerate(cols.id_fields):
        o = spec.vocab_options(c)
        if o.vocab == "count" and given is not None:
            vocabs[c] = given[0][c]
        elif o.vocab == "count" and c not in shared:
            assert o.min_count is not None
            vocabs[c] = Vocabulary.from_counts(counts.keys[j], counts.counts[j], resolve_min_count(o.min_count, n_train))
    index = {c: j for j, c in enumerate(cols.id_fields)}
    for cand, hist in (pairs if given is None else []):  # one vocabulary over both columns' values
        both = ValueCounts(1)
        for f in ((cand,) if spec.sequence[hist].counts == "candidate" else (cand, hist)):
            both.add_counts(0, counts.keys[index[f]], counts.counts[index[f]])
        both.compact()
        min_count = spec.vocab_options(cand).min_count
        assert min_count is not None
        vocabs[cand] = vocabs[hist] = Vocabulary.from_counts(both.keys[0], both.counts[0],
                                                             resolve_min_count(min_count, n_train))
    dense_stats: Dict[str, Dict[str, float]] = {}
    for j, c in enumerate(cols.dense):
        n, s1, s2 = stats.dense[:, j]
        mean = s1 / n if n else 0.0
        std = float(np.sqrt(max(s2 / n - mean * mean, 0.0))) if n else 0.0
        dense_stats[c] = {"mean": float(mean), "std": std if std > 1e-12 else 1.0, "count": int(n)}
    if given is not None:
        dense_stats = given[1]

    scratch = out / ".vocab.npz"
    np.savez(scratch, **{f"{c}_{k}": getattr(v, k) for c, v in vocabs.items() for k in ("keys", "ids", "counts")})
    side = [_side_file(p) for p in paths]
    with_truth = reading.spec.format != "parquet" and all(p.exists() for p in side)
    truth_of = {str(p): str(t) for p, t in zip(paths, side)} if with_truth else {}
    write = partial(_write, reading=reading, vocab_file=str(scratch), dense_stats=dense_stats,
                    bounds=(n_train, n_train + n_valid, n_rows), out_dir=str(out), rows_per_shard=rows_per_shard,
                    row_group_rows=row_group_rows)
    jobs = [(u, fl, r0, truth_of.get(u.path)) for u, fl, r0 in zip(units, first_lines, first_rows)]
    files: Dict[str, List[Tuple[str, int]]] = {s: [] for s in SPLITS}
    oov_rows = [0] * len(cols.id_fields)
    for part in mapper(write, jobs):
        for s, shards in part.shards.items():
            files[s].extend(shards)
        oov_rows = [a + b for a, b in zip(oov_rows, part.oov_rows)]
    scratch.unlink()
    files = {s: _rename_in_order(out, s, shards) for s, shards in files.items()}
    if finish is None or finish.save_vocabulary:
        save_vocabularies(out, vocabs)

    if spec.dataset == "criteo":  # the Criteo reader's metadata.json
        criteo_meta = criteo_metadata(
            inputs=[reading.shown.get(str(p), str(p)) for p in paths], split_rows=(n_train, n_valid, n_test),
            files=files, min_count=resolve_min_count(spec.min_count, n_train), min_count_rule=spec.min_count,
            vocab_from="train", test_fraction=float(spec.split.test),
            valid_fraction=float(spec.split.valid), vocabs=vocabs, oov_rows=oov_rows, vocab_source=vocab_source,
            missing_flags=spec.missing_flags, with_truth=with_truth, bad_lines=report.to_dict(),
            seconds=time.perf_counter() - t0)
        write_metadata(out, criteo_meta)
        return criteo_meta
    vocab_sizes = {c: (vocabs[c].size if c in vocabs else int(spec.vocab_options(c).buckets or 0))
                   for c in cols.id_fields}
    schema = TableSchema(dense=cols.dense + cols.dense_flags, sparse=cols.categorical, jagged=cols.bags,
                         label=cols.label, true_prob="true_prob" if with_truth else None, vocab_sizes=vocab_sizes,
                         oov_ids={c: v.oov_id for c, v in vocabs.items()})
    meta: Dict[str, Any] = {
        "dataset": DATASET_NAME,
        "format_version": 1,
        "inputs": [reading.shown.get(str(p), str(p)) for p in paths],
        "rows": {"total": n_rows, "train": n_train, "valid": n_valid, "test": n_test},
        "split": "files" if reading.roles else ("time" if spec.split.time_column else "fractions"),
        "files": {s: [{"name": n, "rows": r} for n, r in files[s]] for s in SPLITS},
        "min_count": resolve_min_count(spec.min_count, n_train),
        "min_count_rule": str(spec.min_count),
        "vocab_from": "train",
        "vocab_sizes": vocab_sizes,
        "oov_ids": {c: v.oov_id for c, v in vocabs.items()},
        "oov_rows_train": {c: int(v.counts[-1]) for c, v in vocabs.items()},
        "oov_rows": dict(zip(cols.id_fields, oov_rows)),
        "hashed_fields": [c for c in cols.id_fields if spec.vocab_options(c).vocab == "hash"],
        "given_ids": [c for c in cols.id_fields if spec.vocab_options(c).vocab == "ids"],
        "item_pairs": [list(p) for p in pairs],
        "counts_file": COUNTS_FILE,
        "vocab_file": VOCAB_FILE,
        "missing_value": "empty categorical = its own value (raw key -1), ranked like any other value",
        "dense_transform": {c: spec.dense[c] for c in cols.dense},
        "dense_stats": dense_stats,
        "missing_flags": spec.missing_flags,
        "columns": list(cols.file_columns),
        "table_spec": spec.to_dict(),
        "bad_lines": report.to_dict(),
        "schema": schema.to_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if vocab_source is not None:
        meta["vocab_source"] = vocab_source
    if finish is not None:
        meta = finish.metadata(meta)
    write_metadata(out, meta)  # last: a directory without it is not a dataset
    return meta


def preprocess_frame(frame: Any, schema: Union[TableSpec, PathLike, Dict[str, Any]], out_dir: PathLike, *,
                     valid: Any = None, test: Any = None, **kwargs: Any) -> Dict[str, Any]:
    """:func:`preprocess_table` for a pandas DataFrame or pyarrow Table (and, split by frames, ``valid`` /
    ``test`` frames): the same code path, reading the frame as a Parquet input (rows numbered from 1 in
    messages, as ``<frame>:N``). The schema's ``format`` and ``header`` do not apply.

    Example (``tmp``: any writable directory):
        >>> import pandas as pd
        >>> df = pd.DataFrame({"click": [0, 1] * 10, "site": ["a", "b", "c", "d"] * 5, "price": range(20)})
        >>> meta = preprocess_frame(df, {"label": "click", "dense": {"price": "standardize"}}, tmp / "ds")
        >>> meta["rows"]["train"], meta["schema"]["dense"]
        (16, ['price', 'price_missing'])
    """
    import dataclasses

    import pyarrow.parquet as pq

    spec = dataclasses.replace(as_spec(schema), format="parquet", header=False, names=())
    with tempfile.TemporaryDirectory(prefix="recsys-emb-frame-") as d:
        shown: Dict[str, str] = {}
        files: Dict[str, List[str]] = {}
        for role, f in (("input", frame), ("valid", valid), ("test", test)):
            if f is None:
                continue
            table = f if isinstance(f, pa.Table) else pa.Table.from_pandas(f, preserve_index=False)
            p = str(Path(d) / f"{role}.parquet")
            pq.write_table(table, p, compression="none")  # read back at once: speed over size
            shown[p] = "<frame>" if role == "input" else f"<{role} frame>"
            files[role] = [p]
        return preprocess_table(spec, files["input"], out_dir, valid=files.get("valid", ()),
                                test=files.get("test", ()), _shown=shown, **kwargs)
