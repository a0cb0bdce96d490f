"""Small generated datasets for the tests, processed the way a run prepares its data."""

from pathlib import Path

from recsys_emb.config import config_from_dict
from recsys_emb.training import prepare_data


def criteo_like_dir(parent: Path, rows: int, seed: int = 0, scale: float = 0.001) -> Path:
    """``parent / "cl"``: ``rows`` generated Criteo-like rows (cardinality ``scale``), split and processed."""
    path = parent / "cl"
    prepare_data(config_from_dict({"data": {"path": str(path), "generate": {
        "kind": "criteo-like", "rows": rows, "scale": scale, "seed": seed}}}))
    return path
