"""Shared fixtures: quiet TorchRec logging, a one-process gloo group for fused (DMP) tests; one thread per
test process."""

import logging
import os
import sys
import warnings

import pytest

# One intra-op thread per process. The suite runs one pytest process per core (pytest-xdist) and many tests
# start processes of their own (which inherit this); with torch's default of a thread per core in every
# process the OpenMP threads oversubscribe the cores: on 2 cores the suite took 724 s, with one thread
# 436 s. An OMP_NUM_THREADS already set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (by a plugin): the variable came too late for it
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

logging.getLogger("torchrec").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="session")
def single_process_group():
    from recsys_emb.sharding import init_single_process_group

    init_single_process_group()
    yield
