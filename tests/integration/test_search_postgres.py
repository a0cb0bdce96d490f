"""Two search workers on a PostgreSQL storage (what many machines share).

The server: ``RECSYS_EMB_TEST_POSTGRES_URL`` (``.ci/run`` starts one with ``.ci/postgres.sh``); when it is
unset the test starts its own with the same script, and skips if that is impossible -- except under CI
(``CI=true``), where a missing PostgreSQL fails the test.
"""

import os
import subprocess
import uuid

import pytest

from search_helpers import REPO, trained_trials, write_configs
from test_search_workers import check_two_workers_share, tiny_data  # noqa: F401 (fixture)
from waiting import HANG_GUARD_S

SCRIPT = REPO / ".ci" / "postgres.sh"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"no PostgreSQL: {reason} (set RECSYS_EMB_TEST_POSTGRES_URL or run .ci/postgres.sh start)")


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get("RECSYS_EMB_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("the psycopg2 driver is not installed (pip install -r requirements.txt)")
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0 or "RECSYS_EMB_TEST_POSTGRES_URL" not in values:
        _unavailable(f".ci/postgres.sh start failed: {proc.stderr.strip()[-1500:]}")
    try:
        yield values["RECSYS_EMB_TEST_POSTGRES_URL"]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", values["RECSYS_EMB_TEST_POSTGRES_DIR"]], capture_output=True,
                       timeout=HANG_GUARD_S)


def test_two_workers_share_a_postgres_study(tiny_data, tmp_path, postgres_url):
    config = write_configs(tmp_path, tiny_data, budget_bytes=10**9, train_overrides=["train.max_steps=60"],
                           pruner={"kind": "none"}, seed=None)
    study_name = f"pg-{uuid.uuid4().hex[:8]}"  # the server may outlive this test (CI's, or a developer's)
    study = check_two_workers_share(config, postgres_url, study_name, n_trials=4, tmp_path=tmp_path)
    assert (tmp_path / "runs" / study_name / "best.yaml").exists()
    assert len(trained_trials(study)) == 4
