"""Doctest fixtures of the data package: ``tmp``, a fresh temporary directory for every example that writes
files (pytest removes it)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctest_tmp(doctest_namespace, tmp_path):
    doctest_namespace["tmp"] = tmp_path
