"""The table reader's guarantees: quoted fields, a quote left open, CRLF and lone CR, empty lines, a
truncated .gz, Parquet list columns and bad Parquet rows, each naming the file and line."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_emb.data.criteo.reader import ReadReport
from recsys_emb.data.tabular import TableSpec, iter_table_chunks, read_columns
from recsys_emb.errors import BadLineError, DataError
from recsys_emb.hashing import hash_raw_value

SPEC = TableSpec.from_dict({"label": "y", "dense": {"n": "none"}, "multi_valued": {"tags": "|"}})


def _read(path, spec=SPEC, **kw):
    cols = spec.resolve(read_columns(spec, path))
    report = ReadReport()
    chunks = list(iter_table_chunks(path, spec, cols, report=report, **kw))
    return chunks, report


def test_quotes_crlf_and_line_numbers(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b'y,a,n,tags\r\n1,"x,1",2.5,"p|q"\r\n0,plain,,\r\n')
    (c,), report = _read(p)
    assert c.lines.tolist() == [2, 3] and c.labels.tolist() == [1, 0]
    assert c.cats[0].tolist() == [hash_raw_value("x,1"), hash_raw_value("plain")]
    assert np.isnan(c.dense[1, 0]) and c.dense[0, 0] == 2.5
    off, keys = c.bags[0]
    assert off.tolist() == [0, 2, 2] and keys.tolist() == [hash_raw_value("p"), hash_raw_value("q")]
    assert report.rows == 2 and report.lines == 3


def test_open_quote_lone_cr_and_empty_line_are_bad_lines(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b'y,a,n,tags\n1,x,1,\n0,"open,1,\n1,y,2,\n\n1,a\rb,3,\n0,z,4,\n')
    with pytest.raises(BadLineError, match=r"t.csv:3: malformed line: unbalanced quotes"):
        _read(p)
    chunks, report = _read(p, on_bad_line="skip")
    assert [int(x) for c in chunks for x in c.lines] == [2, 4, 7]
    assert [(b.line, b.reason) for b in report.examples] == [
        (3, "unbalanced quotes"), (5, "empty line"), (6, "carriage return inside a line")]


def test_truncated_gzip_keeps_the_rows_before_it_under_skip(tmp_path):
    body = b"y,a,n,tags\n" + b"".join(b"%d,v%d,%d,\n" % (i % 2, i, i) for i in range(5000))
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(body)[:-200])
    with pytest.raises(DataError, match=r"t.csv.gz: the gzip stream is truncated"):
        _read(p)
    chunks, report = _read(p, on_bad_line="skip")
    assert 0 < sum(len(c) for c in chunks) < 5000 and report.truncated[0]["path"] == str(p)


def test_parquet_list_column_and_a_bad_row_named_by_number(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"y": [1, 0, 2], "a": [5, 6, 5], "n": [1.0, None, 3.0],
                             "tags": pa.array([["p", "q"], [], ["p"]])}), p)
    spec = TableSpec.from_dict({**SPEC.to_dict(), "format": "parquet", "header": False})
    with pytest.raises(BadLineError, match=r"t.parquet:3: malformed line: label column 'y' not 0/1 \(value 2\)"):
        _read(p, spec)
    (c,), report = _read(p, spec, on_bad_line="skip")
    assert c.lines.tolist() == [1, 2] and report.bad_lines == 1
    assert c.cats[0].tolist() == [hash_raw_value("5"), hash_raw_value("6")]  # ints: their text, as in a CSV
    assert c.bags[0][0].tolist() == [0, 2, 2]
