"""Shared fixtures: quiet TorchRec logging, a one-process gloo group for fused (DMP) tests."""

import logging
import warnings

import pytest

logging.getLogger("torchrec").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="session")
def single_process_group():
    from recsys_emb.sharding import init_single_process_group

    init_single_process_group()
    yield
