"""Input files as blocks of whole lines: gzip by magic or name, gzip members, line endings split across
reads, overlong lines, damaged streams."""

from __future__ import annotations

import bz2
import gzip

import pyarrow as pa
import pytest

from recsys_emb.data.criteo.blocks import Block, DamagedStream, OverlongLine, iter_line_blocks

TEXT = b"".join(b"%d\tline\n" % i for i in range(1, 201))


def _joined(events):
    """(text of all blocks, other events), checking that blocks are whole lines numbered in order."""
    text, other, line = b"", [], 1
    for e in events:
        if isinstance(e, Block):
            assert e.data.endswith(b"\n") and e.first_line == line
            text += e.data
            line += e.data.count(b"\n")
        else:
            other.append(e)
            if isinstance(e, OverlongLine):
                line += 1
    return text, other


@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 1 << 20])
def test_plain_gzip_members_and_magic_give_the_same_lines(tmp_path, chunk_bytes):
    half = TEXT.index(b"101\t")
    files = {
        "plain.tsv": TEXT,
        "one.tsv.gz": gzip.compress(TEXT),
        # two members with zero padding between them (as `cat a.gz b.gz`, padded by some tools)
        "members.tsv.gz": gzip.compress(TEXT[:half]) + b"\0" * 5 + gzip.compress(TEXT[half:]),
        "gzip-without-suffix.tsv": gzip.compress(TEXT),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert _joined(iter_line_blocks(tmp_path / name, chunk_bytes)) == (TEXT, []), name


def test_other_codecs_still_read_by_name(tmp_path):
    if not pa.Codec.is_available("bz2"):
        pytest.skip("pyarrow built without bz2")
    (tmp_path / "a.tsv.bz2").write_bytes(bz2.compress(TEXT))
    assert _joined(iter_line_blocks(tmp_path / "a.tsv.bz2", 1000)) == (TEXT, [])
    packed = bz2.compress(TEXT)
    (tmp_path / "b.tsv.bz2").write_bytes(packed[: len(packed) // 2])
    text, other = _joined(iter_line_blocks(tmp_path / "b.tsv.bz2", 1000))
    assert TEXT.startswith(text) and len(other) == 1 and isinstance(other[0], DamagedStream)
    assert "truncated or corrupt" in other[0].error and other[0].last_line == text.count(b"\n")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 9, 1 << 20])
def test_line_endings(tmp_path, chunk_bytes):
    crlf = TEXT.replace(b"\n", b"\r\n")
    (tmp_path / "crlf").write_bytes(crlf)  # a read may end between \r and \n: still not CR-only
    assert _joined(iter_line_blocks(tmp_path / "crlf", chunk_bytes)) == (crlf, [])
    (tmp_path / "cr").write_bytes(TEXT.replace(b"\n", b"\r"))
    assert _joined(iter_line_blocks(tmp_path / "cr", chunk_bytes)) == (TEXT, [])
    (tmp_path / "one-cr").write_bytes(b"1\tline\r")
    assert _joined(iter_line_blocks(tmp_path / "one-cr", chunk_bytes)) == (b"1\tline\n", [])
    (tmp_path / "no-end").write_bytes(b"1\tx\n2\ty")
    assert _joined(iter_line_blocks(tmp_path / "no-end", chunk_bytes)) == (b"1\tx\n2\ty\n", [])
    (tmp_path / "empty").write_bytes(b"")
    assert _joined(iter_line_blocks(tmp_path / "empty", chunk_bytes)) == (b"", [])


@pytest.mark.parametrize("chunk_bytes", [3, 50, 1 << 20])
def test_overlong_lines_are_skipped_without_being_held(tmp_path, chunk_bytes):
    data = b"1\ta\n" + b"x" * 500 + b"\n2\tb\n" + b"y" * 300  # the last one ends without \n
    (tmp_path / "f").write_bytes(data)
    text, other = _joined(iter_line_blocks(tmp_path / "f", chunk_bytes, max_line_bytes=100))
    # A line seen growing past the limit without an end is cut out while streaming (the unfinished last
    # line always is); one read whole with its end stays in the block, where the reader measures it.
    if chunk_bytes < 100:
        assert text == b"1\ta\n2\tb\n" and other == [OverlongLine(2), OverlongLine(4)]
    else:
        assert text == b"1\ta\n" + b"x" * 500 + b"\n2\tb\n" and other == [OverlongLine(4)]


def test_damaged_gzip_keeps_every_complete_line_before_the_damage(tmp_path):
    gz = gzip.compress(TEXT)
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    text, other = _joined(iter_line_blocks(tmp_path / "cut.gz", 1 << 20))
    assert TEXT.startswith(text) and len(text) > 0
    assert other == [DamagedStream(text.count(b"\n"), other[0].error)]
    assert other[0].error.startswith("the gzip stream is truncated")
    (tmp_path / "not-gzip.gz").write_bytes(TEXT)
    assert _joined(iter_line_blocks(tmp_path / "not-gzip.gz", 1 << 20))[1][0].error.startswith(
        "the gzip stream is corrupt (Error -3 while decompressing data: incorrect header check)")
    (tmp_path / "empty.gz").write_bytes(b"")
    assert _joined(iter_line_blocks(tmp_path / "empty.gz", 1 << 20))[1][0].error.startswith(
        "the gzip stream is truncated")
