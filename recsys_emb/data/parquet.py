"""Processed-dataset layout shared by every dataset: ``DIR/{train,valid,test}/part-*.parquet`` plus
``DIR/metadata.json`` declaring the columns (:class:`TableSchema`) the batch reader turns into tensors and
listing every shard with its row count. Readers take exactly the listed shards (:func:`split_shards`) and
refuse a directory whose files disagree with the list.
"""

from __future__ import annotations

import dataclasses

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_emb.errors import DataError

__all__ = [
    "SPLITS",
    "TableSchema",
    "ShardedParquetWriter",
    "time_split_sizes",
    "write_metadata",
    "read_metadata",
    "split_files",
    "split_shards",
    "schema_from_metadata",
    "DATASET_ENTRIES",
]

logger = logging.getLogger(__name__)

SPLITS: Tuple[str, str, str] = ("train", "valid", "test")
METADATA_FILE = "metadata.json"
DATASET_ENTRIES: Tuple[str, ...] = tuple(f"{s}/part-*.parquet" for s in SPLITS) + (METADATA_FILE,)
"""The paths (``fnmatch`` patterns) of every processed dataset directory: what ``--overwrite`` may replace
(:func:`~recsys_emb.data.outdir.foreign_files`; a writer may add its own)."""
_REMAKE = {
    "criteo": "recsys-emb preprocess ... --out {d} --overwrite",
    "sequences": "recsys-emb generate sequences ... --out {d} --overwrite",
    "movielens-latest-small": "recsys-emb generate movielens --out {d} --overwrite",
}
PathLike = Union[str, Path]


@dataclass(frozen=True)
class TableSchema:
    """Which Parquet columns become which tensors in a batch.

    Attributes:
        dense: float32 columns stacked into the dense tensor ``(B, len(dense))``.
        sparse: single-valued int64 id columns; each becomes a KJT key with bags of length 1.
        jagged: ``list<int64>`` columns; each becomes a KJT key with the list as its bag (length >= 0).
        label: the label column (0/1), returned as float32 ``(B,)``.
        true_prob: the ground-truth click probability column, if the data has one; never a feature,
            returned only when a reader asks for it.
        vocab_sizes: ids per sparse / jagged key (every id lies in ``[0, vocab_size)``).
        oov_ids: per key, the id its vocabulary gives to values it lacks (``metadata.json``'s
            ``oov_ids``); empty when the data names none.

    Example:
        >>> s = TableSchema(dense=("I1",), sparse=("C1",), vocab_sizes={"C1": 10})
        >>> s.keys
        ('C1',)
    """

    dense: Tuple[str, ...] = ()
    sparse: Tuple[str, ...] = ()
    jagged: Tuple[str, ...] = ()
    label: str = "label"
    true_prob: Optional[str] = None
    vocab_sizes: Dict[str, int] = field(default_factory=dict)
    oov_ids: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("dense", "sparse", "jagged"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        names = list(self.dense) + list(self.sparse) + list(self.jagged) + [self.label]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"TableSchema: columns {dup} are declared more than once")
        if not self.keys:
            raise ValueError("TableSchema: declare at least one sparse or jagged column")
        missing = [k for k in self.keys if self.vocab_sizes and k not in self.vocab_sizes]
        if missing:
            raise ValueError(f"TableSchema: vocab_sizes lacks keys {missing}")

    @property
    def keys(self) -> Tuple[str, ...]:
        """KJT keys in order: the single-valued columns, then the list columns."""
        return tuple(self.sparse) + tuple(self.jagged)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in ("dense", "sparse", "jagged"):
            d[k] = list(d[k])
        if not d["oov_ids"]:  # kept out of the dict when empty, so schemas written before it read the same
            del d["oov_ids"]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TableSchema":
        return cls(
            dense=tuple(d.get("dense", ())),
            sparse=tuple(d.get("sparse", ())),
            jagged=tuple(d.get("jagged", ())),
            label=d.get("label", "label"),
            true_prob=d.get("true_prob"),
            vocab_sizes={k: int(v) for k, v in d.get("vocab_sizes", {}).items()},
            oov_ids={k: int(v) for k, v in (d.get("oov_ids") or {}).items()},
        )


def time_split_sizes(rows: int, test_fraction: float, valid_fraction: Optional[float] = None) -> Tuple[int, int, int]:
    """Sizes ``(train, valid, test)`` of a time-ordered split: test is the last ``test_fraction`` of the
    rows, validation the ``valid_fraction`` (default: same as test) just before it.

    Example:
        >>> time_split_sizes(100, 0.1)
        (80, 10, 10)
    """
    valid_fraction = test_fraction if valid_fraction is None else valid_fraction
    for name, f in (("test_fraction", test_fraction), ("valid_fraction", valid_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if test_fraction + valid_fraction >= 1.0:
        raise ValueError(f"test_fraction + valid_fraction must be < 1, got {test_fraction} + {valid_fraction}")
    n_test = int(round(rows * test_fraction))
    n_valid = int(round(rows * valid_fraction))
    return rows - n_test - n_valid, n_valid, n_test


class ShardedParquetWriter:
    """Writes tables to ``directory/part-00000.parquet``, ``part-00001...``, starting a new file every
    ``rows_per_shard`` rows and buffering up to ``row_group_rows`` rows per row group (bounded memory).

    Example:
        >>> import tempfile
        >>> w = ShardedParquetWriter(tempfile.mkdtemp(), rows_per_shard=2)
        >>> w.write(pa.table({"x": [1, 2, 3]})); w.close()
        [('part-00000.parquet', 2), ('part-00001.parquet', 1)]
    """

    def __init__(self, directory: PathLike, rows_per_shard: int = 1 << 21, row_group_rows: int = 1 << 17,
                 compression: str = "zstd") -> None:
        if rows_per_shard < 1 or row_group_rows < 1:
            raise ValueError("rows_per_shard and row_group_rows must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows_per_shard = rows_per_shard
        self.row_group_rows = min(row_group_rows, rows_per_shard)
        self.compression = compression
        self._writer: Optional[pq.ParquetWriter] = None
        self._schema: Optional[pa.Schema] = None
        self._shard_rows = 0
        self._buffer: List[pa.Table] = []
        self._buffered = 0
        self.files: List[Tuple[str, int]] = []

    def write(self, table: pa.Table) -> None:
        """Append rows (any number; split across row groups and shards as needed)."""
        if table.num_rows == 0:
            return
        if self._schema is None:
            self._schema = table.schema
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._buffered >= self.row_group_rows or self._buffered >= self.rows_per_shard - self._shard_rows:
            self._flush(min(self.row_group_rows, self.rows_per_shard - self._shard_rows))

    def _flush(self, rows: int) -> None:
        data = pa.concat_tables(self._buffer)
        head, tail = data.slice(0, rows), data.slice(rows)
        self._buffer = [tail] if tail.num_rows else []
        self._buffered = tail.num_rows
        if self._writer is None:
            name = f"part-{len(self.files):05d}.parquet"
            self._writer = pq.ParquetWriter(self.directory / name, self._schema, compression=self.compression)
            self.files.append((name, 0))
        self._writer.write_table(head, row_group_size=head.num_rows)
        self._shard_rows += head.num_rows
        name, n = self.files[-1]
        self.files[-1] = (name, n + head.num_rows)
        if self._shard_rows >= self.rows_per_shard:
            self._writer.close()
            self._writer = None
            self._shard_rows = 0

    def close(self) -> List[Tuple[str, int]]:
        """Flush and close; returns ``[(file name, rows), ...]``."""
        if self._buffered:
            self._flush(self._buffered)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return list(self.files)


def write_metadata(directory: PathLike, metadata: Dict[str, Any]) -> Path:
    """Write ``directory/metadata.json`` (sorted keys, indented)."""
    path = Path(directory) / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return path


def read_metadata(directory: PathLike) -> Dict[str, Any]:
    """Read ``directory/metadata.json``.

    Raises:
        DataError: the file is absent (naming the commands that make one) or is not valid JSON.
    """
    path = Path(directory) / METADATA_FILE
    if not path.exists():
        raise DataError(
            f"{path} not found: {directory} is not a processed dataset directory "
            "(make one with `recsys-emb preprocess`, `recsys-emb generate sequences` or `recsys-emb generate movielens`)")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); re-create the dataset with --overwrite") from None


def _remake(directory: Path, metadata: Dict[str, Any]) -> str:
    cmd = _REMAKE.get(str(metadata.get("dataset")), "the command that wrote it, with --overwrite")
    return f"the directory was changed after it was written: re-create it with `{cmd.format(d=directory)}`"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def split_shards(directory: PathLike, split: str, metadata: Optional[Dict[str, Any]] = None) -> List[Tuple[Path, int]]:
    """The Parquet shards of one split that ``metadata.json`` lists, in order, with their row counts.

    The directory must agree with the list: every listed shard present with the listed number of rows
    (read from its Parquet footer), no other ``part-*.parquet`` in the split's folder. A stray shard
    (say, from an earlier run written into the same folder) would otherwise be read as training data.

    Args:
        directory: processed dataset directory.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        metadata: its ``metadata.json`` if already read.
    Returns:
        ``[(path, rows), ...]``, possibly empty (a split of 0 rows).
    Raises:
        DataError: one line naming the directory, the file and the fix.

    Example:
        >>> w = ShardedParquetWriter(tmp / "train", rows_per_shard=2)
        >>> w.write(pa.table({"x": [1, 2, 3]}))
        >>> _ = write_metadata(tmp, {"files": {"train": [{"name": n, "rows": r} for n, r in w.close()]}})
        >>> [(p.name, n) for p, n in split_shards(tmp, "train")]
        [('part-00000.parquet', 2), ('part-00001.parquet', 1)]
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    d = Path(directory)
    meta = read_metadata(d) if metadata is None else metadata
    meta_path = d / METADATA_FILE
    files = meta.get("files")
    if not isinstance(files, dict) or not isinstance(files.get(split), list):
        raise DataError(f"{meta_path} lists no shards for split {split!r} (written by an older version?): "
                        f"{_remake(d, meta)}")
    listed = files[split]
    split_dir = d / split
    names = {str(e["name"]) for e in listed}
    if split_dir.is_dir():
        extra = sorted(p.name for p in split_dir.glob("part-*.parquet") if p.name not in names)
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise DataError(f"{split_dir / extra[0]}{more} is not listed in {meta_path}: the folder holds shards "
                            f"of another run; {_remake(d, meta)}")
    out: List[Tuple[Path, int]] = []
    for e in listed:
        p, want = split_dir / str(e["name"]), int(e["rows"])
        if not p.is_file():
            raise DataError(f"{p} is missing ({meta_path} lists it with {want} rows); {_remake(d, meta)}")
        try:
            n = pq.read_metadata(p).num_rows
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{p} is not a readable Parquet file ({_one_line(err)}); {_remake(d, meta)}") from None
        if n != want:
            raise DataError(f"{p} has {n} rows, but {meta_path} lists {want}; {_remake(d, meta)}")
        out.append((p, n))
    declared = meta.get("rows", {}).get(split) if isinstance(meta.get("rows"), dict) else None
    if declared is not None and int(declared) != sum(n for _, n in out):
        raise DataError(f"{meta_path} declares {declared} {split} rows but its {split} shards hold "
                        f"{sum(n for _, n in out)}; {_remake(d, meta)}")
    return out


def split_files(directory: PathLike, split: str, metadata: Optional[Dict[str, Any]] = None) -> List[Path]:
    """The Parquet shards of one split, in order (``part-00000`` first): exactly those ``metadata.json``
    lists, checked against the directory as :func:`split_shards` does."""
    return [p for p, _ in split_shards(directory, split, metadata)]


def schema_from_metadata(metadata: Dict[str, Any]) -> TableSchema:
    """The :class:`TableSchema` stored under ``metadata["schema"]``, with ``metadata["oov_ids"]`` (the
    keys of the schema) as its ``oov_ids`` when the schema itself names none."""
    schema = TableSchema.from_dict(metadata["schema"])
    oov = metadata.get("oov_ids") or {}
    if not schema.oov_ids and isinstance(oov, dict) and oov:
        schema = dataclasses.replace(schema, oov_ids={k: int(v) for k, v in oov.items() if k in schema.keys})
    return schema

