"""Doctest fixtures of the library's examples (``--doctest-modules`` over recsys_emb/): ``tmp``, a fresh
temporary directory for every example that writes files (pytest removes it), and a clean skip of the
examples that need MovieLens when it is absent. Kept at the repository root, out of the installed package."""

from __future__ import annotations

import pytest

_NEEDS_MOVIELENS = ("recsys_emb.data.movielens.build_movielens_ctr", "recsys_emb.data.movielens.prepare_movielens")


@pytest.fixture(autouse=True)
def _doctest_tmp(request):
    if not isinstance(request.node, pytest.DoctestItem):
        return
    if request.node.name in _NEEDS_MOVIELENS:
        from recsys_emb.data.movielens import ENV_VAR, default_movielens_dir

        if not (default_movielens_dir() / "ratings.csv").is_file():
            pytest.skip(f"MovieLens ml-latest-small not found at {default_movielens_dir()} (set {ENV_VAR})")
    request.getfixturevalue("doctest_namespace")["tmp"] = request.getfixturevalue("tmp_path")
