"""The report's figure, and a report without matplotlib (the [plot] extra not installed): no figure, a warning
that says how to get one, and the rest of the report unaffected."""

import logging
import sys
from pathlib import Path

import optuna

from recsys_emb.search.config import load_search_config
from recsys_emb.search.plot import plot_study
from search_helpers import C0, C3, figure_panels

ROOT = Path(__file__).resolve().parents[2]


def _study():
    study = optuna.create_study(direction="maximize", study_name="plots")
    for auc, n_bytes in [(0.70, 4000), (0.72, 9000)]:
        study.add_trial(optuna.trial.create_trial(value=auc, user_attrs={"bytes": n_bytes}))
    return study


def test_figure_is_drawn(tmp_path):
    cfg = load_search_config(ROOT / "configs" / "search_dlrm_criteo_like.yaml")
    path = plot_study(_study(), cfg, tmp_path)
    assert Path(path) == tmp_path / "history.png"
    # 11 x 4.2 inches at 110 dpi; the history panel shows the trials' points and the best-so-far line, the
    # bytes panel the Pareto front
    size, (history, by_bytes) = figure_panels(path, 2)
    assert size == (462, 1210)
    assert {C0, C3} <= history and C3 in by_bytes


def test_without_matplotlib_no_figure_and_the_install_command(tmp_path, monkeypatch, caplog):
    cfg = load_search_config(ROOT / "configs" / "search_dlrm_criteo_like.yaml")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is not installed
    with caplog.at_level(logging.WARNING, logger="recsys_emb.search.plot"):
        assert plot_study(_study(), cfg, tmp_path) is None
    assert "matplotlib is not installed (pip install 'recsys_emb[plot]')" in caplog.text
    assert not list(tmp_path.iterdir())
