"""The schema file of a user's table: which columns are the label, dense numbers, categoricals, bags of
values and ordered histories, how to read the files and how to split the rows, as a validated dataclass
loaded from YAML. :meth:`TableSpec.resolve` checks it against the real columns of the data.

Example:
    >>> spec = TableSpec.from_dict({"format": "csv", "label": "click", "drop": ["id"],
    ...                             "dense": {"price": "log1p"}, "categorical": "rest"})
    >>> r = spec.resolve(["id", "click", "site", "price"], where="data.csv")
    >>> r.categorical, r.dense, r.label
    (('site',), ('price',), 'click')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from recsys_emb.data.criteo.schema import CAT_COLUMNS, INT_COLUMNS, LABEL_COLUMN, TSV_COLUMNS
from recsys_emb.errors import ConfigError

__all__ = ["TableSpec", "ColumnOptions", "SequenceOptions", "SplitSpec", "ResolvedColumns", "load_table_spec",
           "FORMATS", "DENSE_TRANSFORMS", "BUILTIN_SCHEMAS"]

PathLike = Union[str, Path]
FORMATS = ("csv", "tsv", "parquet")
DENSE_TRANSFORMS = ("log1p", "standardize", "none")
_DELIMITERS = {"csv": ",", "tsv": "\t"}


def _where(source: str, key: str) -> str:
    return f"schema {source}: {key}" if source else f"schema: {key}"


@dataclass(frozen=True)
class SequenceOptions:
    """One ordered history column: values split on ``separator``, oldest first; the last ``max_len`` kept.
    ``candidate``: the categorical column whose values the history holds (an item id): both get one
    vocabulary, so a value has the same id in each (DIN's ``item_pairs``), counted over both columns'
    values (``counts: both``) or over the candidate column's alone (``counts: candidate``: a history value
    the candidate column never holds maps to the OOV id)."""

    separator: str = "|"
    max_len: int = 50
    candidate: Optional[str] = None
    counts: str = "both"


@dataclass(frozen=True)
class ColumnOptions:
    """Per-column vocabulary options: ``min_count`` (overrides the global one), or ``vocab: hash`` with
    ``buckets`` (the value's 64-bit hash modulo ``buckets``, no vocabulary counted), or ``vocab: ids`` with
    ``buckets`` (the values are already ids in ``[0, buckets)``, written as they are; another value is a
    malformed line). ``values: hex``: the values are 1-15 hex digits, keyed by their number (as Criteo's);
    ``values: int``: decimal integers keyed by their number (ties in a frequency ranking then go to the
    smaller number); another value is a malformed line."""

    min_count: Optional[Union[int, str]] = None
    """An int >= 1; None: the schema's (which may be ``auto``)."""
    vocab: str = "count"
    buckets: Optional[int] = None
    values: str = "text"


@dataclass(frozen=True)
class SplitSpec:
    """How rows are split. ``time_column`` None: by position (the last ``test`` fraction of the rows is the
    test split, the ``valid`` fraction before it validation). With ``time_column``: ``valid`` and ``test``
    are the first values of those splits (a row whose value is >= ``test`` is a test row, else >= ``valid`` a
    validation row, else a training row), numbers compared as numbers and strings as strings.
    Files given as ``--valid`` / ``--test`` split by file instead."""

    time_column: Optional[str] = None
    valid: Any = 0.1
    test: Any = 0.1


@dataclass(frozen=True)
class TableSpec:
    """A table's columns and how to read them (the keys of a schema file; see datasets/your-data.md).

    Attributes:
        format: ``csv``, ``tsv`` or ``parquet`` (``.gz`` text read transparently).
        header: the first line of each text file names the columns; else ``names`` gives them in order.
        names: the columns in file order (text files without a header).
        delimiter: the field separator (default: ``,`` for csv, tab for tsv).
        label: the 0/1 column.
        drop: columns read and ignored.
        categorical: a list of columns, or ``"rest"``: every column not named elsewhere.
        dense: ``{column: log1p | standardize | none}``; missing values become 0 after the transform.
        missing_flags: add a dense ``{column}_missing`` (0/1) per dense column (written after it).
        keep: columns written to the output unchanged, as they were read (not features: a rating or a
            timestamp kept for analysis).
        multi_valued: ``{column: separator}``: a bag of values per row (pooled).
        sequence: ``{column: SequenceOptions}``: an ordered history.
        split: :class:`SplitSpec`.
        min_count: values seen fewer times in the training rows map to the column's OOV id; ``auto`` (the
            default): :func:`~recsys_emb.data.vocabulary.auto_min_count` of the training rows (2 below
            10,000, else 1).
        columns: per-column :class:`ColumnOptions`.
        dataset: ``table`` (a user's table: ``metadata.json`` records the spec), or the name of a built-in
            schema whose dataset this is (``criteo``: the columns must be the built-in's, only ``min_count``
            and the split fractions may differ; ``metadata.json`` is then the Criteo reader's, so every
            command treats the output as Criteo data).
        source: the file the spec came from (for messages).
    """

    format: str = "csv"
    header: bool = True
    names: Tuple[str, ...] = ()
    delimiter: Optional[str] = None
    label: str = "label"
    drop: Tuple[str, ...] = ()
    keep: Tuple[str, ...] = ()
    categorical: Union[str, Tuple[str, ...]] = "rest"
    dense: Dict[str, str] = field(default_factory=dict)
    missing_flags: bool = True
    multi_valued: Dict[str, str] = field(default_factory=dict)
    sequence: Dict[str, SequenceOptions] = field(default_factory=dict)
    split: SplitSpec = field(default_factory=SplitSpec)
    min_count: Union[int, str] = "auto"
    columns: Dict[str, ColumnOptions] = field(default_factory=dict)
    dataset: str = "table"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        src = self.source
        if self.format not in FORMATS:
            raise ConfigError(f"{_where(src, 'format')}={self.format!r} is not allowed; choose one of {list(FORMATS)}")
        if self.format != "parquet" and not self.header and not self.names:
            raise ConfigError(f"{_where(src, 'names')} is required with header: false (the columns in file order)")
        if self.header and self.names:
            raise ConfigError(f"{_where(src, 'names')} is given with header: true; the header names the columns "
                              "(set header: false to name them here)")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"{_where(src, 'delimiter')}={self.delimiter!r} must be one character")
        if not isinstance(self.label, str) or not self.label:
            raise ConfigError(f"{_where(src, 'label')} must name the 0/1 label column")
        if isinstance(self.categorical, str) and self.categorical != "rest":
            raise ConfigError(f"{_where(src, 'categorical')}={self.categorical!r}: give a list of columns or 'rest'")
        for col, how in self.dense.items():
            if how not in DENSE_TRANSFORMS:
                raise ConfigError(f"{_where(src, f'dense.{col}')}={how!r} is not allowed; "
                                  f"choose one of {list(DENSE_TRANSFORMS)}")
        for col, sep in self.multi_valued.items():
            if not isinstance(sep, str) or not sep:
                raise ConfigError(f"{_where(src, f'multi_valued.{col}')}={sep!r} must be a separator string")
        for col, seq in self.sequence.items():
            if not seq.separator:
                raise ConfigError(f"{_where(src, f'sequence.{col}.separator')} must be a non-empty string")
            if seq.max_len < 1:
                raise ConfigError(f"{_where(src, f'sequence.{col}.max_len')}={seq.max_len} must be >= 1")
            if seq.counts not in ("both", "candidate"):
                raise ConfigError(f"{_where(src, f'sequence.{col}.counts')}={seq.counts!r}: choose 'both' or "
                                  "'candidate'")
        if self.min_count != "auto" and (not isinstance(self.min_count, int) or self.min_count < 1):
            raise ConfigError(f"{_where(src, 'min_count')}={self.min_count!r} must be an int >= 1 or auto")
        for col, o in self.columns.items():
            if o.values not in ("text", "hex", "int"):
                raise ConfigError(f"{_where(src, f'columns.{col}.values')}={o.values!r}: choose 'text', 'hex' "
                                  "or 'int'")
            if o.vocab not in ("count", "hash", "ids"):
                raise ConfigError(f"{_where(src, f'columns.{col}.vocab')}={o.vocab!r}: choose 'count', 'hash' "
                                  "or 'ids'")
            if o.vocab != "count" and (o.buckets is None or o.buckets < 1):
                raise ConfigError(f"{_where(src, f'columns.{col}.buckets')} must be >= 1 with vocab: {o.vocab}")
            if o.vocab == "count" and o.buckets is not None:
                raise ConfigError(f"{_where(src, f'columns.{col}.buckets')} is only for vocab: hash or ids")
            if o.vocab == "ids" and o.values == "hex":
                raise ConfigError(f"{_where(src, f'columns.{col}.values')}: vocab: ids reads decimal ids "
                                  "(values: int)")
            if o.min_count is not None and (not isinstance(o.min_count, int) or o.min_count < 1):
                raise ConfigError(f"{_where(src, f'columns.{col}.min_count')}={o.min_count} must be >= 1")
        s = self.split
        if s.time_column is None:
            for k in ("valid", "test"):
                v = getattr(s, k)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
                    raise ConfigError(f"{_where(src, f'split.{k}')}={v!r} must be a fraction in [0, 1) "
                                      "(or give split.time_column and the first value of each split)")
            if float(s.valid) + float(s.test) >= 1.0:
                raise ConfigError(f"{_where(src, 'split')}: valid + test = {float(s.valid) + float(s.test)} "
                                  "must be < 1")
        else:
            vt = [type(s.valid) in (int, float), type(s.test) in (int, float)]
            if None in (s.valid, s.test) or vt[0] != vt[1]:
                raise ConfigError(f"{_where(src, 'split')}: with time_column give valid and test as the first "
                                  f"value of each split, both numbers or both strings; got {s.valid!r}, {s.test!r}")
            if s.valid > s.test:
                raise ConfigError(f"{_where(src, 'split')}: valid={s.valid!r} comes after test={s.test!r}")
        if self.dataset != "table" and self.dataset not in BUILTIN_SCHEMAS:
            raise ConfigError(f"{_where(src, 'dataset')}={self.dataset!r} is not allowed; choose 'table' (any "
                              f"table) or a built-in schema: {', '.join(BUILTIN_SCHEMAS)}")
        if self.dataset != "table" and s.time_column is not None:
            raise ConfigError(f"{_where(src, 'split.time_column')}: the {self.dataset} dataset splits by "
                              "fractions (split: {valid: F, test: F}); set dataset: table to split by time")
        self._named_once()

    def check_builtin(self) -> None:
        """For ``dataset`` other than ``table``: the columns are the built-in schema's (only ``min_count``
        and the split may differ), else :class:`~recsys_emb.errors.ConfigError` naming the first key that
        differs."""
        if self.dataset == "table":
            return
        builtin = TableSpec.from_dict(BUILTIN_SCHEMAS[self.dataset], source=self.dataset)
        for f in dataclasses.fields(self):
            if f.compare and f.name not in ("min_count", "split") and getattr(self, f.name) != getattr(builtin, f.name):
                raise ConfigError(f"{_where(self.source, f.name)} differs from the built-in {self.dataset} schema's; "
                                  f"dataset: {self.dataset} needs its columns as they are (set dataset: table "
                                  "for a table of your own)")

    @property
    def field_delimiter(self) -> str:
        return self.delimiter or _DELIMITERS.get(self.format, ",")

    def _roles(self) -> List[Tuple[str, str]]:
        """(key, column) for every column the spec names (the time column only where it is no feature)."""
        roles = [("label", self.label)] + [("drop", c) for c in self.drop] + [("keep", c) for c in self.keep]
        if not isinstance(self.categorical, str):
            roles += [("categorical", c) for c in self.categorical]
        roles += [(f"dense.{c}", c) for c in self.dense]
        roles += [(f"multi_valued.{c}", c) for c in self.multi_valued]
        roles += [(f"sequence.{c}", c) for c in self.sequence]
        return roles

    def _named_once(self) -> None:
        seen: Dict[str, str] = {}
        for key, col in self._roles():
            if col in seen:
                raise ConfigError(f"{_where(self.source, key)}: column {col!r} is named twice (also under "
                                  f"{seen[col]}); give each column one role")
            seen[col] = key
        if self.names and len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if list(self.names).count(n) > 1})
            raise ConfigError(f"{_where(self.source, 'names')}: {dup} appear twice")

    def vocab_options(self, column: str) -> ColumnOptions:
        o = self.columns.get(column, ColumnOptions())
        return o if o.min_count is not None or o.vocab != "count" else dataclasses.replace(o, min_count=self.min_count)

    def resolve(self, file_columns: Sequence[str], where: str = "") -> "ResolvedColumns":
        """The roles of the real columns ``file_columns`` (a header, ``names`` or a Parquet schema).

        Raises:
            ConfigError: a column the spec names is not in the data (naming the key and the columns).
        """
        present = list(file_columns)
        at = f" of {where}" if where else ""
        named = self._roles() + [(f"columns.{c}", c) for c in self.columns]
        if self.split.time_column is not None:
            named.append(("split.time_column", self.split.time_column))
        for key, col in named:
            if col not in present:
                raise ConfigError(f"{_where(self.source, key)}: no column {col!r} in the columns{at} "
                                  f"({', '.join(present[:12])}{' ...' if len(present) > 12 else ''})")
        taken = {c for _, c in self._roles()}
        cats: Tuple[str, ...] = (tuple(c for c in present if c not in taken and c != self.split.time_column)
                                 if isinstance(self.categorical, str) else tuple(self.categorical))
        flags = tuple(f"{c}_missing" for c in self.dense) if self.missing_flags else ()
        clash = sorted(set(flags) & set(present))
        if clash:
            raise ConfigError(f"{_where(self.source, 'missing_flags')}: the flag column {clash[0]!r} would clash "
                              f"with a column of the data; set missing_flags: false or rename the column")
        for c, seq in self.sequence.items():
            if seq.candidate is None:
                continue
            key = f"sequence.{c}.candidate"
            if seq.candidate not in cats:
                raise ConfigError(f"{_where(self.source, key)}={seq.candidate!r} is not a categorical column")
            if {self.vocab_options(c).vocab, self.vocab_options(seq.candidate).vocab} != {"count"}:
                raise ConfigError(f"{_where(self.source, key)}: a candidate and its history share a counted "
                                  "vocabulary; neither may be vocab: hash or ids")
            if self.vocab_options(c).values != self.vocab_options(seq.candidate).values:
                raise ConfigError(f"{_where(self.source, key)}: a candidate and its history share a vocabulary; "
                                  "give both the same columns.NAME.values")
        for c, o in self.columns.items():
            if o.values == "hex" and c not in cats:
                raise ConfigError(f"{_where(self.source, f'columns.{c}.values')}: hex values are for categorical "
                                  "columns")
            if c not in cats and c not in self.multi_valued and c not in self.sequence:
                raise ConfigError(f"{_where(self.source, f'columns.{c}')}: {c!r} is not a categorical, "
                                  "multi_valued or sequence column")
        if not (cats or self.multi_valued or self.sequence):
            raise ConfigError(f"{_where(self.source, 'categorical')}: no categorical, multi_valued or sequence "
                              "column: the model needs at least one")
        return ResolvedColumns(file_columns=tuple(present), label=self.label, dense=tuple(self.dense),
                               dense_flags=flags, categorical=cats, multi_valued=tuple(self.multi_valued),
                               sequence=tuple(self.sequence), keep=self.keep)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d["names"] = list(self.names)
        d["drop"] = list(self.drop)
        d["keep"] = list(self.keep)
        if not isinstance(self.categorical, str):
            d["categorical"] = list(self.categorical)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "") -> "TableSpec":
        """A spec from a schema file's mapping; an unknown key or a value of the wrong type raises
        :class:`~recsys_emb.errors.ConfigError` naming the key."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{_where(source, '')} must be a mapping of keys (format, label, dense, ...), "
                              f"got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{_where(source, unknown[0])} is not a schema key; keys: {sorted(known)}")
        kw: Dict[str, Any] = {"source": source}
        for k, v in d.items():
            kw[k] = _field_value(k, v, source)
        return cls(**kw)


def _str_list(key: str, v: Any, source: str) -> Tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{_where(source, key)}={v!r} must be a list of column names")
    return tuple(v)


def _mapping(key: str, v: Any, source: str) -> Dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{_where(source, key)}={v!r} must be a mapping {{column: ...}}")
    return {str(k): x for k, x in v.items()}


def _options(cls: Any, key: str, v: Any, source: str) -> Any:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{_where(source, key)}={v!r} must be a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for k, x in v.items():
        if k not in known:
            raise ConfigError(f"{_where(source, f'{key}.{k}')} is not allowed; keys: {sorted(known)}")
        want = {"separator": str, "max_len": int, "min_count": int, "vocab": str, "buckets": int,
                "candidate": str, "values": str, "counts": str}.get(k)
        if want is not None and x is not None and (not isinstance(x, want) or isinstance(x, bool)):
            raise ConfigError(f"{_where(source, f'{key}.{k}')}={x!r} must be a{'n int' if want is int else ' string'}")
    return cls(**{k: x for k, x in v.items() if x is not None})


def _field_value(k: str, v: Any, source: str) -> Any:
    if k in ("format", "label", "delimiter", "dataset"):
        if not isinstance(v, str) and not (k == "delimiter" and v is None):
            raise ConfigError(f"{_where(source, k)}={v!r} must be a string")
        return v
    if k in ("header", "missing_flags"):
        if not isinstance(v, bool):
            raise ConfigError(f"{_where(source, k)}={v!r} must be true or false")
        return v
    if k == "min_count":
        if (not isinstance(v, int) or isinstance(v, bool)) and v != "auto":
            raise ConfigError(f"{_where(source, k)}={v!r} must be an int or auto (per column: columns.NAME.min_count)")
        return v
    if k in ("names", "drop", "keep"):
        return _str_list(k, v, source)
    if k == "categorical":
        return v if isinstance(v, str) else _str_list(k, v, source)
    if k in ("dense", "multi_valued"):
        return _mapping(k, v, source)
    if k == "sequence":
        return {c: _options(SequenceOptions, f"sequence.{c}", o or {}, source)
                for c, o in _mapping(k, v, source).items()}
    if k == "columns":
        out = {}
        for c, o in _mapping(k, v, source).items():
            if o == "hash":
                raise ConfigError(f"{_where(source, f'columns.{c}')}: write {{vocab: hash, buckets: N}}")
            out[c] = _options(ColumnOptions, f"columns.{c}", o or {}, source)
        return out
    if k == "split":
        return _options(SplitSpec, "split", v or {}, source)
    raise AssertionError(k)


@dataclass(frozen=True)
class ResolvedColumns:
    """The spec against real columns: every role as a tuple of column names in output order."""

    file_columns: Tuple[str, ...]
    label: str
    dense: Tuple[str, ...]
    dense_flags: Tuple[str, ...]
    categorical: Tuple[str, ...]
    multi_valued: Tuple[str, ...]
    sequence: Tuple[str, ...]
    keep: Tuple[str, ...] = ()

    @property
    def bags(self) -> Tuple[str, ...]:
        """Columns of lists: the multi-valued ones, then the sequences."""
        return self.multi_valued + self.sequence

    def item_pairs(self, spec: TableSpec) -> List[Tuple[str, str]]:
        """``(candidate, history)`` of every sequence column with a ``candidate``."""
        return [(o.candidate, c) for c, o in spec.sequence.items() if o.candidate is not None]

    @property
    def id_fields(self) -> Tuple[str, ...]:
        """Every field that gets ids, in KJT key order."""
        return self.categorical + self.bags


BUILTIN_SCHEMAS: Dict[str, Dict[str, Any]] = {
    "criteo": {
        "dataset": "criteo", "format": "tsv", "header": False, "names": TSV_COLUMNS, "label": LABEL_COLUMN,
        "dense": {c: "log1p" for c in INT_COLUMNS}, "missing_flags": False, "categorical": CAT_COLUMNS,
        "columns": {c: {"values": "hex"} for c in CAT_COLUMNS}, "split": {"valid": 0.1, "test": 0.1},
    },
}
"""Schemas by name (``--schema criteo``): the Criteo Kaggle TSV (label, I1..I13 counts, C1..C26 hex values)
read by the schema reader into the shards, vocabulary files and ``metadata.json`` the Criteo reader writes."""


def _packaged_schema(path: Path) -> Path:
    """The example schema shipped with the package that ``path`` names (``avazu``, ``avazu.yaml``,
    ``schemas/avazu.yaml`` or ``configs/schemas/avazu.yaml``), so the documented commands work outside a
    checkout; ``path`` itself when there is none."""
    packaged = Path(__file__).resolve().parents[2] / "configs"  # recsys_emb/configs (config.PACKAGED_CONFIGS_DIR)
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    name = Path(*parts) if parts else path
    for candidate in (packaged / name, packaged / "schemas" / name, packaged / "schemas" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return path


def load_table_spec(path: PathLike) -> TableSpec:
    """A :class:`TableSpec` from a YAML schema file, or a built-in one by name (:data:`BUILTIN_SCHEMAS`).

    Raises:
        ConfigError: a missing file, bad YAML, an unknown key or a bad value, in one line naming the key.
    """
    p = Path(path)
    if str(path) == "movielens" and not p.exists():
        raise ConfigError("schema movielens: MovieLens is two files joined by a step before the schema reader; "
                          "run `recsys-emb preprocess --schema movielens --input ML_DIR --out DIR` or "
                          "recsys_emb.data.movielens.prepare_movielens")
    if str(path) in BUILTIN_SCHEMAS and not p.exists():
        return TableSpec.from_dict(BUILTIN_SCHEMAS[str(path)], source=str(path))
    if not p.exists():
        p = _packaged_schema(p)
    if not p.is_file():
        raise ConfigError(f"schema file {str(p)!r} does not exist (give a YAML file, or a built-in name: "
                          f"{', '.join(BUILTIN_SCHEMAS)})")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"schema {p}: not valid YAML ({' '.join(str(e).split())})") from None
    return TableSpec.from_dict(d or {}, source=str(p))
