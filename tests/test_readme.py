"""The README's examples run as written."""

import re
from pathlib import Path

import yaml

from recsys_emb.spec_io import specs_from_dicts

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_example_runs(capsys):
    (code,) = blocks("python")
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "MiB" in out and "torch.Size([2, 48])" in out


def test_yaml_example_loads():
    (text,) = blocks("yaml")
    specs = specs_from_dicts(yaml.safe_load(text)["features"])
    assert [s.name for s in specs] == ["C1", "C3", "C4"]
