"""One Prefect test harness (temporary server and database) for all flow tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.data_io import save_dataset
from models.demo_catalog import generate_demo_catalog
from models.settings import Settings


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def small_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A small demo dataset saved under a session-wide state folder (flows share its embedding cache)."""
    state = tmp_path_factory.mktemp("state")
    settings = Settings(
        state_dir=state, demo_items=1500, demo_users=400, demo_interactions=20_000, candidates_k=200,
        eval_max_users=200, als_iterations=8, als_factors=16,
    )  # fmt: skip
    dataset = generate_demo_catalog(settings.demo_items, settings.demo_users, settings.demo_interactions, seed=3)
    return settings, save_dataset(dataset, settings.dataset_dir("demo"))
