"""The demo (`recsys-emb demo`): every variant's memory and one fused step, rendered as the table the CLI prints."""

from bench_helpers import run_cli

from recsys_emb.benchmarks.demo import format_table, run_demo


def test_demo_prints_memory_table():
    out = run_cli("demo", "--cap", "20000", "--batch", "64").stdout
    lines = out.splitlines()
    for variant in ("full", "hashed", "multi_hash", "qr", "mixed", "unified"):
        row = next(line for line in lines if line.startswith(variant + " "))
        assert "MiB" in row or "KiB" in row
    assert "100.0%" in next(line for line in lines if line.startswith("full "))


def test_rows_hold_every_variant_with_its_share_of_the_full_bytes(single_process_group):
    rows = run_demo(cap=2000, dim=8, batch=32, compression=4)
    by = {r["variant"]: r for r in rows}
    assert list(by) == ["full", "hashed", "multi_hash", "qr", "mixed", "unified", "lowrank", "tt", "robe", "mch"]
    assert by["full"]["ratio_to_full"] == 1.0 and by["full"]["bytes"] == 4 * by["full"]["params"]
    for v in ("hashed", "multi_hash", "qr", "unified", "tt", "robe", "mch"):
        assert by[v]["ratio_to_full"] < 0.5, v  # large fields at about 1/4, the small ones whole
    assert 0.25 < by["lowrank"]["ratio_to_full"] < 0.55  # rank >= 4 at dim 8: each large table about halved
    assert all(r["output_shape"] == (32, 26 * 8) for r in rows)
    lines = format_table(rows, cap=2000, dim=8, batch=32, compression=4).splitlines()
    assert "capped at 2,000" in lines[0] and "1/4 of the bytes" in lines[0]
    assert [line.split()[0] for line in lines[2:]] == list(by)
