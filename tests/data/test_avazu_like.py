"""The Avazu-shaped generator: Avazu's header and value formats, one true probability per row, labels drawn
from them, the same file for the same seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_emb.data.avazu_like import AVAZU_COLUMNS, generate_avazu_like


def test_avazu_shape_and_known_probabilities(tmp_path):
    g = generate_avazu_like(tmp_path / "a", rows=3000, seed=3)
    assert g.csv.read_text().splitlines()[0] == ",".join(AVAZU_COLUMNS) and len(AVAZU_COLUMNS) == 24
    df = pd.read_csv(g.csv, dtype=str)
    assert len(df) == 3000 and list(df.columns) == AVAZU_COLUMNS
    assert df["site_id"].str.fullmatch(r"[0-9a-f]{8}").all() and df["banner_pos"].str.fullmatch(r"\d+").all()
    hours = df["hour"].astype(int)
    assert hours.is_monotonic_increasing and hours.iloc[0] == 14102100 and hours.iloc[-1] // 100 == 141030
    p = np.load(g.true_prob)
    click = df["click"].astype(int).to_numpy()
    assert p.shape == (3000,) and 0.13 < p.mean() < 0.21
    assert abs(click.mean() - p.mean()) < 0.03  # labels drawn from the planted probabilities
    assert click[p > np.quantile(p, 0.8)].mean() > 2 * click[p < np.quantile(p, 0.2)].mean()
    again = generate_avazu_like(tmp_path / "b", rows=3000, seed=3, gzip=True)
    import gzip

    assert gzip.decompress(again.csv.read_bytes()) == g.csv.read_bytes()
