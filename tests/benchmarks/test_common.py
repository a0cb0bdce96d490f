"""What the benchmarks share: README blocks, command lines, interleaved timing (call order only, never a
duration), and the Criteo-shaped workload."""

import logging
import sys

import pytest
import torch

from recsys_emb.benchmarks.common import (command_line, criteo_shaped_cardinalities, interleaved_seconds, publish,
                                         quiet, size_groups, skewed_batch, variant_specs, write_section)
from recsys_emb.data.criteo import CRITEO_KAGGLE_CARDINALITIES
from recsys_emb.memory import memory_from_specs
from recsys_emb.presets import VARIANTS


def test_write_section_replaces_only_its_own_block(tmp_path):
    readme = tmp_path / "docs" / "README.md"
    write_section(readme, "a", "first a", "## A")  # created, with its title, when missing
    readme.write_text("# Doc\n\nintro\n\n" + readme.read_text() + "\n## Other\n\nkept\n")
    write_section(readme, "b", "first b", "## B")  # appended at the end
    write_section(readme, "a", "second a\n\n", "## A (unused: the block exists)")
    text = readme.read_text()
    assert text.count("<!-- a:begin -->") == 1 and "second a\n<!-- a:end -->" in text and "first a" not in text
    assert text.startswith("# Doc\n\nintro\n\n## A\n\n<!-- a:begin -->") and "(unused" not in text
    assert text.index("kept") < text.index("## B") and text.endswith("<!-- b:begin -->\nfirst b\n<!-- b:end -->\n")


def test_write_section_appends_when_the_markers_are_out_of_order(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- a:end -->\n<!-- a:begin -->\n")
    write_section(readme, "a", "body", "## A")
    assert readme.read_text().endswith("## A\n\n<!-- a:begin -->\nbody\n<!-- a:end -->\n")


def test_publish_returns_the_text_and_writes_only_with_a_readme(tmp_path):
    assert publish("table", None, "x", "## X") == "table"
    assert list(tmp_path.iterdir()) == []
    assert publish("table", tmp_path / "R.md", "x", "## X") == "table"
    assert "<!-- x:begin -->\ntable\n<!-- x:end -->" in (tmp_path / "R.md").read_text()


def test_command_line_quotes_arguments_and_defaults_to_this_process(monkeypatch):
    assert command_line("bench/x.py", ["--set", "data.generate={kind: a}", "--quick"]) == \
        ".venv/bin/python bench/x.py --set 'data.generate={kind: a}' --quick"
    assert command_line("bench/x.py", []) == ".venv/bin/python bench/x.py"
    monkeypatch.setattr(sys, "argv", ["bench/x.py", "--rows", "5"])
    assert command_line("bench/x.py", None) == ".venv/bin/python bench/x.py --rows 5"


def test_interleaved_seconds_warms_up_then_runs_rounds_in_turn():
    calls, syncs = [], []
    secs = interleaved_seconds([lambda i: calls.append(("a", i)), lambda i: calls.append(("b", i))], steps=2, rounds=3,
                               warmup=2, sync=lambda: syncs.append(len(calls)))
    assert calls[:4] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]  # warm-up, run by run
    assert calls[4:] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)] * 3  # each round: every run in turn
    assert len(syncs) == 1 + 2 * 2 * 3  # after warm-up, around every timed round
    assert len(secs) == 2 and all(s >= 0 for s in secs)


def test_cardinalities_are_criteo_kaggles_capped():
    cards = criteo_shaped_cardinalities(50_000)
    assert cards == [min(c, 50_000) for c in CRITEO_KAGGLE_CARDINALITIES] and len(cards) == 26
    assert 50_000 in cards and min(cards) < 50_000


def test_skewed_batch_is_one_id_per_field_in_range_skewed_and_seeded():
    cards = [7, 1000, 100_000]
    kjt = skewed_batch(cards, 4096, torch.Generator().manual_seed(3))
    again = skewed_batch(cards, 4096, torch.Generator().manual_seed(3))
    assert torch.equal(kjt.values(), again.values())
    assert kjt.keys() == ["C1", "C2", "C3"] and kjt.stride() == 4096 and bool((kjt.lengths() == 1).all())
    for c, ids in zip(cards, kjt.values().split(4096)):
        assert 0 <= int(ids.min()) and int(ids.max()) < c
    big = kjt.values()[2 * 4096:].double()
    assert float(big.median()) < 100_000 / 4  # u**3 puts half the ids below N/8


def test_variant_specs_keep_about_one_over_compression_of_the_bytes():
    cards = criteo_shaped_cardinalities(100_000)
    specs = variant_specs(cards, dim=16, compression=4)
    assert list(specs) == list(VARIANTS)
    full = memory_from_specs(specs["full"]).bytes
    assert full == 4 * 16 * sum(cards)
    for v in ("hashed", "multi_hash", "qr", "unified"):
        share = memory_from_specs(specs[v]).bytes / full
        assert 0.2 < share < 0.3, (v, share)  # 1/4 of the large fields, the fields under 64 ids whole
    assert all(s.output_dim == 16 for v in specs for s in specs[v])


def test_size_groups_are_decades_of_vocabulary_size():
    groups = size_groups({"a": 1, "b": 99, "c": 100, "d": 9_999, "e": 10_000, "f": 10**8})
    assert groups == {"vocab_1e2": ["a", "b"], "vocab_1e3": ["c"], "vocab_1e4": ["d"], "vocab_1e5": ["e", "f"]}


@pytest.fixture
def restore_logging():
    loggers = [logging.getLogger(), logging.getLogger("recsys_emb.benchmarks"), logging.getLogger("torchrec")]
    saved = [(log.handlers[:], log.level, log.propagate) for log in loggers]
    yield
    for log, (handlers, level, propagate) in zip(loggers, saved):
        log.handlers, log.propagate = handlers, propagate
        log.setLevel(level)


def test_quiet_shows_the_benchmarks_progress_once_as_plain_lines(restore_logging, capsys):
    quiet()
    quiet()  # idempotent: one handler
    logging.getLogger("recsys_emb.benchmarks.quality.runs").info("full @ 1/4: test AUC 0.7000")
    logging.getLogger("recsys_emb.training").info("not shown")
    assert capsys.readouterr().err == "full @ 1/4: test AUC 0.7000\n"
