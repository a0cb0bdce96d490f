"""The tiny generated dataset, made once for all the search tests of this folder."""

import pytest

from search_helpers import make_tiny_data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("search-data"))
