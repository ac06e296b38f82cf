"""Shared fixtures: paths to the shared MovieLens data (tests skip when it is absent) and a throw-away state folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.data.demo_catalog import generate_demo_catalog
from models.data.tables import save_dataset
from models.settings import PROJECT_ROOT, Settings

ADMIN_TOKEN = "test-admin-token"
"""The admin token of every service the tests start (set before serving.service is imported: it reads it then)."""
os.environ["RECSYS_ADMIN_TOKEN"] = ADMIN_TOKEN
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

MOVIELENS_SMALL = Path(
    os.environ.get("RECSYS_MOVIELENS_DIR", PROJECT_ROOT.parent / "shared" / "data" / "ml-latest-small")
)


@pytest.fixture(autouse=True)
def numpy_default_error_state() -> Iterator[None]:
    """Every test starts with numpy's default floating-point error handling: a library or test that sets
    ``np.seterr(...='raise')`` for the process once made a later contract test fail on a NaN it coerces (seen in a
    fresh-clone run: ``FloatingPointError`` inside ``pd.to_datetime``, passing when run alone)."""
    with np.errstate(divide="warn", over="warn", under="ignore", invalid="warn"):
        yield


@pytest.fixture
def movielens_small() -> Path:
    if not (MOVIELENS_SMALL / "ratings.csv").exists():
        pytest.skip(f"MovieLens ml-latest-small not found at {MOVIELENS_SMALL}")
    return MOVIELENS_SMALL


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose state folder is a fresh temporary directory."""
    return Settings(state_dir=tmp_path / "state")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect server and database for every test that runs a flow."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def small_settings(state: Path, **overrides: Any) -> Settings:
    """Settings for a small demo catalog that the whole pipeline runs on in about a minute."""
    values: dict[str, Any] = {
        "state_dir": state, "demo_items": 1500, "demo_users": 400, "demo_interactions": 20_000,
        "candidates_k": 200, "k_sweep": (50, 200), "eval_max_users": 200, "train_max_users": 400,
        "als_iterations": 8, "als_factors": 16, "ranker_rounds": 60, "ranker_folds": 2, "reload_interval_seconds": 0.5,
        "build_bento": False, "tuning_trials": 2, "tuning_max_users": 200, "item_item_neighbours": 200,
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def small_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A small demo dataset saved under a session-wide state folder (flows share its embedding cache)."""
    settings = small_settings(tmp_path_factory.mktemp("state"))
    dataset = generate_demo_catalog(settings.demo_items, settings.demo_users, settings.demo_interactions, seed=3)
    # seed 3, not the settings' seed: flow tests run on data no pipeline run regenerates
    return settings, save_dataset(dataset, settings.dataset_dir("demo"))


@pytest.fixture(scope="session")
def published(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any]]:
    """The whole pipeline run once on the small demo catalog, in its own state folder: (settings, summary).

    RECSYS_TEST_PUBLISHED_STATE=<folder> keeps that state between sessions (a developer's shortcut while iterating on
    serving code: the pipeline runs only when the folder has no summary yet); CI never sets it. Each heavy step runs
    in a process of its own (RECSYS_TASK_PROCESSES, the 1 M build's path); the other pipeline tests take the default,
    one process."""
    from flows.pipeline import pipeline_flow
    from flows.runtime import TASK_PROCESSES_VARIABLE

    kept = os.environ.get("RECSYS_TEST_PUBLISHED_STATE")
    state = Path(kept) if kept else tmp_path_factory.mktemp("published-state")
    summary_file = state / "published-summary.json"
    code = pipeline_code()
    if kept and summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if summary.get("pipeline_code") == code:
            return small_settings(state).for_dataset("demo"), summary
        shutil.rmtree(state)  # built by other library, feature or flow code: build it again
    settings = small_settings(state)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TASK_PROCESSES_VARIABLE, "true")
        summary = {**pipeline_flow("demo", None, settings), "pipeline_code": code}
    summary_file.write_text(json.dumps(summary, default=str))
    return settings.for_dataset("demo"), summary


def pipeline_code() -> str:
    """A digest of everything a published version depends on: the library, the feature repository, the flows."""
    digest = hashlib.sha256()
    files = [file for folder in ("models", "feature_repo", "flows") for file in PROJECT_ROOT.glob(f"{folder}/**/*.py")]
    for file in sorted(files):
        digest.update(file.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real redis-server on a free port (.ci/run installs it; skipped where it is not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield f"127.0.0.1:{port}", process
    process.terminate()
    process.wait(timeout=10)
