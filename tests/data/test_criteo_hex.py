"""Hex categoricals: the 8-digit fast path agrees with Python's int(s, 16) on every printable character at
every position, upper and lower case, and with the general path on fields of other lengths."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys_emb.data.criteo.fields import parse_hex as _parse_hex


def test_eight_digit_fields_against_int():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, size=2000, dtype=np.uint64)
    strs = [f"{int(v):08x}" if i % 2 else f"{int(v):08X}" for i, v in enumerate(values)]
    strs[3] = ""  # missing, beside 8-digit values
    got, bad = _parse_hex(pa.array(strs))
    assert not bad.any() and got[3] == -1
    keep = np.arange(2000) != 3
    assert (got[keep] == values[keep].astype(np.int64)).all()
    for pos in range(8):
        cases = ["0123abcd"[:pos] + chr(c) + "0123abcd"[pos + 1:] for c in range(32, 127)]
        got, bad = _parse_hex(pa.array(cases))
        for text, v, b in zip(cases, got.tolist(), bad.tolist()):
            ok = all(ch in "0123456789abcdefABCDEF" for ch in text)
            assert b == (not ok), text
            if ok:
                assert v == int(text, 16), text


def test_other_lengths_take_the_general_path():
    got, bad = _parse_hex(pa.array(["abc", "", "0123456789abcde", "0123456789abcdef", "12345678", "xyz"]))
    assert got[:3].tolist() == [0xABC, -1, 0x0123456789ABCDE] and got[4] == 0x12345678
    assert bad.tolist() == [False, False, False, True, False, True]
