"""The library's version (reported by ``recsys_emb.__version__`` and ``recsys-emb --version``, recorded in
every run)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
