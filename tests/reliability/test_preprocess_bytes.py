"""One bad byte must not stop a whole preprocess (issue 13, item 5).

Real files with the offending bytes, read in both modes: under ``on_bad_line="error"`` the run stops with a
one-line error naming the file and line; under ``"skip"`` the line is counted, reported and skipped and
every other row is kept. CRLF and CR-only line endings give the same rows as LF. A truncated or corrupt
``.gz`` names the file and the last good line; under ``skip`` the rows before it are kept and the loss is
reported in metadata.json and by the CLI.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys_emb.cli import main
from recsys_emb.data.criteo import BadLineError, ReadReport, iter_criteo_tsv, preprocess
from recsys_emb.data.synthetic import generate_criteo_like
from recsys_emb.errors import DataError

N = 300  # lines per test file
BAD = 120  # the line that gets the bad bytes


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> list:
    tsv = generate_criteo_like(tmp_path_factory.mktemp("raw") / "raw", N, scale=0.001, seed=21).tsv
    out = tsv.read_bytes().split(b"\n")[:N]
    assert len(out) == N
    return out


def _rows(path: Path, **kw) -> dict:
    chunks = list(iter_criteo_tsv(path, **kw))
    return {"lines": np.concatenate([c.lines for c in chunks]), "labels": np.concatenate([c.labels for c in chunks]),
            "ints": np.concatenate([c.ints for c in chunks]), "cats": np.concatenate([c.cats for c in chunks], axis=1)}


def _same_rows(a: dict, b: dict) -> None:
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def _field(line: bytes, i: int, value: bytes) -> bytes:
    f = line.split(b"\t")
    f[i] = value
    return b"\t".join(f)


# Each case: how line BAD is spoiled, and the reason it is reported under.
CASES = {
    "invalid-utf8": (lambda ln: _field(ln, 16, b"3a\xff\xfe91"), "non-ASCII byte"),
    "latin1-text": (lambda ln: _field(ln, 20, "caf\u00e9".encode("latin-1")), "non-ASCII byte"),
    "stray-cr": (lambda ln: _field(ln, 18, b"12\r34"), "carriage return inside a line"),
    "nul": (lambda ln: _field(ln, 5, b"1\x002"), "NUL byte"),
    "control": (lambda ln: _field(ln, 30, b"ab\x1bcd"), "control character"),
    "overlong": (lambda ln: _field(ln, 25, b"a" * 9000), "line longer than 4096 bytes"),
}


def _spoiled(lines, tmp_path: Path, case: str, chunk_name: str = "bad.tsv") -> Path:
    spoil, _ = CASES[case]
    data = list(lines)
    data[BAD - 1] = spoil(data[BAD - 1])
    path = tmp_path / chunk_name
    path.write_bytes(b"\n".join(data) + b"\n")
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_bytes_error_mode_names_file_and_line(lines, tmp_path, case):
    path = _spoiled(lines, tmp_path, case)
    reason = CASES[case][1]
    with pytest.raises(BadLineError, match=rf"bad\.tsv:{BAD}: malformed line: {reason}") as e:
        preprocess(path, tmp_path / "out")
    assert "\n" not in str(e.value) and "on_bad_line='skip'" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("chunk_bytes", [1000, 1 << 20])  # 1000: the overlong line spans many blocks
@pytest.mark.parametrize("case", list(CASES))
def test_bad_bytes_skip_mode_counts_and_keeps_every_other_row(lines, tmp_path, case, chunk_bytes):
    path = _spoiled(lines, tmp_path, case)
    clean = tmp_path / "clean.tsv"
    clean.write_bytes(b"\n".join(lines[:BAD - 1] + lines[BAD:]) + b"\n")
    report = ReadReport()
    got = _rows(path, on_bad_line="skip", report=report, chunk_bytes=chunk_bytes)
    want = _rows(clean)
    want["lines"] = np.where(want["lines"] >= BAD, want["lines"] + 1, want["lines"])  # numbering of the spoiled file
    _same_rows(got, want)
    assert report.rows == N - 1 and report.bad_lines == 1
    assert report.by_reason == {CASES[case][1]: 1}
    assert [(b.path, b.line) for b in report.examples] == [(str(path), BAD)]
    meta = preprocess(path, tmp_path / "out", on_bad_line="skip", chunk_bytes=chunk_bytes)
    assert meta["rows"]["total"] == N - 1 and meta["bad_lines"]["by_reason"] == {CASES[case][1]: 1}


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
@pytest.mark.parametrize("on_bad_line", ["error", "skip"])
def test_crlf_and_cr_only_endings_give_the_same_rows_as_lf(lines, tmp_path, ending, on_bad_line, caplog):
    lf, other = tmp_path / "lf.tsv", tmp_path / "other.tsv"
    lf.write_bytes(b"\n".join(lines) + b"\n")
    other.write_bytes(ending.join(lines) + ending)
    for chunk_bytes in (777, 1 << 20):
        report = ReadReport()
        with caplog.at_level(logging.WARNING, logger="recsys_emb.data.criteo"):
            got = _rows(other, on_bad_line=on_bad_line, report=report, chunk_bytes=chunk_bytes)
        _same_rows(got, _rows(lf))
        assert report.bad_lines == 0
    if ending == b"\r":
        assert "CR-only line endings" in caplog.text and "other.tsv" in caplog.text
    a = preprocess(lf, tmp_path / "a", on_bad_line=on_bad_line)
    b = preprocess(other, tmp_path / "b", on_bad_line=on_bad_line)
    assert a["rows"] == b["rows"] and a["vocab_sizes"] == b["vocab_sizes"]
    for split in ("train", "valid", "test"):
        assert pq.read_table(tmp_path / "a" / split).equals(pq.read_table(tmp_path / "b" / split))


HALF = N // 2


def _gz_damaged(lines, tmp_path: Path, how: str) -> Path:
    """A gzip file of the N lines, damaged: ``truncated`` (cut at 60%), ``corrupt`` (two members, as from
    ``cat a.gz b.gz``; the second's first deflate block has an invalid type) or ``checksum`` (every byte
    readable, the CRC of the data does not match)."""
    text = b"\n".join(lines) + b"\n"
    raw = gzip.compress(text, mtime=0)
    if how == "truncated":
        raw = raw[: len(raw) * 3 // 5]
    elif how == "corrupt":
        first = gzip.compress(b"\n".join(lines[:HALF]) + b"\n", mtime=0)
        second = bytearray(gzip.compress(b"\n".join(lines[HALF:]) + b"\n", mtime=0))
        second[10] |= 0b110  # BTYPE = 11, reserved: "invalid block type"
        raw = first + bytes(second)
    else:
        raw = raw[:-8] + bytes([raw[-8] ^ 1]) + raw[-7:]
    path = tmp_path / f"{how}.tsv.gz"
    path.write_bytes(raw)
    return path


DAMAGE = {"truncated": "truncated", "corrupt": "corrupt", "checksum": "corrupt \\(its checksum does not match"}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_gz_error_mode_is_one_line_naming_file_and_last_good_line(lines, tmp_path, how, capsys):
    path = _gz_damaged(lines, tmp_path, how)
    with pytest.raises(DataError, match=rf"{how}\.tsv\.gz: the gzip stream is {DAMAGE[how]}.*after line \d+ ") as e:
        preprocess(path, tmp_path / "out")
    assert "\n" not in str(e.value) and "--on-bad-line skip" in str(e.value)
    assert not (tmp_path / "out").exists()
    assert main(["preprocess", "--input", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: the gzip stream is") and err.count("\n") == 1


@pytest.mark.parametrize("how", list(DAMAGE))
def test_damaged_gz_skip_mode_keeps_the_rows_before_and_reports_the_loss(lines, tmp_path, how, capsys):
    path = _gz_damaged(lines, tmp_path, how)
    report = ReadReport()
    got = _rows(path, on_bad_line="skip", report=report)
    (last,) = [t["last_good_line"] for t in report.truncated]
    assert last == {"truncated": last, "corrupt": HALF, "checksum": N}[how] and 0 < last <= N
    full = tmp_path / "full.tsv"
    full.write_bytes(b"\n".join(lines) + b"\n")
    want = _rows(full)
    # Every complete line before the damage is kept as it was, nothing after it is invented.
    assert report.bad_lines == 0 and report.rows == last
    _same_rows(got, {k: (v[..., :last] if k == "cats" else v[:last]) for k, v in want.items()})

    meta = preprocess(path, tmp_path / "out", on_bad_line="skip")
    assert meta["rows"]["total"] == last
    saved = json.loads((tmp_path / "out" / "metadata.json").read_text())["bad_lines"]["truncated"]
    assert saved == [{"path": str(path), "last_good_line": last, "error": report.truncated[0]["error"]}]
    assert main(["preprocess", "--input", str(path), "--out", str(tmp_path / "cli"), "--on-bad-line", "skip"]) == 0
    out = capsys.readouterr().out
    assert f"{path}: the gzip stream is" in out and f"after line {last}" in out and "lost" in out


def test_damaged_gz_among_several_inputs_skips_only_its_tail(lines, tmp_path):
    bad = _gz_damaged(lines, tmp_path, "truncated")
    good = tmp_path / "next.tsv"
    good.write_bytes(b"\n".join(lines) + b"\n")
    report = ReadReport()
    got = _rows([bad, good], on_bad_line="skip", report=report)
    last = report.truncated[0]["last_good_line"]
    assert report.rows == last + N and len(got["lines"]) == last + N
    assert np.array_equal(got["lines"], np.concatenate([np.arange(1, last + 1), np.arange(1, N + 1)]))
